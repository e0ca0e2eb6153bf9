"""-C/--curses: the full-screen dashboard, the live display with a table of
worker hosts (their rows as the executor reports them) and a log of the
last failures and messages."""

from __future__ import annotations

import io
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from flac2all.face.drawing import file_lines, squeeze, status
from flac2all.face.live import RichDisplay
from flac2all.face.plain import Hosts
from flac2all.lines import relative
from flac2all.model import HostRow, Job


class Capture(io.TextIOBase):
    """stdout while the full screen is up: what others print there (a
    cluster master's messages) goes to the screen's log instead."""

    def __init__(self, add: Callable[[str], None]) -> None:
        self.add = add
        self.part = ""

    def write(self, text: str) -> int:
        *lines, self.part = (self.part + text).split("\n")
        for line in lines:
            if line.strip():
                self.add(line)
        return len(text)


class Dashboard(RichDisplay):
    """-C/--curses: a full-screen view (the terminal's alternate screen):
    the status line, a table of worker hosts (processes running, tasks
    done, rate, files in progress, as the executor reports them: in local
    mode the one host is this one), the files in progress and a log of the
    last failures and messages. When it ends, its final state is printed
    on the normal screen, where it stays."""

    screen = True
    LOG_ROWS = 8
    KEPT = 10  # log lines printed at the end

    def __init__(self, out: TextIO = sys.stdout) -> None:
        super().__init__(out)
        self.log: deque[tuple[str, str]] = deque(maxlen=100)
        self.failures = 0
        self.rows: dict[str, HostRow] = {}
        self.stdout: TextIO | None = None

    def begin(self, total: int, hosts: Hosts, root: Path = Path(), jobs: Sequence[Job] = ()) -> None:
        self.stdout, sys.stdout = sys.stdout, Capture(lambda line: self.log.append(("", line)))
        super().begin(total, hosts, root, jobs)

    def failure(self, line: str) -> None:
        self.failures += 1
        self.log.append(("red", line))

    def host_rows(self) -> list[HostRow]:
        rows = super().host_rows()
        self.rows.update((row.host, row) for row in rows)
        return rows

    def table(self, rows: list[HostRow], totals: bool = False):
        from rich.table import Table

        table = Table(expand=True, box=None, pad_edge=False, show_footer=totals, header_style="bold underline")
        columns = [
            ("host", "total"),
            ("busy", str(sum(r.processes for r in rows))),
            ("done", str(sum(r.done for r in rows))),
            ("tasks/s", f"{sum(r.rate for r in rows):.1f}"),
            ("current files", ""),
        ]
        for name, footer in columns:
            table.add_column(
                name, footer=footer, no_wrap=True, overflow="ellipsis", ratio=3 if name[0] == "c" else None
            )
        for row in rows:
            current = self.Text(", ".join(relative(path, self.pace.root) for path in row.current))
            if row.problem:  # why it gets no work (unhealthy, quarantined), before what it still runs
                current = self.Text.assemble((row.problem, "red"), "; " if current else "", current)
            table.add_row(row.host, str(row.processes), str(row.done), f"{row.rate:.1f}", current)
        return table

    def log_lines(self, width: int, rows: int) -> list:
        if rows <= 1 or not self.log:
            return []
        title = self.Text(squeeze(f"Last failures and messages ({self.failures} failed in all)", width), style="bold")
        return [title, *(self.Text(squeeze(text, width), style=style) for style, text in list(self.log)[-(rows - 1) :])]

    def draw(self, width: int, height: int) -> list:
        now = time.monotonic()
        rows = self.host_rows()
        table = self.table(rows)
        label = "Stopping: ending the encoders" if self.stop_asked() else "Converting"
        top = [status(self.pace, sum(r.processes for r in rows), now, width, label), table]
        room = height - 2 - len(rows)
        files = self.pace.in_progress()
        log_rows = min(len(self.log) + 1, self.LOG_ROWS, room // 2 if files else room)
        log = self.log_lines(width, log_rows)
        return [*top, *file_lines(files, width, room - len(log)), *log]

    def end(self) -> None:
        """Leave the alternate screen, then print the final state (status,
        host table with its totals, last failures) on the normal one."""
        self.same_cause.flush()
        self.pace.end(time.monotonic())
        try:
            self.live.stop()
        finally:
            if self.stdout is not None:
                sys.stdout, self.stdout = self.stdout, None
        seen = {row.host: row for row in self.rows.values()}
        seen.update((row.host, row) for row in self.host_rows())
        width = self.console.width
        self.console.print(status(self.pace, None, time.monotonic(), width, "Converted", eta=False))
        self.console.print(self.table(sorted(seen.values(), key=lambda r: r.host), totals=True))
        for line in self.log_lines(width, self.KEPT + 1):
            self.console.print(line)
