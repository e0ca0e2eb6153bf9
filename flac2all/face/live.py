"""The live display on a terminal (rich): the status line and the files in
progress, one line each, redrawn for the terminal's width."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from flac2all.face.drawing import file_lines, status
from flac2all.face.pace import Pace, weights
from flac2all.face.plain import Hosts, SameCause, report_failure
from flac2all.lines import line_for, relative
from flac2all.model import HostRow, Job, Status, Task, TaskResult
from flac2all.skips import Skip


class View:
    """A renderable that draws itself for the width (and height) it is
    given at each refresh."""

    def __init__(self, draw: Callable[[int, int], list]) -> None:
        self.draw = draw

    def __rich_console__(self, console, options):
        yield from self.draw(options.max_width, options.height or console.size.height)


class RichDisplay:
    """The live status line and the files in progress, one line each."""

    screen = False

    def __init__(self, out: TextIO = sys.stdout) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        self.out = out
        self.console = Console(file=out)
        self.Text = Text
        self.hosts: Hosts = list
        self.pace = Pace(0, Path(), (), time.monotonic())
        self.planning = False  # the plan is made as the walk goes, and it goes on
        self.same_cause = SameCause(self.failed)
        # Set by a signal that stops the run: the live line says so (a
        # message written under it would break its redraws).
        self.stopping: threading.Event | None = None
        self.live = Live(
            get_renderable=lambda: View(self.draw),
            console=self.console,
            refresh_per_second=4,
            screen=self.screen,
            redirect_stdout=not self.screen,
            redirect_stderr=False,
        )

    def begin(self, total: int, hosts: Hosts, root: Path = Path(), jobs: Sequence[Job] = ()) -> None:
        self.hosts = hosts
        self.pace = Pace(total, root, jobs, time.monotonic())
        self.live.start(refresh=True)

    def started(self, task: Task) -> None:
        self.pace.started(task, time.monotonic())

    def grow(self, total: int, jobs: Sequence[Job], planning: bool) -> None:
        """More tasks planned: the count's total grows; no ETA while the
        walk goes on (the work left is not known)."""
        pace = self.pace
        with pace.lock:
            pace.total = total
            more = weights(jobs)
            pace.weight.update(more)
            pace.work_left += sum(more.values())
        self.planning = planning

    def finished(self, result: TaskResult) -> None:
        self.pace.finished(result, time.monotonic())
        if result.status is Status.FAILED:
            self.same_cause.add(result)
        else:
            self.same_cause.flush()

    def failed(self, result: TaskResult) -> None:
        task = result.task
        self.failure(f"FAILED  {task.mode:<8} {relative(task.source, self.pace.root)}: {result.message}")
        report_failure(line_for(result), self.out)

    def skipped(self, skips: Sequence[Skip]) -> None:
        self.same_cause.flush()
        with self.pace.lock:
            self.pace.done += len(skips)

    def failure(self, line: str) -> None:
        self.console.print(self.Text(line, style="red"))

    def host_rows(self) -> list[HostRow]:
        try:
            return self.hosts()
        except Exception:  # a display must never take the run down
            return []

    def draw(self, width: int, height: int) -> list:
        now = time.monotonic()
        procs = sum(row.processes for row in self.host_rows())
        if self.stop_asked():
            line = status(self.pace, procs, now, width, label="Stopping: ending the encoders", eta=False)
        elif self.planning:
            line = status(self.pace, procs, now, width, label="Converting (planning)", eta=False)
        else:
            line = status(self.pace, procs, now, width)
        return [line, *file_lines(self.pace.in_progress(), width, height - 1)]

    def stop_asked(self) -> bool:
        return self.stopping is not None and self.stopping.is_set()

    def end(self) -> None:
        self.same_cause.flush()
        self.pace.end(time.monotonic())
        # Stopped before the end (Ctrl-C, a full disk): the last progress
        # line would stand stale above the summary, which says what ran.
        self.live.transient = self.pace.done < self.pace.total
        self.live.stop()
