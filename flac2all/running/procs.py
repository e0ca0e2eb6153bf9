"""Process plumbing: the only module that starts encoder processes.

``ProcessGroup`` holds every process a run has started (``stop()`` kills
them all: Ctrl-C, SIGTERM, a cluster shutdown); ``Chain`` is a pipeline of
started processes; ``Fanout`` is one decoder whose output is copied to
several encoder chains. A failing pipeline blames the stage that failed
first, never one that died of the broken pipe behind it (``blame``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import select
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import IO

from flac2all import tools
from flac2all.errors import TaskError, describe_oserror
from flac2all.running import alarms, reaper
from flac2all.running.blame import blame, only_pipe_symptoms, read_tail

log = logging.getLogger("flac2all")

Command = list[str]
DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
Stdin = int | IO[bytes] | None  # what a pipeline's first stage reads: None (nothing), or an open file
Tap = Callable[[bytes], None]  # sees every chunk of the decoder's output (pcm.Tap)


# Reset in every program we start: Python ignores these two, and an encoder
# must die of SIGPIPE when its reader is gone (blame), as from a shell.
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


class Proc:
    """A started program: the part of ``subprocess.Popen`` the runner uses.

    Started with ``os.posix_spawn`` (a vfork and an exec, no Python in the
    child), in a session of its own: the terminal's Ctrl-C reaches only us,
    and ``killpg`` ends it and whatever it started. Only the three standard
    streams are passed on (every file Python opens is close-on-exec, and
    ``not_inherited`` closes on exec what we were given).
    """

    __slots__ = ("pid", "returncode", "stdin", "stdout", "_lock")

    def __init__(self, pid: int, stdin: IO[bytes] | None, stdout: IO[bytes] | None) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.stdin = stdin  # the write end of its stdin, when that is PIPE
        self.stdout = stdout  # the read end of its stdout, when that is PIPE
        self._lock = threading.Lock()  # one waitpid at a time

    @classmethod
    def spawn(cls, program: str, argv: list[str], env, stdin: Stdin, stdout: Stdin, stderr: Stdin) -> Proc:
        """Start ``argv`` (``program`` its path); each stream is DEVNULL (or
        None), PIPE, or an open file or descriptor."""
        actions: list[tuple] = []
        ours: list[IO[bytes] | None] = [None, None]  # our ends of its stdin/stdout pipes
        theirs: list[int] = []  # descriptors to close here once it is started
        try:
            for target, spec in enumerate((stdin, stdout, stderr)):
                if spec is None or spec == DEVNULL:
                    flags = os.O_RDONLY if target == 0 else os.O_WRONLY
                    actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, flags, 0))
                    continue
                if spec == PIPE:
                    read_end, write_end = os.pipe()
                    mine, spec = (write_end, read_end) if target == 0 else (read_end, write_end)
                    theirs.append(spec)
                    ours[target] = open(mine, "wb" if target == 0 else "rb", buffering=0)  # noqa: SIM115
                fd = spec if isinstance(spec, int) else spec.fileno()
                if fd <= 2:  # dup2 onto itself would leave it close-on-exec: a copy above 2
                    fd = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
                    theirs.append(fd)
                actions.append((os.POSIX_SPAWN_DUP2, fd, target))
            pid = os.posix_spawn(program, argv, env, file_actions=actions, setsid=True, setsigdef=DEFAULT_SIGNALS)
        except BaseException:
            for f in ours:
                if f is not None:
                    f.close()
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        return cls(pid, ours[0], ours[1])

    def poll(self) -> int | None:
        """Its exit status if it has ended (reaped now), else None."""
        if self.returncode is None and self._lock.acquire(blocking=False):
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                pass
            finally:
                self._lock.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status (negative: the signal that killed it), once it
        has ended; TimeoutError if it still runs after ``timeout`` seconds."""
        if self.returncode is None and timeout is not None and not self._ends_within(timeout):
            raise TimeoutError(f"{self.pid} still runs")
        with self._lock:
            if self.returncode is None:
                try:
                    self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
                except ChildProcessError:  # reaped by someone else: how it ended is lost
                    self.returncode = 255
        return self.returncode

    def _ends_within(self, timeout: float) -> bool:
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:  # no pidfd (an old kernel): look every 10 ms
            deadline = time.monotonic() + timeout
            while self.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            return self.returncode is not None
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(max(0, math.ceil(timeout * 1000))))
        finally:
            os.close(fd)


def not_inherited() -> None:
    """Make close-on-exec whatever descriptor we were given open beyond
    the standard three (by cron, a shell, a wrapper script): ``Proc``
    passes on all that are not, and an encoder holding, say, a pipe of our
    caller's would keep that caller waiting."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in names:
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # the listing's own descriptor, closed by now
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)


class Interrupted(Exception):
    """The run is being stopped; the task has no result."""


class ProcessGroup:
    """Every process the runner has started and not yet reaped.

    ``stop()`` kills them all and refuses new ones: that is how Ctrl-C,
    SIGTERM and a cluster shutdown end the encoders at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[Proc] = set()
        self.stopping = False
        reaper.refresh()  # a new run: the environment as it is now
        not_inherited()

    def start(self, argv: list[str], stdin: Stdin = DEVNULL, stdout: Stdin = DEVNULL, stderr: Stdin = None) -> Proc:
        program = tools.which(argv[0])
        if program is None:
            raise FileNotFoundError(argv[0])
        # Killed with us even when we are killed with SIGKILL (reaper): no
        # encoder outlives the run to write into a folder after we are gone.
        env = reaper.environment()
        with self._lock:
            if self.stopping:
                raise Interrupted()
            proc = Proc.spawn(program, argv, env, stdin, stdout, stderr)
            self._procs.add(proc)
            return proc

    def kill(self, proc: Proc) -> None:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def reap(self, proc: Proc) -> None:
        self.kill(proc)
        proc.wait()
        with self._lock:
            self._procs.discard(proc)

    def running(self) -> int:
        """How many of its processes run (started, not yet reaped)."""
        return len(self._procs)

    def stop(self) -> None:
        with self._lock:
            self.stopping = True
            procs = list(self._procs)
        for proc in procs:
            self.kill(proc)


class StderrFiles:
    """Files for the stages' stderr, on disk (a chatty encoder's megabytes
    take no memory), emptied and reused rather than made and dropped for
    each stage: under the encoders' disk load, making and dropping a temp
    file took 0.2 ms of our CPU, three a source, a sixth of our CPU per
    source on runs of short files; emptying one takes 2 us."""

    KEEP = 64  # at most this many kept for reuse

    def __init__(self) -> None:
        self._free: list[IO[bytes]] = []
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._free.clear)  # the parent's: not ours to reuse

    def take(self) -> IO[bytes]:
        with self._lock:
            if self._free:
                return self._free.pop()
        return tempfile.TemporaryFile()

    def give(self, errfile: IO[bytes]) -> None:
        """Back for reuse, emptied (its stage has been reaped)."""
        try:
            errfile.seek(0)
            errfile.truncate()
        except OSError:
            errfile.close()
            return
        with self._lock:
            if len(self._free) < self.KEEP:
                self._free.append(errfile)
                return
        errfile.close()


STDERR_FILES = StderrFiles()


def blocked_writing(pid: int) -> bool:
    """Whether the process sleeps in a write to a full pipe (its wchan)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return "pipe_write" in f.read()
    except OSError:
        return False


class Chain:
    """``stage0 | stage1 | ...`` as started processes, with each stage's
    stderr kept in a file (``StderrFiles``); ``close()`` kills and reaps what
    is left."""

    def __init__(self, stages: list[Command], processes: ProcessGroup) -> None:
        self.stages = stages
        self.processes = processes
        self.procs: list[Proc] = []
        self.errfiles: list = []
        self._stderrs: list[str] | None = None

    def start(self, stdin: Stdin = DEVNULL, stdout: int = DEVNULL) -> None:
        """Start every stage; ``stdin``/``stdout`` of the chain may be PIPE
        (then ``self.stdin``/``self.stdout`` are their file objects)."""
        upstream = DEVNULL if stdin is None else stdin
        for i, argv in enumerate(self.stages):
            errfile = STDERR_FILES.take()
            self.errfiles.append(errfile)
            last = i == len(self.stages) - 1
            try:
                proc = self.processes.start(argv, upstream, stdout if last else PIPE, errfile)
            except FileNotFoundError:
                package = tools.package_of(argv[0])
                raise TaskError(f"{argv[0]} is not installed (Debian package: {package})", 127) from None
            except OSError as exc:  # not executable, a folder, not a program (ENOEXEC)
                raise TaskError(f"cannot run {tools.which(argv[0]) or argv[0]}: {describe_oserror(exc)}", 126) from None
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
        for proc in self.procs:
            try:
                proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise TaskError(f"{self.stalled()} timed out after {timeout:g} s", -signal.SIGKILL) from None

    def stalled(self) -> str:
        """The program that holds the chain up: the first stage still running
        that is not merely waiting for the next one to read what it wrote (a
        decoder blocked on a full pipe is not the one that hung)."""
        running = [(argv[0], proc) for argv, proc in zip(self.stages, self.procs, strict=False) if proc.poll() is None]
        for (program, proc), later in zip(running, running[1:] + [None], strict=True):
            if later is None or not blocked_writing(proc.pid):
                return program
        return self.stages[0][0]

    def stderrs(self) -> list[str]:
        """What each stage said (the tail), once they have all ended."""
        if self._stderrs is None:
            self._stderrs = [read_tail(f) for f in self.errfiles[: len(self.procs)]]
        return self._stderrs

    def failure(self) -> TaskError | None:
        """Why the chain failed (``blame``), or None if it did not."""
        codes = [p.returncode for p in self.procs]
        failure = blame([argv[0] for argv in self.stages[: len(codes)]], codes, self.stderrs())
        if failure is not None:
            for argv, code, stderr in zip(self.stages, codes, self.stderrs(), strict=False):
                log.debug("%s -> %s\n%s", shlex.join(argv), code, stderr)
        return failure

    @property
    def broken_pipe(self) -> bool:
        """Whether the chain failed only because its reader was gone."""
        return only_pipe_symptoms([p.returncode for p in self.procs], self.stderrs())

    def close(self) -> None:
        for proc in self.procs:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
            self.processes.reap(proc)
        errfiles, self.errfiles = self.errfiles, []  # (a chain may be closed twice: given back once)
        for errfile in reversed(errfiles):  # the next chain's first stage takes this one's first file
            STDERR_FILES.give(errfile)


def run_pipeline(stages: list[Command], timeout: float, processes: ProcessGroup, stdin: Stdin = DEVNULL) -> None:
    """Run ``stage0 | stage1 | ...`` (the first reading ``stdin``); raise
    TaskError unless every stage exits 0 within ``timeout`` seconds."""
    chain = Chain(stages, processes)
    try:
        chain.start(stdin=stdin)
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

    def __init__(
        self,
        head: Command,
        branches: list[list[Command]],
        timeout: float,
        processes: ProcessGroup,
        stdin: Stdin = DEVNULL,
        tap: Tap | None = None,
    ):
        self.timeout = timeout
        self.processes = processes
        self.stdin = stdin
        self.tap = tap
        self.source = Chain([head], processes)
        self.chains = [Chain(branch, processes) for branch in branches]
        self.expired: dict[int, str] = {}  # chain index (0 = head) -> program that ran out of time
        self.blocked_on: int | None = None  # the chain index the copy is writing to
        self.watchdog: alarms.Alarm | None = None
        self.lock = threading.Lock()
        self.finished = False
        self.ended: list[float] = []  # per branch, when it ended (time.monotonic)

    @property
    def everyone(self) -> list[Chain]:
        return [self.source, *self.chains]

    def arm(self) -> None:
        if self.finished:
            return
        self.watchdog = alarms.after(self.timeout, self.expire)

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
            if self.tap is not None:
                self.tap(chunk)
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
            if head_failure is not None and not self.source.broken_pipe:
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
        self.source.start(stdin=self.stdin, stdout=PIPE)
        widen(self.source.stdout)
        failures: list[TaskError | None] = []
        for chain in self.chains:
            try:
                chain.start(stdin=PIPE)
                widen(chain.stdin)
                failures.append(None)
            except TaskError as exc:
                chain.close()
                chain.procs.clear()
                failures.append(exc)
        self.arm()
        return failures


def run_fanout(
    head: Command,
    branches: list[list[Command]],
    timeout: float,
    processes: ProcessGroup,
    stdin: Stdin = DEVNULL,
    tap: Tap | None = None,
) -> tuple[list[TaskError | None], list[float]]:
    """Run ``head | branch`` for every branch, decoding once (Fanout); the
    head reads ``stdin``, and ``tap`` sees all it writes.

    Returns each branch's failure (None where it succeeded) and when it
    ended. A failing head fails every branch; one failing branch leaves the
    others alone.
    """
    if len(branches) == 1 and tap is None:  # a plain pipe, no copy
        try:
            run_pipeline([head, *branches[0]], timeout, processes, stdin)
        except TaskError as exc:
            return [exc], [time.monotonic()]
        return [None], [time.monotonic()]
    fanout = Fanout(head, branches, timeout, processes, stdin, tap)
    return fanout.run(), fanout.ended
