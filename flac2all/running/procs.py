"""Process start: the only module that starts encoder processes.

``Proc`` is one program started with ``os.posix_spawn`` in a session of its
own, passed the standard three descriptors and nothing else
(``not_inherited``); ``ProcessGroup`` holds every process a run has started
(``stop()`` kills them all: Ctrl-C, SIGTERM, a cluster shutdown). Pipelines
of them are ``pipeline.Chain``; one decoder feeding several encoders is
``fanout.Fanout``.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import resource
import select
import signal
import subprocess
import threading
import time
from typing import IO

from flac2all import tools
from flac2all.running import reaper

DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
Stdin = int | IO[bytes] | None  # what a pipeline's first stage reads: None (nothing), or an open file


# Reset in every program we start: Python ignores these two, and an encoder
# must die of SIGPIPE when its reader is gone (blame), as from a shell.
DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)

# How posix_spawn puts a program in a group of its own: a session where the
# system's posix_spawn can start one, else a process group, which killpg and
# the terminal's Ctrl-C (sent to the foreground group only) treat the same.
SETSID = {"setsid": True}


class Proc:
    """A started program: the part of ``subprocess.Popen`` the runner uses.

    Started with ``os.posix_spawn`` (a vfork and an exec, no Python in the
    child), in a session (or process group: ``spawn``) of its own: the
    terminal's Ctrl-C reaches only us, and ``killpg`` ends it and whatever
    it started. Only the three standard streams are passed on (every file Python opens is close-on-exec, and
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
            pid = spawn(program, argv, env, actions)
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
                    reaper.ended(pid)
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
                reaper.ended(self.pid)
        return self.returncode

    def _ends_within(self, timeout: float) -> bool:
        fd = pidfd(self.pid)
        if fd is None:  # look every 10 ms
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


def spawn(program: str, argv: list[str], env, actions: list[tuple]) -> int:
    """``os.posix_spawn`` in a session of its own (``SETSID``), or a
    process group of its own where the system's posix_spawn cannot start
    a session."""
    global SETSID
    try:
        return os.posix_spawn(program, argv, env, file_actions=actions, setsigdef=DEFAULT_SIGNALS, **SETSID)
    except NotImplementedError:
        if "setpgroup" in SETSID:
            raise
    SETSID = {"setpgroup": 0}
    return os.posix_spawn(program, argv, env, file_actions=actions, setsigdef=DEFAULT_SIGNALS, **SETSID)


def pidfd(pid: int) -> int | None:
    """A descriptor that polls readable when process ``pid`` ends (Linux's
    pidfd); None where there is none (FreeBSD, an old kernel): the caller
    then looks at the process every few milliseconds."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return opener(pid)
    except OSError:
        return None


def open_descriptors() -> list[int]:
    """The descriptors this process has open: listed where the system
    lists them (Linux's /proc, FreeBSD's /dev/fd with fdescfs), else every
    number below the descriptor limit that is open."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(listing)
        except OSError:
            continue
        if len(names) > 3 or listing == "/proc/self/fd":  # without fdescfs /dev/fd shows 0-2 only
            return [int(name) for name in names]
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY:
        limit = os.sysconf("SC_OPEN_MAX")
    opened = []
    for fd in range(limit):
        with contextlib.suppress(OSError):
            os.fstat(fd)
            opened.append(fd)
    return opened


def not_inherited() -> None:
    """Make close-on-exec whatever descriptor we were given open beyond
    the standard three (by cron, a shell, a wrapper script): ``Proc``
    passes on all that are not, and an encoder holding, say, a pipe of our
    caller's would keep that caller waiting."""
    for fd in open_descriptors():
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
            reaper.started(proc.pid)
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
