"""What the user sees while a run goes: a live display on a terminal (rich),
one plain line per finished task otherwise."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from flac2all.model import HostRow, Status, Task, TaskResult
from flac2all.report import line_for, printable


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


class PlainDisplay:
    """One line per finished task; for logs, pipes and cron mail. Quiet:
    failures only."""

    def __init__(self, out: TextIO = sys.stdout, quiet: bool = False) -> None:
        self.out = out
        self.quiet = quiet

    def begin(self, total: int, hosts: Callable[[], list[HostRow]]) -> None:
        if not self.quiet:
            print(f"Converting: {total} task(s)", file=self.out, flush=True)

    def started(self, task: Task) -> None:
        pass

    def finished(self, result: TaskResult) -> None:
        failed = result.status is Status.FAILED
        if failed:
            report_failure(line_for(result), self.out)
        if failed or not self.quiet:
            print(line_for(result), file=self.out, flush=True)

    def end(self) -> None:
        pass


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

    def begin(self, total: int, hosts: Callable[[], list[HostRow]]) -> None:
        self.hosts = hosts
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
            report_failure(line_for(result), sys.stdout)
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


class Dashboard(RichDisplay):
    """-C/--curses: the progress bar plus a table of worker hosts: their
    processes, tasks done, rate and current files, as the executor reports
    them (in local mode the one host is this one)."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Group
        from rich.live import Live

        self.live = Live(
            get_renderable=lambda: Group(self.progress, self.table()),
            console=self.console,
            refresh_per_second=4,
            screen=False,
        )

    def table(self):
        from rich.table import Table

        table = Table(expand=True, show_edge=False, pad_edge=False)
        for column in ("host", "procs", "done", "tasks/s", "current files"):
            table.add_column(column, no_wrap=column != "current files", overflow="ellipsis")
        try:
            rows = self.hosts()
        except Exception:  # a display must never take the run down
            rows = []
        for row in rows:
            table.add_row(
                row.host, str(row.processes), str(row.done), f"{row.rate:.1f}", printable(", ".join(row.current))
            )
        return table


def make_display(out: TextIO = sys.stdout, dashboard: bool = False, quiet: bool = False) -> PlainDisplay | RichDisplay:
    """The live display on a terminal (the dashboard with -C), plain lines
    otherwise (a pipe, a log file, cron); with ``quiet``, only failures."""
    if quiet or not out.isatty():
        return PlainDisplay(out, quiet)
    return Dashboard() if dashboard else RichDisplay()
