"""Execute one task: the only module that starts encoder processes.

``execute(task, settings, processes)`` turns a Task into a TaskResult. Local
mode calls it from a thread pool; cluster workers call the very same function.
Outputs are written under a temporary name beside their final name and
renamed into place only when the encoder, the checks and the tagging all
succeeded, so a file under a final name is always complete.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mutagen
from mutagen.flac import FLAC

from flac2all import codecs, tags
from flac2all.codecs.base import PACKAGES
from flac2all.errors import TaskError
from flac2all.model import Action, Settings, SourceFacts, Status, Task, TaskResult

log = logging.getLogger("flac2all")

TEMP_PREFIX = ".flac2all-tmp-"
TEMP_NAME = re.compile(r"\.flac2all-tmp-[0-9a-f]{12}(\.[^/]*)?")
STDERR_TAIL = 64 * 1024
# util-linux's setpriv sets the parent-death signal and execs the encoder
# (safer than a preexec_fn, which may deadlock in a threaded parent).
SETPRIV = shutil.which("setpriv")


@functools.lru_cache(maxsize=64)
def which(program: str) -> str | None:
    """shutil.which, once per program and process (it stats every folder
    of PATH, which shows on runs of thousands of short tasks)."""
    return shutil.which(program)


class Interrupted(Exception):
    """The run is being stopped; the task has no result."""


class ProcessGroup:
    """Every process the runner has started and not yet reaped.

    ``stop()`` kills them all and refuses new ones: that is how Ctrl-C,
    SIGTERM and a cluster shutdown end the encoders at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.stopping = False

    def start(self, argv: list[str], die_with_us: bool = True, **kwargs) -> subprocess.Popen:
        if which(argv[0]) is None:
            raise FileNotFoundError(argv[0])
        if SETPRIV and die_with_us:
            # Killed with us even when we are killed with SIGKILL: no encoder
            # outlives the run to write into a folder after we are gone.
            argv = [SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        with self._lock:
            if self.stopping:
                raise Interrupted()
            # A session of its own: the terminal's Ctrl-C reaches only us,
            # and we end each encoder (and anything it started) ourselves.
            proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
            self._procs.add(proc)
            return proc

    def kill(self, proc: subprocess.Popen) -> None:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def reap(self, proc: subprocess.Popen) -> None:
        self.kill(proc)
        proc.wait()
        with self._lock:
            self._procs.discard(proc)

    def stop(self) -> None:
        with self._lock:
            self.stopping = True
            procs = list(self._procs)
        for proc in procs:
            self.kill(proc)


def last_error_line(stderr: str) -> str:
    """The encoder's own most telling line: the last one mentioning an
    error, else the last non-empty one."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower():
            return line[:300]
    return lines[-1][:300] if lines else ""


def read_tail(fileobj) -> str:
    size = fileobj.seek(0, os.SEEK_END)
    fileobj.seek(max(0, size - STDERR_TAIL))
    return fileobj.read().decode("utf-8", "replace")


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def run_pipeline(stages: list[list[str]], timeout: float, processes: ProcessGroup) -> None:
    """Run ``stage0 | stage1 | ...``; raise TaskError unless every stage
    exits 0 within ``timeout`` seconds."""
    procs: list[subprocess.Popen] = []
    errfiles = []
    try:
        upstream = subprocess.DEVNULL
        for i, argv in enumerate(stages):
            errfile = tempfile.TemporaryFile()
            errfiles.append(errfile)
            last = i == len(stages) - 1
            try:
                # Only the last stage writes the output: it dies with us, and
                # the stages feeding it then die of SIGPIPE (one exec saved
                # per stage, which counts on short files).
                proc = processes.start(
                    argv,
                    die_with_us=last,
                    stdin=upstream,
                    stdout=subprocess.DEVNULL if last else subprocess.PIPE,
                    stderr=errfile,
                )
            except FileNotFoundError:
                package = PACKAGES.get(argv[0], argv[0])
                raise TaskError(f"{argv[0]} is not installed (Debian package: {package})", 127) from None
            finally:
                if upstream is not subprocess.DEVNULL:
                    upstream.close()  # the next stage holds it now
            upstream = proc.stdout
            procs.append(proc)
        deadline = time.monotonic() + timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                name = stages[procs.index(proc)][0]
                raise TaskError(f"{name} timed out after {timeout:g} s", -signal.SIGKILL) from None
        if processes.stopping and any(p.returncode != 0 for p in procs):
            raise Interrupted()
        failed = [p for p in procs if p.returncode != 0]
        if failed:
            # A stage killed by SIGPIPE only shows that the next one died
            # first: the first other failure is the cause.
            cause = next((p for p in failed if p.returncode != -signal.SIGPIPE), failed[0])
            index = procs.index(cause)
            for argv, p, f in zip(stages, procs, errfiles, strict=False):
                log.debug("%s -> %s\n%s", shlex.join(argv), p.returncode, read_tail(f))
            detail = last_error_line(read_tail(errfiles[index]))
            message = f"{stages[index][0]} {describe_exit(cause.returncode)}"
            raise TaskError(f"{message}: {detail}" if detail else message, cause.returncode)
    finally:
        for proc in procs:
            processes.reap(proc)
        for errfile in errfiles:
            errfile.close()


def temp_path(final: Path) -> Path:
    """A hidden name beside ``final`` that keeps its extension (encoders and
    mutagen choose the format by it)."""
    return final.with_name(f"{TEMP_PREFIX}{secrets.token_hex(6)}{final.suffix}")


@contextmanager
def staged(final: Path) -> Iterator[Path]:
    """Yield a temp path; whatever is left there afterwards is removed."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TaskError(f"cannot create folder {final.parent}: {tags.describe_oserror(exc)}") from None
    tmp = temp_path(final)
    try:
        yield tmp
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def commit(tmp: Path, final: Path) -> None:
    """Atomically put a finished temp file under its final name."""
    try:
        os.replace(tmp, final)
    except OSError as exc:
        raise TaskError(f"cannot write {final}: {tags.describe_oserror(exc)}") from None


def default_timeout(length: float) -> float:
    """Seconds a task may take: generous (a quarter of real time plus two
    minutes), but a hung encoder never blocks a run forever."""
    return 120.0 + 4.0 * length


def check_output(codec: codecs.Codec, tmp: Path, meta: tags.SourceMeta) -> None:
    """Refuse an output that is empty, shorter or longer than its source, or
    (for flac) whose audio differs from the source's."""
    try:
        if tmp.stat().st_size == 0:
            raise TaskError("encoder wrote an empty file")
    except FileNotFoundError:
        raise TaskError("encoder wrote no output file") from None
    if not codec.checks_length:
        return
    try:
        out = mutagen.File(tmp)
    except mutagen.MutagenError as exc:
        raise TaskError(f"encoder output is unreadable: {exc}") from None
    length = getattr(getattr(out, "info", None), "length", None)
    if length:
        tolerance = 0.1 + 0.005 * meta.info.length
        if abs(length - meta.info.length) > tolerance:
            raise TaskError(f"output lasts {length:.2f} s but the source {meta.info.length:.2f} s")
    if codec.keeps_md5 and meta.md5:
        if FLAC(tmp).info.md5_signature != meta.md5:
            raise TaskError("re-encoded audio differs from the source (MD5 mismatch)")


Outcome = tuple[str, SourceFacts | None]  # (note for the result, facts for the state)


def read_source(task: Task, settings: Settings) -> tuple[tags.SourceMeta, SourceFacts]:
    """The source's metadata, ready to be written (folder art, provenance),
    and its facts for the state."""
    meta, facts = tags.read_source_facts(task.source)
    if settings.embed_folder_art:
        meta = tags.with_folder_art(meta, task.source.parent)
    return tags.with_provenance(meta, tags.provenance(facts, task.settings_hash)), facts


def write_tags(codec: codecs.Codec, tmp: Path, meta: tags.SourceMeta, task: Task, settings: Settings) -> str:
    warnings = tags.write_tags(tmp, codec.tag_family, meta, settings.id3v23) if codec.tagged else []
    for warning in warnings:
        log.warning("%s: %s", task.source, warning)
    return "; ".join(warnings)


def encode(task: Task, settings: Settings, processes: ProcessGroup) -> Outcome:
    """Encode, check and tag one output."""
    codec = codecs.resolve(task.mode)
    meta, facts = read_source(task, settings)
    options = settings.options.get(codec.option_family or "", codec.default_options)
    timeout = settings.timeout if settings.timeout is not None else default_timeout(meta.info.length)
    with staged(task.output) as tmp:
        run_pipeline(codec.commands(task.source, tmp, meta.info, tuple(options)), timeout, processes)
        check_output(codec, tmp, meta)
        note = write_tags(codec, tmp, meta, task, settings)
        commit(tmp, task.output)
    return note, facts


def retag(task: Task, settings: Settings, processes: ProcessGroup | None = None) -> Outcome:
    """Rewrite the tags and pictures of an existing output from its source,
    without re-encoding: on a copy beside it, renamed over it when done, so
    the output is never seen half-tagged."""
    codec = codecs.resolve(task.mode)
    meta, facts = read_source(task, settings)
    with staged(task.output) as tmp:
        try:
            shutil.copy2(task.output, tmp)
        except OSError as exc:
            raise TaskError(f"cannot copy the output to retag it: {tags.describe_oserror(exc)}") from None
        note = write_tags(codec, tmp, meta, task, settings)
        commit(tmp, task.output)
    return note or "retagged", facts


def move(task: Task, settings: Settings, processes: ProcessGroup) -> Outcome:
    """A renamed or moved source: rename its output, then retag it (the
    tags may name the old place, and the state learns the new one)."""
    assert task.previous is not None
    try:
        task.output.parent.mkdir(parents=True, exist_ok=True)
        os.replace(task.previous, task.output)
    except OSError as exc:
        raise TaskError(f"cannot move {task.previous}: {tags.describe_oserror(exc)}") from None
    remove_empty_folders(task.previous.parent, settings.outdir)
    _, facts = retag(task, settings)
    return f"moved from {task.previous}", facts


def delete(task: Task, settings: Settings, processes: ProcessGroup) -> Outcome:
    """An orphan output (its source is gone) that this tool wrote."""
    try:
        task.output.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise TaskError(f"cannot delete {task.output}: {tags.describe_oserror(exc)}") from None
    remove_empty_folders(task.output.parent, settings.outdir)
    return "deleted orphan", None


def remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents while empty, never ``top`` itself."""
    while folder != top and folder.is_relative_to(top):
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def copy(task: Task, settings: Settings, processes: ProcessGroup) -> Outcome:
    try:
        st = os.stat(task.source)
    except OSError as exc:
        raise TaskError(f"cannot read: {tags.describe_oserror(exc)}") from None
    with staged(task.output) as tmp:
        try:
            shutil.copy2(task.source, tmp)
        except OSError as exc:
            raise TaskError(f"cannot copy: {tags.describe_oserror(exc)}") from None
        commit(tmp, task.output)
    return "copied", SourceFacts(st.st_size, st.st_mtime_ns, "", "", "")


HANDLERS = {Action.ENCODE: encode, Action.COPY: copy, Action.RETAG: retag, Action.MOVE: move, Action.DELETE: delete}
NOTES = {
    Action.SKIP: "skipped: output exists",
    Action.ORPHAN: "orphan: source gone, output kept (--delete removes it)",
}


def execute(task: Task, settings: Settings, processes: ProcessGroup) -> TaskResult:
    """Run one task to its result; never raises for a bad file.

    Raises Interrupted when the run is being stopped (the task then has no
    result and its temp file is gone).
    """
    if task.action in NOTES:
        return TaskResult(task, Status.SKIPPED, task.note or NOTES[task.action], 0, -1.0)
    started = time.monotonic()
    try:
        note, facts = HANDLERS[task.action](task, settings, processes)
    except TaskError as exc:
        if processes.stopping:
            raise Interrupted() from None
        return TaskResult(task, Status.FAILED, exc.message, exc.returncode, time.monotonic() - started)
    except Interrupted:
        raise
    except Exception as exc:  # a bug must fail one task, not the run
        log.exception("internal error on %s (%s)", task.source, task.mode)
        return TaskResult(task, Status.FAILED, f"internal error: {exc!r}", 1, time.monotonic() - started)
    return TaskResult(task, Status.SUCCESS, note, 0, time.monotonic() - started, facts)
