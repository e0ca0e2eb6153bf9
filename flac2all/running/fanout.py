"""The decoder fan-out: ``Fanout`` starts one decoder and copies its output
to several encoder chains (a source's modes, decoded once), with a watchdog
that kills only the encoder that stopped reading when it can; ``run_fanout``
runs one to each branch's failure and end.
"""

from __future__ import annotations

import fcntl
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
from flac2all.running.procs import DEVNULL, PIPE, Interrupted, ProcessGroup, Stdin

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
