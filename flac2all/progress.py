"""What the user sees while a run goes: a live display on a terminal (rich),
one plain line per finished task otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from flac2all.model import Status, Task, TaskResult
from flac2all.report import printable


class PlainDisplay:
    """One line per finished task; for logs, pipes and cron mail."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out

    def begin(self, total: int) -> None:
        print(f"Converting: {total} task(s)", file=self.out, flush=True)

    def started(self, task: Task) -> None:
        pass

    def finished(self, result: TaskResult) -> None:
        print(line_for(result), file=self.out, flush=True)

    def end(self) -> None:
        pass


def line_for(result: TaskResult) -> str:
    task = result.task
    if result.status is Status.FAILED:
        return f"FAILED  {task.mode:<8} {printable(task.source)}: {result.message}"
    word = "SKIPPED" if result.status is Status.SKIPPED else "OK"
    return f"{word:<7} {task.mode:<8} {printable(task.source)} -> {printable(task.output)}"


class RichDisplay:
    """A live progress bar with counts, rate, ETA and the files in progress."""

    def __init__(self) -> None:
        from rich.console import Console, Group
        from rich.live import Live
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.text import Text

        self.console = Console()
        self.Text = Text
        self.progress = Progress(
            TextColumn("[bold]Converting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.running: dict[int, Task] = {}
        self.current = Text()
        self.live = Live(Group(self.progress, self.current), console=self.console, refresh_per_second=4)
        self.failed = 0
        self.done = 0
        self.t0 = time.monotonic()

    def begin(self, total: int) -> None:
        self.bar = self.progress.add_task("", total=total, failed=0, rate="")
        self.live.start()

    def started(self, task: Task) -> None:
        self.running[id(task)] = task
        self.show_running()

    def finished(self, result: TaskResult) -> None:
        self.running.pop(id(result.task), None)
        self.done += 1
        if result.status is Status.FAILED:
            self.failed += 1
            self.console.print(self.Text(line_for(result), style="red"))
        elapsed = time.monotonic() - self.t0
        rate = f"{self.done / elapsed:.1f} tasks/s" if elapsed > 0 else ""
        self.progress.update(self.bar, advance=1, failed=self.failed, rate=rate)
        self.show_running()

    def show_running(self) -> None:
        names = [f"  {t.mode:<8} {printable(t.source.name)}" for t in self.running.values()]
        self.current.plain = "\n".join(names)

    def end(self) -> None:
        self.current.plain = ""
        self.live.stop()


def make_display(out: TextIO = sys.stdout) -> PlainDisplay | RichDisplay:
    return RichDisplay() if out.isatty() else PlainDisplay(out)
