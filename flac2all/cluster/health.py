"""What a worker checks for itself: that the master's folders are inside
what its own user allowed (``--allow``), that it sees the run's files as the
master does and can write its outputs (health before work), which of the
run's modes it can run (its encoders the master's versions, the run's
options accepted by each), that every path of a job resolves (symlinks and
all) inside the run's folders, and, when a task fails, whether the cause is
this node's environment rather than the file.

Its user decides what a worker may touch, never the master: paths are
resolved with their symlinks before any check, an output that exists must
be a regular file (a symlink there is refused: the runner replaces outputs
by rename, which never follows it, but a retag reads the old output).
"""

from __future__ import annotations

import os
import platform
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flac2all import codecs, tools
from flac2all.cluster import protocol
from flac2all.cluster.jobs import WireTask
from flac2all.cluster.protocol import Checks, ProtocolError
from flac2all.errors import Flac2allError, UsageError
from flac2all.model import Settings, Status, TaskResult
from flac2all.running import preflight

PROBE_PREFIX = ".flac2all-probe-"


def real(path: Path) -> Path:
    """``path`` with every symlink resolved (the parts that do not exist yet
    are kept as they are: they cannot be links)."""
    return Path(os.path.realpath(path))


def within(path: Path, roots: Sequence[Path]) -> bool:
    resolved = real(path)
    return any(resolved.is_relative_to(real(root)) for root in roots)


def outside_allowed(settings: Settings, allowed: Sequence[Path]) -> str | None:
    """Why the run's folders are not this worker's to touch, or None (no
    --allow: an authenticated master decides)."""
    if not allowed:
        return None
    for what, folder in (("input", settings.input_dir), ("output", settings.outdir)):
        if not within(folder, allowed):
            roots = " ".join(f"--allow {root}" for root in allowed)
            return f"the run's {what} folder {folder} is outside what this worker allows ({roots})"
    return None


def runnable(modes: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The run's modes this node can run, and what it lacks for the others
    (mode -> what)."""
    can, lacks = [], {}
    for mode in modes:
        try:
            codec = codecs.resolve(mode)
        except Flac2allError:
            lacks[mode] = f"{mode} (no such ffmpeg encoder here)"
            continue
        missing = [p for p in codec.programs if tools.which(p) is None]
        if missing:
            lacks[mode] = f"{mode} (no {', '.join(missing)})"
        else:
            can.append(mode)
    return can, lacks


@dataclass
class Examined:
    """What the health check before work found: what is wrong ("" if
    nothing: the node refuses the run otherwise), the run's modes it can
    run, and why it cannot run the others (mode -> why)."""

    problem: str = ""
    modes: list[str] = field(default_factory=list)
    lacks: dict[str, str] = field(default_factory=dict)


# A version number in a program's version line ("3.100" of "LAME 64bits
# version 3.100 (http://lame.sf.net)"), and a release's ("14.1" of FreeBSD's
# "14.1-RELEASE").
NUMBER = re.compile(r"\d+(?:\.\d+)+")


def system() -> str:
    """What this node runs on, as the master's summary names it: "FreeBSD 14.1"."""
    release = platform.release()
    m = NUMBER.match(release)
    return f"{platform.system()} {m.group(0) if m else release}".strip()


def own_versions(modes: Iterable[str]) -> dict[str, str]:
    """The version of each program of ``modes`` here (program -> "3.100")."""
    programs = dict.fromkeys(p for mode in modes for p in codecs.resolve(mode).programs)
    found = {}
    for program in programs:
        line = tools.version(program)
        m = NUMBER.search(line)
        found[program] = m.group(0) if m else line[:40]
    return found


ALLOW_OTHER_ENCODERS = "--allow-other-encoders"


def drift(versions: Iterable[tuple[str, str]], programs: Iterable[str]) -> str:
    """How this node's encoders differ from the master's (``versions``:
    the master's program -> version line, as ``flac2all --version`` reads
    them), or "". A program the master has not (it hands out work only)
    is not compared: its hashes name no version."""
    needed = set(programs)
    for program, theirs in versions:
        if program not in needed or not theirs:
            continue
        mine = tools.version(program) if tools.which(program) else ""
        if mine != theirs:
            return (
                f"{program} here is {mine or 'not installed'!r}, on the master {theirs!r}: its outputs would be "
                f"recorded as the master's version's (start the worker with {ALLOW_OTHER_ENCODERS} to accept it)"
            )
    return ""


def refused_options(settings: Settings, modes: Iterable[str]) -> dict[str, str]:
    """The modes whose encoder here refuses the run's options, with the
    encoder's message: each mode's command, as the runner builds it, run
    once on a fraction of a second of audio (``preflight``)."""
    refused = {}
    for mode in modes:
        try:
            preflight.check_options((codecs.resolve(mode),), settings)
        except UsageError as exc:
            refused[mode] = str(exc)
    return refused


def examine(
    settings: Settings, checks: Checks, allowed: Sequence[Path], session: str, other_encoders: bool = False
) -> Examined:
    """Health before work. A missing mount usually leaves an empty folder,
    which reads fine: so the sources the master named must be there with
    their sizes, and the probe file it wrote into the output folder must be
    seen. Then the encoders: the master's versions unless
    ``other_encoders``, and the run's options, mode by mode."""
    if problem := outside_allowed(settings, allowed):
        return Examined(problem)
    for source, size in checks.sources:
        try:
            st = os.stat(source)
        except OSError as exc:
            return Examined(
                f"cannot see {source} ({exc.strerror}), which the master sees: is the input folder mounted?"
            )
        if st.st_size != size:
            return Examined(
                f"sees {source} with {st.st_size} bytes, the master with {size}: another copy of the files?"
            )
    if checks.probe is not None:
        if not os.path.lexists(checks.probe):
            return Examined(
                f"does not see the master's probe file in {settings.outdir}: is the output folder mounted "
                "(the same one as on the master)?"
            )
        mine = settings.outdir / f"{PROBE_PREFIX}{session}"
        try:
            os.close(os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
            os.unlink(mine)
        except OSError as exc:
            return Examined(f"cannot write into {settings.outdir} ({exc.strerror}): NFS root_squash, or another UID?")
    can, lacks = runnable(settings.modes)
    if not other_encoders and (problem := drift(checks.versions, (p for m in can for p in codecs.resolve(m).programs))):
        return Examined(problem)
    lacks.update(refused_options(settings, can))
    can = [mode for mode in can if mode not in lacks]
    if not can:
        return Examined(f"cannot run any of the run's modes: {'; '.join(lacks.values())}")
    return Examined("", can, lacks)


def resolves_inside(path: Path, root: Path, root_real: str) -> bool:
    """Whether ``path`` (lexically below ``root``: the protocol checked it)
    resolves below ``root_real`` (the root's real path), symlinks and all.
    Only the parts below the root are looked at (a realpath of every path
    from / was most of a trivial task's cost; strings, not pathlib, for the
    same reason): a link among them is resolved; parts that do not exist
    yet cannot be links."""
    current = root_real
    for part in os.fspath(path)[len(os.fspath(root)) :].split("/"):
        if not part:
            continue
        current = f"{current}/{part}" if current != "/" else f"/{part}"
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        if stat.S_ISLNK(st.st_mode):
            try:
                resolved = os.path.realpath(path)
            except OSError:  # a link swapped meanwhile
                return False
            return resolved == root_real or resolved.startswith(root_real.rstrip("/") + "/")
    return True


def confine(job: list[WireTask], settings: Settings, roots: tuple[str, str] | None = None) -> None:
    """Refuse (ProtocolError) a job whose source or output folder resolves,
    symlinks and all, outside the run's folders, or whose output exists as
    something else than a regular file. ``roots``: the real paths of the
    run's input and output folders (resolved once per session)."""
    input_real, out_real = roots or (os.path.realpath(settings.input_dir), os.path.realpath(settings.outdir))
    for _, _, task in job:
        if not resolves_inside(task.source, settings.input_dir, input_real):
            raise ProtocolError(f"{task.source} resolves outside the run's input folder (a symlink?)")
        if not resolves_inside(task.output.parent, settings.outdir, out_real):
            raise ProtocolError(f"{task.output.parent} resolves outside the run's output folder (a symlink?)")
        try:
            st = os.lstat(task.output)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ProtocolError(f"cannot check {task.output}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ProtocolError(f"{task.output} exists and is not a regular file (a symlink?)")


def confine_each(
    job: list[WireTask], settings: Settings, roots: tuple[str, str] | None
) -> tuple[list[WireTask], list[tuple[WireTask, str]]]:
    """A batch of copies checked copy by copy (each has its own source): the
    ones to run, and the ones refused with why (a link in the library that
    leads out refuses that copy, not its neighbours in the batch)."""
    kept, refused = [], []
    for wire_task in job:
        try:
            confine([wire_task], settings, roots)
        except ProtocolError as exc:
            refused.append((wire_task, str(exc)))
            continue
        kept.append(wire_task)
    return kept, refused


def nearest_folder(path: Path) -> Path | None:
    for folder in (path, *path.parents):
        if os.path.isdir(folder):
            return folder
    return None


def cause_of(result: TaskResult, settings: Settings) -> str:
    """Why a task failed when it is this node's environment (a missing
    encoder, a source it cannot read, an output folder it cannot write),
    for the master to count against this worker; else the result's own
    cause ("" for the file's own failures)."""
    if result.status is not Status.FAILED or result.cause:
        return result.cause
    task = result.task
    try:
        if any(tools.which(p) is None for p in codecs.resolve(task.mode).programs):
            return protocol.ENCODER_MISSING
    except Flac2allError:
        return protocol.ENCODER_MISSING
    if not os.access(task.source, os.R_OK):
        return protocol.SOURCE_MISSING
    folder = nearest_folder(task.output.parent)
    if folder is None or not folder.is_relative_to(settings.outdir) or not os.access(folder, os.W_OK | os.X_OK):
        return protocol.OUTPUT_UNWRITABLE
    return ""
