"""The cluster wire protocol: versioned JSON messages, validated before use.

Every frame is one JSON object ``{"v": 6, "type": ..., ...}`` of at most
MAX_MESSAGE bytes, built by one ``*_to_wire`` function per message type and
read by its ``*_from_wire`` (docs/cluster.md lists them all). ``decode``
parses a frame against the shape of every message (a msgspec Struct each,
below): the parser validates as it reads, so an array where an object
belongs, a field nested where none is, an unknown field or a lone
surrogate is refused where it starts, and no frame's depth reaches the
interpreter's recursion limit. Parsing is strict: an unknown type, a
missing or unknown field, a wrong type, a number
out of its range, a string or list longer than its cap, an oversize frame,
a task naming a codec this node does not have, a relative or hostile path,
or an output whose extension does not match its codec raises ProtocolError,
and the message is dropped (and counted) without anything being started.
Never pickle: a peer's bytes are data, not code. The envelope, paths and a
peer's free text are in ``wire``, the job and settings messages in ``jobs``,
the shape of every message and ``decode`` in ``shapes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flac2all.audio.loudness import Loudness
from flac2all.cluster import jobs
from flac2all.cluster.shapes import (  # "X as X": what the protocol's users read here
    CAUSES as CAUSES,
)
from flac2all.cluster.shapes import (
    ENCODER_MISSING as ENCODER_MISSING,
)
from flac2all.cluster.shapes import (
    ENVIRONMENT as ENVIRONMENT,
)
from flac2all.cluster.shapes import (
    MAX_PROGRAMS,
    MAX_RESULT_MESSAGE,
    MAX_SYSTEM,
    MAX_VERSION,
)
from flac2all.cluster.shapes import (
    MAX_SLOTS as MAX_SLOTS,
)
from flac2all.cluster.shapes import (
    OUTPUT_UNWRITABLE as OUTPUT_UNWRITABLE,
)
from flac2all.cluster.shapes import (
    SOURCE_MISSING as SOURCE_MISSING,
)
from flac2all.cluster.shapes import (
    decode as decode,
)
from flac2all.cluster.wire import (
    MAX_MESSAGE as MAX_MESSAGE,
)
from flac2all.cluster.wire import (  # the envelope is part of the protocol's face: "X as X" re-exports
    MAX_SIZE,
    ProtocolError,
    bounded_int,
    check_path,
    encode,
    fields,
    option_words,
    path_to_wire,
    printable,
    seconds,
    text,
)
from flac2all.cluster.wire import (
    VERSION as VERSION,
)
from flac2all.errors import UsageError
from flac2all.model import Settings, SourceFacts, Status, Task, TaskResult

# --- messages without a body ------------------------------------------------


def heartbeat_to_wire() -> bytes:
    """Both ways, every heartbeat interval (any message counts as one)."""
    return encode("heartbeat")


def bye_to_wire() -> bytes:
    """Worker -> master: leaving; the master requeues what it still holds."""
    return encode("bye")


def shutdown_to_wire() -> bytes:
    """Master -> worker: the run is over; stop the encoders and say bye."""
    return encode("shutdown")


def reset_to_wire() -> bytes:
    """Master -> worker: this session is unknown here; start a new one."""
    return encode("reset")


def bare_from_wire(msg: dict) -> None:
    """A heartbeat, bye, shutdown or reset: nothing but the envelope, which
    ``decode`` checked."""


def is_bye(frame: bytes) -> bool:
    """Whether a frame is a valid bye (for the master's last moments)."""
    try:
        msg = decode(frame)
        bare_from_wire(msg)
    except ProtocolError:
        return False
    return msg["type"] == "bye"


# --- joining: hello, welcome (with the master's timings), ready --------------

HEARTBEAT = 1.0  # seconds between heartbeats, both ways
DEAD_AFTER = 4.0  # a peer silent this long is dead: detection in 4-5 s
HEARTBEAT_RANGE = (0.05, 60.0)
MAX_DEAD_AFTER = 600.0


@dataclass(frozen=True)
class Timings:
    """How often peers beat and how long a silent one is given: the master
    sends its own in the welcome; a worker uses these defaults until then."""

    heartbeat: float = HEARTBEAT
    dead_after: float = DEAD_AFTER


@dataclass(frozen=True)
class Hello:
    session: str
    host: str
    pid: int
    slots: int


@dataclass(frozen=True)
class Checks:
    """What a worker checks before it takes work (health before work): a
    few sources the master sees (path, size), which a worker with the same
    view of the files sees too (a missing mount usually leaves an empty
    folder, which is readable), a file the master wrote in the output
    folder, and the master's version line of each of the run's programs
    (the settings hashes it records are made of them)."""

    sources: tuple[tuple[Path, int], ...] = ()
    probe: Path | None = None
    versions: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Welcome:
    settings: Settings
    timings: Timings
    checks: Checks = Checks()


@dataclass(frozen=True)
class Health:
    """A worker's answer to the checks: what is wrong ("" if nothing),
    which of the run's modes it can run, and why it cannot run the others
    (mode, why)."""

    problem: str
    modes: tuple[str, ...]
    lacks: tuple[tuple[str, str], ...] = ()
    system: str = ""
    versions: tuple[tuple[str, str], ...] = ()


def hello_to_wire(session: str, host: str, pid: int, slots: int) -> bytes:
    """Worker -> master, first on every new connection."""
    return encode("hello", session=session, host=printable(host), pid=pid, slots=slots)


def hello_from_wire(msg: dict) -> Hello:
    if not msg["host"].isprintable():
        raise ProtocolError("bad host name (control characters, or not printable)")
    return Hello(msg["session"], msg["host"], msg["pid"], msg["slots"])


MAX_CHECKED_SOURCES = 8


def welcome_to_wire(settings_wire: dict, timings: Timings, checks: Checks = Checks()) -> bytes:
    """Master -> worker, the answer to hello: the run's settings (as
    settings_to_wire made them, once per run), the master's timings and
    what to check before taking work."""
    return encode(
        "welcome",
        settings=settings_wire,
        heartbeat=timings.heartbeat,
        dead_after=timings.dead_after,
        checks={
            "sources": [[path_to_wire(path), size] for path, size in checks.sources],
            "probe": path_to_wire(checks.probe) if checks.probe is not None else "",
            "versions": dict(checks.versions),
        },
    )


def welcome_from_wire(msg: dict) -> Welcome:
    fields(msg, {"settings": dict, "heartbeat": (int, float), "dead_after": (int, float), "checks": dict})
    heartbeat = seconds(msg["heartbeat"], "heartbeat", *HEARTBEAT_RANGE)
    dead_after = seconds(msg["dead_after"], "dead_after", heartbeat, MAX_DEAD_AFTER)
    if dead_after <= heartbeat:
        raise ProtocolError("dead_after: not longer than the heartbeat")
    settings = jobs.settings_from_wire(msg["settings"])
    return Welcome(settings, Timings(heartbeat, dead_after), checks_from_wire(msg["checks"], settings))


def checks_from_wire(body: dict, settings: Settings) -> Checks:
    fields(body, {"sources": list, "probe": str}, {"versions": dict})
    if len(body["sources"]) > MAX_CHECKED_SOURCES:
        raise ProtocolError("checks: too many sources")
    sources = []
    for item in body["sources"]:
        if not isinstance(item, list) or len(item) != 2:
            raise ProtocolError("checks: a source is not [path, size]")
        path = check_path(item[0], "checked source")
        if not path.is_relative_to(settings.input_dir):
            raise ProtocolError("checks: a source outside the run's input folder")
        sources.append((path, bounded_int(item[1], "checked size", 0, MAX_SIZE)))
    probe = None
    if body["probe"]:
        probe = check_path(body["probe"], "probe")
        if probe.parent != settings.outdir:
            raise ProtocolError("checks: the probe file is not in the run's output folder")
    return Checks(tuple(sources), probe, versions_from_wire(body.get("versions", {})))


def versions_from_wire(body: dict) -> tuple[tuple[str, str], ...]:
    """The master's program -> version line (bounded by ``Versions`` as it
    was parsed), printable."""
    return tuple((program, printable(line)) for program, line in body.items())


MAX_PROBLEM = 1000


def health_to_wire(
    problem: str,
    modes: list[str],
    lacks: dict[str, str] | None = None,
    system: str = "",
    versions: dict[str, str] | None = None,
) -> bytes:
    """Worker -> master, once after the welcome and before its first ready:
    what is wrong with this node for this run ("" if nothing), which of
    the run's modes it can run, and why not the others (mode -> why); what
    it runs on and its encoders' versions (program -> version)."""
    why = {mode: printable(line)[:MAX_PROBLEM] for mode, line in (lacks or {}).items()}
    own = {program: printable(line)[:MAX_VERSION] for program, line in (versions or {}).items()}
    return encode(
        "health",
        problem=printable(problem)[:MAX_PROBLEM],
        modes=modes,
        lacks=why,
        system=printable(system)[:MAX_SYSTEM],
        versions=dict(list(own.items())[:MAX_PROGRAMS]),
    )


def health_from_wire(msg: dict, run_modes: tuple[str, ...]) -> Health:
    fields(msg, {"problem": str, "modes": list}, {"lacks": dict, "system": str, "versions": dict})
    problem = printable(text(msg["problem"], "problem", MAX_PROBLEM))
    if len(msg["modes"]) > len(run_modes) or not all(m in run_modes for m in msg["modes"]):
        raise ProtocolError("health: modes that are not the run's")
    lacks = msg.get("lacks", {})
    if not all(m in run_modes for m in lacks):
        raise ProtocolError("health: modes that are not the run's")
    why = tuple((mode, printable(text(line, "lacks", MAX_PROBLEM))) for mode, line in lacks.items())
    system = printable(msg.get("system", ""))
    return Health(problem, tuple(dict.fromkeys(msg["modes"])), why, system, versions_from_wire(msg.get("versions", {})))


def ready_to_wire(credit: int) -> bytes:
    """Worker -> master: how many jobs it may be sent now (its free slots)."""
    return encode("ready", credit=credit)


def ready_from_wire(msg: dict) -> int:
    return msg["credit"]


# --- results -----------------------------------------------------------------


def result_to_wire(task_id: int, attempt: int, result: TaskResult) -> bytes:
    """Worker -> master, one per task of a job; a job's last frees its slot."""
    facts = result.facts
    return encode(
        "result",
        id=task_id,
        attempt=attempt,
        status=result.status.value,
        message=printable(result.message)[:MAX_RESULT_MESSAGE],
        returncode=result.returncode,
        elapsed=result.elapsed,
        cause=result.cause if result.cause in CAUSES else "",
        facts=None
        if facts is None
        else [facts.size, facts.mtime_ns, facts.audio_md5, facts.tags_hash, facts.pictures_hash],
        loudness=None if result.loudness is None else result.loudness.to_wire(),
    )


def refusals_to_wire(
    msg: dict | None, host: str, why: str, cause: str = "", ids: list[tuple[int, int]] | None = None
) -> list[bytes]:
    """Failed results for the tasks of a job a worker will not run (a codec
    it lacks, a path outside the run), as far as the message says which
    tasks they were (or for the (id, attempt) pairs ``ids``: one copy of a
    batch): so that the master does not wait for them forever."""
    message = printable(f"refused by the worker on {host}: {why}")[:MAX_RESULT_MESSAGE]
    return [
        encode(
            "result",
            id=task_id,
            attempt=attempt,
            status=Status.FAILED.value,
            returncode=1,
            elapsed=0.0,
            facts=None,
            message=message,
            cause=cause,
        )
        for task_id, attempt in (ids if ids is not None else jobs.job_ids(msg or {}))
    ]


@dataclass(frozen=True)
class WireResult:
    task_id: int
    attempt: int
    status: Status
    message: str
    returncode: int
    elapsed: float
    facts: SourceFacts | None
    cause: str = ""
    loudness: Loudness | None = None

    def to_result(self, task: Task, host: str = "") -> TaskResult:
        return TaskResult(
            task,
            self.status,
            self.message,
            self.returncode,
            self.elapsed,
            self.facts,
            cause=self.cause,
            host=host,
            loudness=self.loudness,
        )


def result_from_wire(msg: dict) -> WireResult:
    facts = None if msg["facts"] is None else SourceFacts(*msg["facts"])
    return WireResult(
        msg["id"],
        msg["attempt"],
        Status(msg["status"]),
        printable(msg["message"]),
        msg["returncode"],
        msg["elapsed"],
        facts,
        msg["cause"],
        loudness_from_wire(msg.get("loudness")),
    )


def loudness_from_wire(value: dict | None) -> Loudness | None:
    try:
        return None if value is None else Loudness.from_wire(value)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None


def check_usage_options(options: dict[str, tuple[str, ...]]) -> None:
    """For the master's CLI: refuse, before any work, options a worker would."""
    for family, words in options.items():
        try:
            option_words(family, words)
        except ProtocolError as exc:
            raise UsageError(f"in cluster mode, {exc}") from None
