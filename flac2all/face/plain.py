"""One plain line per finished task, for logs, pipes and cron mail; and how
every display shows a failure: on stderr too, and the failures of one
source for one cause as one."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from flac2all.lines import line_for, skip_line
from flac2all.model import HostRow, Job, Status, Task, TaskResult
from flac2all.skips import Skip


def same_file(a: TextIO, b: TextIO) -> bool:
    """Whether two streams write to the same file or terminal."""
    try:
        sa, sb = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def report_failure(line: str, out: TextIO) -> None:
    """A failure also goes to stderr (cron mails it apart), unless stderr
    is where ``out`` goes already."""
    if not same_file(out, sys.stderr):
        try:
            print(line, file=sys.stderr, flush=True)
        except OSError:
            pass


Hosts = Callable[[], list[HostRow]]


class SameCause:
    """Failures of one source for one cause, as they come one after the
    other (every mode of a source its decoder failed on), held and shown
    as one result whose mode names them all (``mp3,opus``)."""

    def __init__(self, show: Callable[[TaskResult], None]) -> None:
        self.show = show
        self.held: TaskResult | None = None

    def add(self, result: TaskResult) -> None:
        held = self.held
        if held is not None and (held.task.source, held.message) == (result.task.source, result.message):
            self.held = replace(held, task=replace(held.task, mode=f"{held.task.mode},{result.task.mode}"))
            return
        self.flush()
        self.held = result

    def flush(self) -> None:
        if self.held is not None:
            held, self.held = self.held, None
            self.show(held)


class PlainDisplay:
    """One line per finished task; for logs, pipes and cron mail, with the
    paths below INPUTDIR and OUTDIR (``roots``) as the live display shows
    them (a failure's line on stderr, read apart, names them whole). Quiet:
    failures only."""

    def __init__(self, out: TextIO = sys.stdout, quiet: bool = False, roots: tuple[Path, Path] | None = None) -> None:
        self.out = out
        self.quiet = quiet
        self.roots = roots or (None, None)
        self.same_cause = SameCause(self.failed)
        self.planning = self.begun = False  # (grow: a plan made as the walk goes)

    def begin(self, total: int, hosts: Hosts, root: Path = Path(), jobs: Sequence[Job] = ()) -> None:
        self.begun = True
        # Nothing to convert (outputs up to date, orphans, moves): no heading;
        # the lines and the summary say what was done.
        if not self.quiet and (jobs or self.planning):
            more = " so far; planning goes on while converting" if self.planning else ""
            print(f"Converting: {total} task(s){more}", file=self.out, flush=True)

    def started(self, task: Task) -> None:
        pass

    def grow(self, total: int, jobs: Sequence[Job], planning: bool) -> None:
        """The total, once planning that went on while converting is over."""
        was, self.planning = self.planning, planning
        if was and not planning and self.begun and not self.quiet:
            print(f"Planned: {total} task(s) in all", file=self.out, flush=True)

    def finished(self, result: TaskResult) -> None:
        if result.status is Status.FAILED:
            self.same_cause.add(result)
            return
        self.same_cause.flush()
        if not self.quiet:
            print(line_for(result, *self.roots), file=self.out, flush=True)

    def failed(self, result: TaskResult) -> None:
        if self.quiet:  # for cron: failures on stderr only, the run's one line on stdout
            with contextlib.suppress(OSError):
                print(line_for(result), file=sys.stderr, flush=True)
            return
        report_failure(line_for(result), self.out)
        print(line_for(result, *self.roots), file=self.out, flush=True)

    def skipped(self, skips: Sequence[Skip]) -> None:
        """``finished``'s lines for outputs up to date, written in pieces
        (a no-op re-run has a million: one write each was a tenth of it)."""
        self.same_cause.flush()
        if self.quiet:
            return
        for start in range(0, len(skips), SKIP_LINES):
            chunk = skips[start : start + SKIP_LINES]
            self.out.write("".join(skip_line(s.mode, s.output, self.roots[1]) + "\n" for s in chunk))
            self.out.flush()

    def end(self) -> None:
        self.same_cause.flush()


SKIP_LINES = 2000  # a piece of PlainDisplay.skipped
