"""The cluster wire protocol: versioned JSON messages, validated before use.

Every frame is one JSON object ``{"v": 2, "type": ..., ...}`` of at most
MAX_MESSAGE bytes, built by one ``*_to_wire`` function per message type and
read by its ``*_from_wire`` (docs/cluster.md lists them all). Parsing is
strict: an unknown type, a missing or unknown field, a wrong type, a number
out of its range, an oversize frame, a task naming a codec this node does
not have, a relative or hostile path, or an output whose extension does not
match its codec raises ProtocolError, and the message is dropped (and
counted) without anything being started. Never pickle: a peer's bytes are
data, not code. The envelope and the field checks are in ``wire``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flac2all import codecs
from flac2all.cluster.wire import (  # the envelope is part of the protocol's face: "X as X" re-exports
    HEX,
    ProtocolError,
    check_options,
    check_path,
    decode,
    encode,
    fields,
    is_a,
    seconds,
)
from flac2all.cluster.wire import (
    MAX_MESSAGE as MAX_MESSAGE,
)
from flac2all.cluster.wire import (
    VERSION as VERSION,
)
from flac2all.errors import Flac2allError, UsageError
from flac2all.model import Action, Layout, Settings, SourceFacts, Status, Task, TaskResult

# Actions a worker may be asked to run: the master does the rest itself.
WORKER_ACTIONS = tuple(a for a in Action if a.on_executor)
# The families a settings message may carry options for: this node's own.
OPTION_FAMILIES = tuple(codecs.OPTION_FAMILIES)


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
    """Check a heartbeat, bye, shutdown or reset: nothing but the envelope."""
    fields(msg, {})


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
MAX_SLOTS = 1024


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
class Welcome:
    settings: Settings
    timings: Timings


def hello_to_wire(session: str, host: str, pid: int, slots: int) -> bytes:
    """Worker -> master, first on every new connection."""
    return encode("hello", session=session, host=host, pid=pid, slots=slots)


def hello_from_wire(msg: dict) -> Hello:
    fields(msg, {"session": str, "host": str, "pid": int, "slots": int})
    if not re.fullmatch(r"[0-9a-f]{32}", msg["session"]) or not 1 <= msg["slots"] <= MAX_SLOTS:
        raise ProtocolError("bad hello")
    if not 0 < msg["pid"] < 2**32:
        raise ProtocolError("bad pid")
    if len(msg["host"]) > 255 or any(c in msg["host"] for c in "\x00\n\r"):
        raise ProtocolError("bad host name")
    return Hello(msg["session"], msg["host"], msg["pid"], msg["slots"])


def welcome_to_wire(settings_wire: dict, timings: Timings) -> bytes:
    """Master -> worker, the answer to hello: the run's settings (as
    settings_to_wire made them, once per run) and the master's timings."""
    return encode("welcome", settings=settings_wire, heartbeat=timings.heartbeat, dead_after=timings.dead_after)


def welcome_from_wire(msg: dict) -> Welcome:
    fields(msg, {"settings": dict, "heartbeat": (int, float), "dead_after": (int, float)})
    heartbeat = seconds(msg["heartbeat"], "heartbeat", *HEARTBEAT_RANGE)
    dead_after = seconds(msg["dead_after"], "dead_after", heartbeat, MAX_DEAD_AFTER)
    if dead_after <= heartbeat:
        raise ProtocolError("dead_after: not longer than the heartbeat")
    return Welcome(settings_from_wire(msg["settings"]), Timings(heartbeat, dead_after))


def ready_to_wire(credit: int) -> bytes:
    """Worker -> master: how many jobs it may be sent now (its free slots)."""
    return encode("ready", credit=credit)


def ready_from_wire(msg: dict) -> int:
    fields(msg, {"credit": int})
    if not 0 <= msg["credit"] <= MAX_SLOTS:
        raise ProtocolError("bad credit")
    return msg["credit"]


# --- jobs: one task, or the encodes of one source sharing its decoder --------

# A job holds at most this many tasks (the modes of one source).
MAX_JOB = 32
WireTask = tuple[int, int, Task]  # (task id, attempt, task)


def job_to_wire(job: list[WireTask]) -> bytes:
    """One job message: the source, action and size once, then per task its
    id, attempt, mode, output and settings hash."""
    first = job[0][2]
    return encode(
        "job",
        source=os.fsdecode(first.source),
        action=first.action.value,
        size=first.size,
        tasks=[
            {
                "id": task_id,
                "attempt": attempt,
                "mode": task.mode,
                "output": os.fsdecode(task.output),
                "settings_hash": task.settings_hash,
            }
            for task_id, attempt, task in job
        ],
    )


def job_ids(msg: dict) -> list[tuple[int, int]]:
    """The (id, attempt) pairs a job message names, as far as they can be
    read (to refuse them)."""
    tasks = msg.get("tasks")
    if msg.get("type") != "job" or not isinstance(tasks, list):
        return []
    return [
        (t["id"], t["attempt"])
        for t in tasks
        if isinstance(t, dict) and is_a(t.get("id"), int) and is_a(t.get("attempt"), int)
    ]


def job_from_wire(msg: dict, settings: Settings | None = None) -> list[WireTask]:
    """Validate a job message against this node's own codec table and, on
    a worker, the session's folders: a source inside the input folder,
    outputs inside the output folder, nothing else. A job of several tasks
    must be encodes of modes that share a decoder, to distinct outputs."""
    fields(msg, {"source": str, "action": str, "size": int, "tasks": list})
    try:
        action = Action(msg["action"])
    except ValueError:
        raise ProtocolError("unknown action") from None
    if action not in WORKER_ACTIONS:
        raise ProtocolError(f"action {action.value} is not run by workers")
    source = check_path(msg["source"], "source")
    if settings is not None and not source.is_relative_to(settings.input_dir):
        raise ProtocolError("a source outside the run's input folder")
    if msg["size"] < 0 or not 1 <= len(msg["tasks"]) <= MAX_JOB:
        raise ProtocolError("bad job size or task count")
    if len(msg["tasks"]) > 1 and action is not Action.ENCODE:
        raise ProtocolError("only encodes share a job")
    job = [task_from_wire(body, source, action, msg["size"], settings) for body in msg["tasks"]]
    if len(job) > 1:
        if len({task.output for _, _, task in job}) < len(job) or len({i for i, _, _ in job}) < len(job):
            raise ProtocolError("a job names an output or a task id twice")
        if not all(codecs.resolve(task.mode).reads_pcm for _, _, task in job):
            raise ProtocolError("a mode that cannot share the decoder in a job of several")
    return job


def task_from_wire(body: Any, source: Path, action: Action, size: int, settings: Settings | None) -> WireTask:
    if not isinstance(body, dict):
        raise ProtocolError("a task is not an object")
    fields(body, {"id": int, "attempt": int, "mode": str, "output": str, "settings_hash": str})
    try:
        codec = codecs.resolve(body["mode"])
    except Flac2allError:
        raise ProtocolError(f"unknown codec {body['mode']!r}") from None
    output = check_path(body["output"], "output")
    if output == source:
        raise ProtocolError("output is the source")
    if settings is not None and not output.is_relative_to(settings.outdir):
        raise ProtocolError("an output outside the run's output folder")
    if action is Action.COPY:
        if output.name != source.name:
            raise ProtocolError("a copy keeps its name")
    elif output.suffix != codec.extension or source.suffix.lower() != ".flac":
        raise ProtocolError(f"output extension does not match codec {codec.name}")
    if not HEX.fullmatch(body["settings_hash"]) or body["id"] < 0 or body["attempt"] < 0:
        raise ProtocolError("bad task numbers")
    task = Task(source, codec.name, output, action, size, settings_hash=body["settings_hash"])
    return body["id"], body["attempt"], task


# --- settings (sent once per worker session) ---------------------------------


def settings_to_wire(settings: Settings) -> dict:
    return {
        "input_dir": os.fsdecode(settings.input_dir),
        "outdir": os.fsdecode(settings.outdir),
        "modes": list(settings.modes),
        "options": {k: list(v) for k, v in settings.options.items()},
        "timeout": settings.timeout,
        "id3v23": settings.id3v23,
        "embed_folder_art": settings.embed_folder_art,
        "layout": settings.layout.value,
    }


def settings_from_wire(body: Any) -> Settings:
    if not isinstance(body, dict):
        raise ProtocolError("settings: not an object")
    fields(
        body,
        {
            "input_dir": str,
            "outdir": str,
            "modes": list,
            "options": dict,
            "id3v23": bool,
            "embed_folder_art": bool,
            "layout": str,
        },
        {"timeout": (int, float, type(None))},
    )
    options = {}
    for family, words in body["options"].items():
        if family not in OPTION_FAMILIES:
            raise ProtocolError(f"unknown option family {family!r}")
        options[family] = check_options(family, words)
    modes = []
    for mode in body["modes"]:
        if not isinstance(mode, str):
            raise ProtocolError("modes: not strings")
        try:
            modes.append(codecs.resolve(mode).name)
        except Flac2allError:
            raise ProtocolError(f"unknown codec {mode!r}") from None
    timeout = body.get("timeout")
    if timeout is not None and not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise ProtocolError("bad timeout")
    try:
        layout = Layout(body["layout"])
    except ValueError:
        raise ProtocolError("bad layout") from None
    return Settings(
        input_dir=check_path(body["input_dir"], "input_dir"),
        outdir=check_path(body["outdir"], "outdir"),
        modes=tuple(modes),
        layout=layout,
        options=options,
        timeout=timeout,
        id3v23=body["id3v23"],
        embed_folder_art=body["embed_folder_art"],
        threads=1,
    )


# --- results -----------------------------------------------------------------


MAX_RESULT_MESSAGE = 2000
MAX_ELAPSED = 1e7  # seconds, some four months


def result_to_wire(task_id: int, attempt: int, result: TaskResult) -> bytes:
    """Worker -> master, one per task of a job; a job's last frees its slot."""
    facts = result.facts
    return encode(
        "result",
        id=task_id,
        attempt=attempt,
        status=result.status.value,
        message=result.message[:MAX_RESULT_MESSAGE],
        returncode=result.returncode,
        elapsed=result.elapsed,
        facts=None
        if facts is None
        else [facts.size, facts.mtime_ns, facts.audio_md5, facts.tags_hash, facts.pictures_hash],
    )


def refusals_to_wire(msg: dict | None, host: str, why: str) -> list[bytes]:
    """Failed results for the tasks of a job a worker will not run (a codec
    it lacks, a path outside the run), as far as the message says which
    tasks they were: so that the master does not wait for them forever."""
    message = f"refused by the worker on {host}: {why}"[:MAX_RESULT_MESSAGE]
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
        )
        for task_id, attempt in job_ids(msg or {})
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

    def to_result(self, task: Task) -> TaskResult:
        return TaskResult(task, self.status, self.message, self.returncode, self.elapsed, self.facts)


def result_from_wire(msg: dict) -> WireResult:
    fields(
        msg,
        {"id": int, "attempt": int, "status": str, "message": str, "returncode": int, "elapsed": (int, float)},
        {"facts": (list, type(None))},
    )
    try:
        status = Status(msg["status"])
    except ValueError:
        raise ProtocolError("unknown status") from None
    facts = None
    raw = msg.get("facts")
    if raw is not None:
        # Integers as SQLite stores them (the state records the facts).
        if (
            len(raw) != 5
            or not all(is_a(x, int) and -(2**63) <= x < 2**63 for x in raw[:2])
            or raw[0] < 0
            or not all(isinstance(x, str) and HEX.fullmatch(x) for x in raw[2:])
        ):
            raise ProtocolError("bad facts")
        facts = SourceFacts(*raw)
    if not -(2**31) <= msg["returncode"] < 2**32:
        raise ProtocolError("bad returncode")
    elapsed = seconds(msg["elapsed"], "elapsed", -1.0, MAX_ELAPSED)  # -1: not timed (a skip)
    return WireResult(msg["id"], msg["attempt"], status, msg["message"], msg["returncode"], elapsed, facts)


def check_usage_options(options: dict[str, tuple[str, ...]]) -> None:
    """For the master's CLI: refuse, before any work, options a worker would."""
    for family, words in options.items():
        try:
            check_options(family, words)
        except ProtocolError as exc:
            raise UsageError(f"in cluster mode, {exc}") from None
