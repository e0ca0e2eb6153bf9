"""Pipelines: ``Chain`` is ``stage0 | stage1 | ...`` as started processes,
each stage's stderr kept in a reused file (``StderrFiles``); a failing
chain blames the stage that failed first, never one that died of the broken
pipe behind it (``blame``). ``run_pipeline`` runs one to its end.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import tempfile
import threading
import time
from typing import IO

from flac2all import tools
from flac2all.audio.decoding import Command
from flac2all.errors import TaskError, describe_oserror
from flac2all.running.blame import blame, blocked_writing, only_pipe_symptoms, read_tail
from flac2all.running.procs import DEVNULL, PIPE, Interrupted, Proc, ProcessGroup, Stdin

log = logging.getLogger("flac2all")


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
                raise TaskError(f"{argv[0]} is not installed ({tools.install_hint([argv[0]])})", 127) from None
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
