"""The terminal is optional: the Display protocol the engine talks to, the
silent display (library use), and the guard that switches a display off when
its output is gone (a closed terminal, a closed pipe), so that the run goes
on and writes its log."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from flac2all.model import HostRow, Job, Task, TaskResult
from flac2all.skips import Skip

log = logging.getLogger("flac2all")


class Display(Protocol):
    def begin(self, total: int, hosts: Callable[[], list[HostRow]], root: Path, jobs: Sequence[Job]) -> None: ...
    def started(self, task: Task) -> None: ...
    def finished(self, result: TaskResult) -> None: ...
    def end(self) -> None: ...

    # Optional (a plan made as the walk goes): the tasks planned so far,
    # the jobs planned since, whether planning goes on.
    # def grow(self, total: int, jobs: Sequence[Job], planning: bool) -> None: ...
    # Optional (each is ``finished`` with its result otherwise): outputs up to date.
    # def skipped(self, skips: Sequence[Skip]) -> None: ...


class Silent:
    """The display for library use: shows nothing."""

    def begin(self, total: int, hosts: Callable[[], list[HostRow]], root: Path, jobs: Sequence[Job]) -> None:
        pass

    def started(self, task: Task) -> None:
        pass

    def finished(self, result: TaskResult) -> None:
        pass

    def end(self) -> None:
        pass

    def grow(self, total: int, jobs: Sequence[Job], planning: bool) -> None:
        pass

    def skipped(self, skips: Sequence[Skip]) -> None:
        pass


def silence(fd: int) -> None:
    """Point ``fd`` (stdout, stderr) at /dev/null: what it was connected to
    is gone (a closed terminal, a reader that quit), and every later write,
    ours or a library's, must succeed without effect."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def standard_streams() -> set[int]:
    """Standard streams our caller closed (``1>&-`` in a script): /dev/null
    in their place, so that no file we open takes their number, and
    nothing we print fails (Python has left them None). Returns the
    descriptors that were closed."""
    closed = set()
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 (the interpreter's, for good)
    return closed


class Guarded:
    """A display that cannot take the run down: the first OSError from it
    (EIO from a closed terminal, EPIPE from a closed pipe) switches it off,
    points stdout at /dev/null, and the run goes on to write its log."""

    def __init__(self, inner: Display) -> None:
        self.inner = inner
        self.off = False

    def call(self, method: str, *args) -> None:
        if self.off:
            return
        try:
            getattr(self.inner, method)(*args)
        except OSError:
            self.off = True
            silence(1)
            log.warning("the display's output is gone; going on without it")
            with contextlib.suppress(OSError):
                self.inner.end()

    def begin(self, total: int, hosts: Callable[[], list[HostRow]], root: Path, jobs: Sequence[Job]) -> None:
        self.call("begin", total, hosts, root, jobs)

    def started(self, task: Task) -> None:
        self.call("started", task)

    def finished(self, result: TaskResult) -> None:
        self.call("finished", result)

    def end(self) -> None:
        self.call("end")

    def grow(self, total: int, jobs: Sequence[Job], planning: bool) -> None:
        """The plan grew (a display without ``grow`` keeps its first total)."""
        if hasattr(self.inner, "grow"):
            self.call("grow", total, jobs, planning)

    def skipped(self, skips: Sequence[Skip]) -> None:
        """Outputs up to date: at once, or as results one by one to a
        display without ``skipped``."""
        if hasattr(self.inner, "skipped"):
            self.call("skipped", skips)
            return
        for skip in skips:
            self.finished(skip.result())
