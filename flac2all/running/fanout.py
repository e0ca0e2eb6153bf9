"""The decoder fan-out: ``Fanout`` starts one decoder and copies its output
to several encoder chains (a source's modes, decoded once), with a watchdog
that kills only the encoder that stopped reading when it can; ``run_fanout``
runs one to each branch's failure and end.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import select
import signal
import threading
import time
from collections.abc import Callable

from flac2all.audio.decoding import Command
from flac2all.errors import TaskError
from flac2all.running import alarms
from flac2all.running.pipeline import Chain, run_pipeline
from flac2all.running.procs import DEVNULL, PIPE, Interrupted, Proc, ProcessGroup, Stdin, pidfd

# PCM is handed from the decoder to the encoders in chunks of this size,
# through pipes enlarged to it (Linux's default 64 KiB makes the encoders of
# one source wait on each other more often). Not larger: a user's pipes share
# a quota (fs.pipe-user-pages-soft, 64 MiB), past which every new pipe of
# theirs, ours or not, gets a tiny buffer; 16 files x 4 modes stay at 20 MiB.
CHUNK = 256 * 1024


def widen(pipe) -> None:
    resize = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only: elsewhere pipes grow by themselves
    if resize is None:
        return
    try:
        fcntl.fcntl(pipe.fileno(), resize, CHUNK)
    except OSError:  # above the user's pipe quota: the default size works too
        pass


Move = Callable[[int, int, int], int]  # (from, to, at most) -> bytes moved; OSError as os.splice


@functools.cache
def tee() -> Move | None:
    """Linux's tee(2): copies what a pipe holds into another pipe without
    taking it out, by reference (the pages are shared, not copied); None
    where libc has none, or where tee or splice is refused (a sandbox's
    system call filter): tried once on a pipe of our own. Python has
    os.splice but no tee: ctypes (loaded on first use; it releases the
    GIL during the call)."""
    if not hasattr(os, "splice"):
        return None
    try:
        import ctypes  # noqa: PLC0415  (3 ms of start-up for the runs that decode)

        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.tee
    except (OSError, AttributeError, ImportError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
    call.restype = ctypes.c_ssize_t

    def move(src: int, dst: int, count: int) -> int:
        while (done := call(src, dst, count, os.SPLICE_F_NONBLOCK)) < 0:
            code = ctypes.get_errno()
            if code != errno.EINTR:
                raise OSError(code, os.strerror(code))
        return done

    first, second = os.pipe(), os.pipe()
    try:
        os.write(first[1], b"pcm")
        works = move(first[0], second[1], 3) == 3 and splice(first[0], second[1], 3) == 3
        works = works and os.read(second[0], 8) == b"pcmpcm"
    except OSError:
        works = False
    finally:
        for fd in (*first, *second):
            os.close(fd)
    return move if works else None


def splice(src: int, dst: int, count: int) -> int:
    """os.splice, without blocking (see ``Fanout.moved``)."""
    return os.splice(src, dst, count, flags=os.SPLICE_F_NONBLOCK)


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
        tap: Callable[[bytes], None] | None = None,
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
        is abandoned (the decoder then dies of SIGPIPE).

        Without a tap the PCM never enters this process: the kernel passes
        it from pipe to pipe (``spliced_round``): 1 s of CD audio to two
        encoders takes 6 us of CPU so, 105 us read and written."""
        fd = self.source.stdout.fileno()
        move = tee() if self.tap is None else None
        readable = select.poll()
        readable.register(fd, select.POLLIN)
        while sinks or not self.chains:  # no branch at all: the tap alone reads it all
            if move is not None:
                readable.poll()  # data, or the end (a watchdog's kill ends it too)
                if not self.spliced_round(fd, sinks, move):
                    break
                continue
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            if self.tap is not None:
                self.tap(chunk)
            for i in list(sinks):
                self.write(sinks, i, chunk)
        for sink in sinks.values():
            sink.close()
        self.source.stdout.close()

    def write(self, sinks: dict[int, object], i: int, chunk: bytes | memoryview) -> None:
        """All of ``chunk`` to sink ``i``, or the sink dropped if its reader is gone."""
        sink = sinks[i]
        view = memoryview(chunk)
        self.blocked_on = i
        try:
            while view:
                view = view[os.write(sink.fileno(), view) :]
        except OSError:  # EPIPE: that encoder is gone (its chain tells why)
            self.drop(sinks, i)
        self.blocked_on = None

    @staticmethod
    def drop(sinks: dict[int, object], i: int) -> None:
        sinks.pop(i).close()

    def spliced_round(self, fd: int, sinks: dict[int, object], move: Move) -> bool:
        """What the head's pipe holds now (up to CHUNK) to every sink,
        without reading it: tee to all but the last sink, then splice (which
        takes it out of the pipe) to the last. A sink that took only part
        of the round gets the rest written from a copy. False at the end of
        the head's output."""
        *teed, last = sinks
        size = CHUNK
        took: dict[int, int] = {}
        for i in teed:
            done = self.moved(move, fd, sinks, i, size)
            if done == 0:
                return False
            if done is not None:
                size = done if not took else size  # the round: what the first sink took
                took[i] = done
        if not took:  # one sink left
            return self.moved(splice, fd, sinks, last, CHUNK) != 0
        if any(done < size for done in took.values()):
            chunk = read_exactly(fd, size)
            for i, done in took.items():
                if done < size and i in sinks:
                    self.write(sinks, i, memoryview(chunk)[done:])
            if last in sinks:
                self.write(sinks, last, chunk)
            return True
        left = size
        while left:
            done = self.moved(splice, fd, sinks, last, left)
            if done is None:  # the last sink is gone: take what the others got out of the pipe
                read_exactly(fd, left)
                break
            left -= done
        return True

    def moved(self, move: Move, fd: int, sinks: dict[int, object], i: int, count: int) -> int | None:
        """Bytes ``move`` passed from the head's pipe to sink ``i`` (0: the
        head's output has ended), waiting while that sink's pipe is full (a
        wait the watchdog blames on that sink alone); None if the sink was
        dropped (its reader is gone). Called only when the head's pipe holds
        data or has ended, so a wait is never one for the decoder."""
        out = sinks[i].fileno()
        while True:
            try:
                return move(fd, out, count)
            except OSError as exc:
                if exc.errno != errno.EAGAIN:  # EPIPE: that encoder is gone (its chain tells why)
                    self.drop(sinks, i)
                    return None
            self.blocked_on = i
            try:
                writable = select.poll()
                writable.register(out, select.POLLOUT)
                writable.poll()
            finally:
                self.blocked_on = None

    def timed_out(self, i: int) -> TaskError:
        return TaskError(f"{self.expired[i]} timed out after {self.timeout:g} s", -signal.SIGKILL)

    def run(self) -> list[TaskError | None]:
        try:
            failures = self.start()
            self.pump({i: chain.stdin for i, chain in enumerate(self.chains, start=1) if chain.procs})
            self.wait_all()
            return self.outcome(failures)
        finally:
            self.end()

    def outcome(self, failures: list[TaskError | None]) -> list[TaskError | None]:
        """Each branch's failure once all have ended: its own at the start
        (``failures``), else the head's time-out or failure, else its own."""
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

    def end(self) -> None:
        """The watchdog cancelled (never re-armed), every process reaped."""
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
        unwatched: dict[Proc, int] = {}  # where there is no pidfd: looked at every 10 ms
        poller = select.poll()
        try:
            # The branches only: when the head ended is of no use (it is
            # waited for below), and a wake-up less a source counts on
            # runs of short files.
            for i, chain in enumerate(self.chains, start=1):
                for proc in chain.procs:
                    fd = pidfd(proc.pid)
                    if fd is None:
                        unwatched[proc] = i
                        continue
                    watched[fd] = i
                    poller.register(fd, select.POLLIN)
            while watched or unwatched:
                for fd, _ in poller.poll(10 if unwatched else None):
                    ends[watched.pop(fd)] = time.monotonic()  # the chain's last process wins
                    poller.unregister(fd)
                    os.close(fd)
                for proc in [p for p in unwatched if p.poll() is not None]:
                    ends[unwatched.pop(proc)] = time.monotonic()
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
        failures = self.start_chains(self.chains)
        self.arm()
        return failures

    @staticmethod
    def start_chains(chains: list[Chain]) -> list[TaskError | None]:
        """Start each of ``chains`` reading a pipe (a missing encoder fails its own)."""
        failures: list[TaskError | None] = []
        for chain in chains:
            try:
                chain.start(stdin=PIPE)
                widen(chain.stdin)
                failures.append(None)
            except TaskError as exc:
                chain.close()
                chain.procs.clear()
                failures.append(exc)
        return failures


def read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes a pipe is known to hold (fewer only at its end)."""
    parts = []
    while size and (part := os.read(fd, size)):
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def run_fanout(
    head: Command,
    branches: list[list[Command]],
    timeout: float,
    processes: ProcessGroup,
    stdin: Stdin = DEVNULL,
    tap: Callable[[bytes], None] | None = None,
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
