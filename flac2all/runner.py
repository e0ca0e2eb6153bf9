"""Execute tasks: the only module that starts encoder processes.

``execute_batch(tasks, settings, processes)`` turns a batch (one task, or
the encodes of one source, which share one decoder: ``Fanout``) into one
TaskResult per task. Local mode calls it from a thread pool; cluster workers
call the very same function. Outputs are written under a temporary name
beside their final name and renamed into place only when the encoder, the
checks and the tagging all succeeded, so a file under a final name is always
complete.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import re
import secrets
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import mutagen
from mutagen.flac import FLAC

from flac2all import codecs, tags
from flac2all.codecs.base import PACKAGES, Command
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


class Chain:
    """``stage0 | stage1 | ...`` as started processes, with each stage's
    stderr kept in a temp file; ``close()`` kills and reaps what is left."""

    def __init__(self, stages: list[Command], processes: ProcessGroup) -> None:
        self.stages = stages
        self.processes = processes
        self.procs: list[subprocess.Popen] = []
        self.errfiles: list = []

    def start(self, stdin: int = subprocess.DEVNULL, stdout: int = subprocess.DEVNULL) -> None:
        """Start every stage; ``stdin``/``stdout`` of the chain may be PIPE
        (then ``self.stdin``/``self.stdout`` are their file objects)."""
        upstream = stdin
        for i, argv in enumerate(self.stages):
            errfile = tempfile.TemporaryFile()
            self.errfiles.append(errfile)
            last = i == len(self.stages) - 1
            try:
                # Only the stage that writes the output dies with us; the
                # stages feeding it then die of SIGPIPE (one exec saved per
                # stage, which counts on short files).
                proc = self.processes.start(
                    argv,
                    die_with_us=last and stdout == subprocess.DEVNULL,
                    stdin=upstream,
                    stdout=stdout if last else subprocess.PIPE,
                    stderr=errfile,
                    bufsize=0,
                )
            except FileNotFoundError:
                package = PACKAGES.get(argv[0], argv[0])
                raise TaskError(f"{argv[0]} is not installed (Debian package: {package})", 127) from None
            finally:
                if i > 0:
                    upstream.close()  # the next stage holds it now
            upstream = proc.stdout
            self.procs.append(proc)

    @property
    def stdin(self):
        return self.procs[0].stdin

    @property
    def stdout(self):
        return self.procs[-1].stdout

    def running(self) -> str | None:
        """The program of the first stage still running, if any."""
        for argv, proc in zip(self.stages, self.procs, strict=False):
            if proc.poll() is None:
                return argv[0]
        return None

    def wait(self, deadline: float | None = None, timeout: float = 0.0) -> None:
        """Wait for every stage; past ``deadline`` raise TaskError (the
        stages are killed by close())."""
        for argv, proc in zip(self.stages, self.procs, strict=False):
            try:
                proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise TaskError(f"{argv[0]} timed out after {timeout:g} s", -signal.SIGKILL) from None

    def failure(self) -> TaskError | None:
        """Why the chain failed, or None if every stage exited 0.

        A stage killed by SIGPIPE only shows that the next one died first:
        the first other failure is the cause.
        """
        failed = [p for p in self.procs if p.returncode != 0]
        if not failed:
            return None
        cause = next((p for p in failed if p.returncode != -signal.SIGPIPE), failed[0])
        index = self.procs.index(cause)
        for argv, p, f in zip(self.stages, self.procs, self.errfiles, strict=False):
            log.debug("%s -> %s\n%s", shlex.join(argv), p.returncode, read_tail(f))
        detail = last_error_line(read_tail(self.errfiles[index]))
        message = f"{self.stages[index][0]} {describe_exit(cause.returncode)}"
        return TaskError(f"{message}: {detail}" if detail else message, cause.returncode)

    @property
    def died_of_sigpipe(self) -> bool:
        return any(p.returncode == -signal.SIGPIPE for p in self.procs)

    def close(self) -> None:
        for proc in self.procs:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
            self.processes.reap(proc)
        for errfile in self.errfiles:
            errfile.close()


def run_pipeline(stages: list[Command], timeout: float, processes: ProcessGroup) -> None:
    """Run ``stage0 | stage1 | ...``; raise TaskError unless every stage
    exits 0 within ``timeout`` seconds."""
    chain = Chain(stages, processes)
    try:
        chain.start()
        chain.wait(time.monotonic() + timeout, timeout)
        failure = chain.failure()
        if failure is not None:
            if processes.stopping:
                raise Interrupted()
            raise failure
    finally:
        chain.close()


# PCM is handed from the decoder to the encoders in chunks of this size,
# through pipes enlarged to it (Linux's default 64 KiB makes the encoders of
# one source wait on each other more often). Not larger: a user's pipes share
# a quota (fs.pipe-user-pages-soft, 64 MiB), past which every new pipe of
# theirs, ours or not, gets a tiny buffer; 16 files x 4 modes stay at 20 MiB.
CHUNK = 256 * 1024


def widen(pipe) -> None:
    try:
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)
    except OSError:  # above the user's pipe quota: the default size works too
        pass


class Fanout:
    """``head | branch`` for every branch, with ``head`` started once and
    its output copied to each branch by the calling thread: one decoder
    feeding every encoder of a source.

    Timeouts: a watchdog fires at the deadline. If the copy is then stuck
    writing to one branch (an encoder that stopped reading), that branch
    alone is killed and the others, which were only waiting on it, get one
    more period; otherwise, and at the second firing, whatever still runs
    is killed.
    """

    def __init__(self, head: Command, branches: list[list[Command]], timeout: float, processes: ProcessGroup):
        self.timeout = timeout
        self.processes = processes
        self.source = Chain([head], processes)
        self.chains = [Chain(branch, processes) for branch in branches]
        self.expired: dict[int, str] = {}  # chain index (0 = head) -> program that ran out of time
        self.blocked_on: int | None = None  # the chain index the copy is writing to
        self.watchdog: threading.Timer | None = None
        self.lock = threading.Lock()
        self.finished = False
        self.ended: list[float] = []  # per branch, when it ended (time.monotonic)

    @property
    def everyone(self) -> list[Chain]:
        return [self.source, *self.chains]

    def arm(self) -> None:
        if self.finished:
            return
        self.watchdog = threading.Timer(self.timeout, self.expire)
        self.watchdog.daemon = True
        self.watchdog.start()

    def expire(self) -> None:
        with self.lock:
            culprit = self.blocked_on
            first = not self.expired
            targets = [culprit] if first and culprit is not None else range(len(self.everyone))
            for i in targets:
                chain = self.everyone[i]
                name = chain.running()
                if name is not None:
                    self.expired[i] = name
                for proc in chain.procs:
                    self.processes.kill(proc)
            if first and culprit is not None:
                self.arm()

    def pump(self, sinks: dict[int, object]) -> None:
        """Copy the head's output to every sink until its end; a sink whose
        reader is gone is dropped, and when none is left the head's output
        is abandoned (the decoder then dies of SIGPIPE)."""
        fd = self.source.stdout.fileno()
        while sinks:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            for i, sink in list(sinks.items()):
                view = memoryview(chunk)
                self.blocked_on = i
                try:
                    while view:
                        view = view[os.write(sink.fileno(), view) :]
                except OSError:  # EPIPE: that encoder is gone (its chain tells why)
                    del sinks[i]
                    sink.close()
                self.blocked_on = None
        for sink in sinks.values():
            sink.close()
        self.source.stdout.close()

    def timed_out(self, i: int) -> TaskError:
        return TaskError(f"{self.expired[i]} timed out after {self.timeout:g} s", -signal.SIGKILL)

    def run(self) -> list[TaskError | None]:
        try:
            failures = self.start()
            self.pump({i: chain.stdin for i, chain in enumerate(self.chains, start=1) if chain.procs})
            self.wait_all()
            if self.processes.stopping:
                raise Interrupted()
            if 0 in self.expired:
                return [failure or self.timed_out(0) for failure in failures]
            head_failure = self.source.failure()
            if head_failure is not None and not self.source.died_of_sigpipe:
                return [failure or head_failure for failure in failures]
            return [
                failure or (self.timed_out(i) if i in self.expired else chain.failure())
                for i, (chain, failure) in enumerate(zip(self.chains, failures, strict=True), start=1)
            ]
        finally:
            with self.lock:
                if self.watchdog is not None:
                    self.watchdog.cancel()
                self.finished = True  # no re-arming after this
            for chain in self.everyone:
                chain.close()

    def wait_all(self) -> None:
        """Wait for every process (bounded: the watchdog kills whatever is
        left), noting when each branch's last process ended, so that each
        mode reports its own time, not its slowest sibling's."""
        ends: dict[int, float] = {}
        watched: dict[int, int] = {}  # pidfd -> chain index
        poller = select.poll()
        try:
            for i, chain in enumerate(self.everyone):
                for proc in chain.procs:
                    try:
                        fd = os.pidfd_open(proc.pid)
                    except OSError:  # no pidfd here: its chain ends when reaped below
                        continue
                    watched[fd] = i
                    poller.register(fd, select.POLLIN)
            while watched:
                for fd, _ in poller.poll():
                    ends[watched.pop(fd)] = time.monotonic()  # the chain's last process wins
                    poller.unregister(fd)
                    os.close(fd)
        finally:
            for fd in watched:
                os.close(fd)
        for chain in self.everyone:
            chain.wait()
        now = time.monotonic()
        self.ended = [ends.get(i, now) for i in range(1, len(self.everyone))]

    def start(self) -> list[TaskError | None]:
        """Start the head and every branch that can start (a missing
        encoder fails its own branch), then the watchdog."""
        self.source.start(stdout=subprocess.PIPE)
        widen(self.source.stdout)
        failures: list[TaskError | None] = []
        for chain in self.chains:
            try:
                chain.start(stdin=subprocess.PIPE)
                widen(chain.stdin)
                failures.append(None)
            except TaskError as exc:
                chain.close()
                chain.procs.clear()
                failures.append(exc)
        self.arm()
        return failures


def run_fanout(
    head: Command, branches: list[list[Command]], timeout: float, processes: ProcessGroup
) -> tuple[list[TaskError | None], list[float]]:
    """Run ``head | branch`` for every branch, decoding once (Fanout).

    Returns each branch's failure (None where it succeeded) and when it
    ended. A failing head fails every branch; one failing branch leaves the
    others alone.
    """
    if len(branches) == 1:  # a plain pipe, no copy
        try:
            run_pipeline([head, *branches[0]], timeout, processes)
        except TaskError as exc:
            return [exc], [time.monotonic()]
        return [None], [time.monotonic()]
    fanout = Fanout(head, branches, timeout, processes)
    return fanout.run(), fanout.ended


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


def remove_stale_temps(folders: set[Path]) -> int:
    """Delete the temp files a killed run (or a killed worker) left in
    ``folders``; call it only when nothing else writes there."""
    removed = 0
    for folder in folders:
        try:
            with os.scandir(folder) as it:
                stale = [e.path for e in it if TEMP_NAME.fullmatch(e.name)]
        except OSError:
            continue
        for path in stale:
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
    return removed


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
        out = tags.load(tmp, codec.tag_family)
    except mutagen.MutagenError as exc:
        raise TaskError(f"encoder output is unreadable: {exc}") from None
    if out is None and codec.tag_family in tags.FAMILY_TYPES:
        raise TaskError(f"encoder output is not a {codec.extension} file mutagen can read")
    length = getattr(getattr(out, "info", None), "length", None)
    if length:
        tolerance = 0.1 + 0.005 * meta.info.length
        if abs(length - meta.info.length) > tolerance:
            raise TaskError(f"output lasts {length:.2f} s but the source {meta.info.length:.2f} s")
    if codec.keeps_md5 and meta.md5:
        if not isinstance(out, FLAC) or out.info.md5_signature != meta.md5:
            raise TaskError("re-encoded audio differs from the source (MD5 mismatch)")


Outcome = tuple[str, SourceFacts | None]  # (note for the result, facts for the state)


def source_meta(source: Path, settings: Settings) -> tuple[tags.SourceMeta, SourceFacts]:
    """The source's metadata, ready to be written (with folder art if
    asked), and its facts for the state."""
    meta, facts = tags.read_source_facts(source)
    if settings.embed_folder_art:
        meta = tags.with_folder_art(meta, source.parent)
    return meta, facts


def with_provenance(meta: tags.SourceMeta, facts: SourceFacts, task: Task) -> tags.SourceMeta:
    return tags.with_provenance(meta, tags.provenance(facts, task.settings_hash))


def write_tags(codec: codecs.Codec, tmp: Path, meta: tags.SourceMeta, task: Task, settings: Settings) -> str:
    warnings = tags.write_tags(tmp, codec.tag_family, meta, settings.id3v23) if codec.tagged else []
    for warning in warnings:
        log.warning("%s: %s", task.source, warning)
    return "; ".join(warnings)


Timed = tuple[Outcome | Exception, float]  # an outcome and the seconds its task took


def encode(tasks: Sequence[Task], settings: Settings, processes: ProcessGroup) -> list[Timed]:
    """Encode, check and tag the outputs of one source, decoding it once
    for all of them (``plan.batches`` groups the tasks); one output's
    failure leaves the others alone."""
    started = time.monotonic()
    source = tasks[0].source
    meta, facts = source_meta(source, settings)
    timeout = settings.timeout if settings.timeout is not None else default_timeout(meta.info.length)
    timed: list[Timed] = [(TaskError("not run"), 0.0)] * len(tasks)
    with ExitStack() as stack:
        placed = []
        branches: list[list[Command]] = []
        head: Command = []
        for i, task in enumerate(tasks):
            codec = codecs.resolve(task.mode)
            options = tuple(settings.options.get(codec.option_family or "", codec.default_options))
            try:
                tmp = stack.enter_context(staged(task.output))
            except TaskError as exc:
                timed[i] = (exc, time.monotonic() - started)
                continue
            head, *branch = codec.commands(source, tmp, meta.info, options)
            placed.append((i, task, codec, tmp))
            branches.append(branch)
        failures, ended = run_fanout(head, branches, timeout, processes) if branches else ([], [])
        for (i, task, codec, tmp), failure, end in zip(placed, failures, ended, strict=True):
            # Its own time: until its encoder ended, plus its own check and tags.
            own = time.monotonic()
            outcome: Outcome | Exception
            try:
                if failure is not None:
                    raise failure
                check_output(codec, tmp, meta)
                note = write_tags(codec, tmp, with_provenance(meta, facts, task), task, settings)
                commit(tmp, task.output)
                outcome = (note, facts)
            except TaskError as exc:
                outcome = exc
            timed[i] = (outcome, end - started + time.monotonic() - own)
    return timed


def retag(task: Task, settings: Settings, processes: ProcessGroup | None = None) -> Outcome:
    """Rewrite the tags and pictures of an existing output from its source,
    without re-encoding: on a copy beside it, renamed over it when done, so
    the output is never seen half-tagged."""
    codec = codecs.resolve(task.mode)
    meta, facts = source_meta(task.source, settings)
    with staged(task.output) as tmp:
        try:
            shutil.copy2(task.output, tmp)
        except OSError as exc:
            raise TaskError(f"cannot copy the output to retag it: {tags.describe_oserror(exc)}") from None
        note = write_tags(codec, tmp, with_provenance(meta, facts, task), task, settings)
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


HANDLERS = {Action.COPY: copy, Action.RETAG: retag, Action.MOVE: move, Action.DELETE: delete}
NOTES = {
    Action.SKIP: "skipped: output exists",
    Action.ORPHAN: "orphan: source gone, output kept (--delete removes it)",
}


def execute(task: Task, settings: Settings, processes: ProcessGroup) -> TaskResult:
    """Run one task to its result; see execute_batch."""
    return execute_batch((task,), settings, processes)[0]


def execute_batch(tasks: Sequence[Task], settings: Settings, processes: ProcessGroup) -> list[TaskResult]:
    """Run tasks to their results, one per task; never raises for a bad file.

    A batch of several tasks is the encodes of one source (``plan.batches``),
    which share one decoder. Raises Interrupted when the run is being
    stopped (the batch then has no result and its temp files are gone).
    """
    first = tasks[0]
    if first.action in NOTES:
        return [TaskResult(first, Status.SKIPPED, first.note or NOTES[first.action], 0, -1.0)]
    started = time.monotonic()
    try:
        if first.action is Action.ENCODE:
            timed = encode(tasks, settings, processes)
        else:
            timed = [(HANDLERS[first.action](first, settings, processes), time.monotonic() - started)]
    except Interrupted:
        raise
    except Exception as exc:  # the source is unreadable (TaskError), or a bug
        timed = [(exc, time.monotonic() - started)] * len(tasks)
    return [settle(task, outcome, elapsed, processes) for task, (outcome, elapsed) in zip(tasks, timed, strict=True)]


def settle(task: Task, outcome: Outcome | Exception, elapsed: float, processes: ProcessGroup) -> TaskResult:
    if isinstance(outcome, TaskError):
        if processes.stopping:
            raise Interrupted()
        return TaskResult(task, Status.FAILED, outcome.message, outcome.returncode, elapsed)
    if isinstance(outcome, Exception):  # a bug must fail one task, not the run
        log.error("internal error on %s (%s)", task.source, task.mode, exc_info=outcome)
        return TaskResult(task, Status.FAILED, f"internal error: {outcome!r}", 1, elapsed)
    note, facts = outcome
    return TaskResult(task, Status.SUCCESS, note, 0, elapsed, facts)
