"""What the user sees while a run goes: a live display on a terminal (rich),
one plain line per finished task otherwise.

The live lines are drawn for the terminal's width at each refresh: the
done/total count and the ETA always stay; the bar shrinks, then goes, then
the less needed figures, and file names lose their middle to an ellipsis.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from flac2all.face.pace import Pace, weights
from flac2all.lines import line_for, relative, skip_line
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


# -- drawing: text for a given width ---------------------------------------------

MIN_BAR, MAX_BAR = 8, 40


def duration(seconds: float) -> str:
    """0:42, 12:03, 1:02:03."""
    s = int(seconds + 0.5)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def squeeze(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells, its middle replaced by an
    ellipsis: both the album folder and the file name stay readable."""
    from rich.cells import cell_len, set_cell_size

    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    tail = (width - 1) * 2 // 3
    return set_cell_size(text, width - 1 - tail) + "…" + set_cell_size(text[::-1], tail)[::-1]


BAR = object()  # where the bar goes among a status line's parts


def fit(parts: list[tuple[float, object]], fraction: float, width: int):
    """One status line of at most ``width`` cells from ``parts``: (priority,
    Text or BAR) in display order, the first being a label. The bar takes
    the room left, from MAX_BAR down to MIN_BAR; when even that is too
    wide, the parts of the highest priority number go first (0 is kept
    longest), and at the last the separators shrink to keep 0 and 1."""
    from rich.text import Text

    def line(items: list[tuple[float, object]], bar: int, dot: str) -> Text:
        out = Text()
        after = None
        for _, part in items:
            if after is not None:
                out.append(" " if after is BAR or after is parts[0][1] else dot, style="dim")
            if part is BAR:
                filled = round(bar * fraction)
                out.append("━" * filled, style="green")
                out.append("━" * (bar - filled), style="bright_black")
            else:
                out.append_text(part)  # type: ignore[arg-type]
            after = part
        return out

    def choose(dot: str) -> list[tuple[float, object]]:
        items = list(parts)
        while len(items) > 1 and line(items, MIN_BAR, dot).cell_len > width:
            items.remove(max(items, key=lambda p: p[0]))
        # What went for a wider part may fit beside the narrower ones kept.
        for part in sorted(parts, key=lambda p: p[0]):
            wider = [p for p in parts if p in items or p is part]
            if part not in items and line(wider, MIN_BAR, dot).cell_len <= width:
                items = wider
        return items

    dot = " · "
    items = choose(dot)
    if any(p[0] <= 1 and p not in items for p in parts):
        dot = " "
        items = choose(dot)
    need = line(items, MIN_BAR, dot).cell_len
    text = line(items, MIN_BAR + max(0, min(width - need, MAX_BAR - MIN_BAR)), dot)
    text.truncate(width, overflow="ellipsis")
    return text


def status(pace: Pace, procs: int | None, now: float, width: int, label: str = "Converting", eta: bool = True):
    """The line with the count, failures, rates, processes, elapsed time
    and ETA, fitted to ``width``."""
    from rich.text import Text

    parts: list[tuple[float, object]] = [(7, Text(label, style="bold")), (3.5, BAR)]
    # Tasks (a file's modes are a task each); the rate below counts files.
    parts.append((0, Text(f"{pace.done}/{pace.total} tasks", style="bold")))
    if pace.failed:
        parts.append((2, Text(f"{pace.failed} failed", style="bold red")))
    rates = pace.rates(now)
    if rates is not None:
        files, audio = rates
        guess = "~" if pace.audio_guessed else ""
        parts.append((4, Text(f"{files:.1f} files/s")))
        parts.append((5, Text(f"{guess}{audio:.{0 if audio >= 10 else 1}f} audio s/s")))
    if procs is not None:
        # Busy processes here, busy worker slots on a cluster, busy threads on Dask.
        parts.append((6, Text(f"{procs} busy")))
    parts.append((3, Text(f"{duration(pace.elapsed(now))} elapsed")))
    if eta:
        left = pace.eta(now)
        parts.append((1, Text(f"ETA {duration(left) if left is not None else '-:--'}", style="bold cyan")))
    return fit(parts, pace.done / pace.total if pace.total else 1.0, width)


def file_lines(files: list[tuple[str, str]], width: int, rows: int) -> list:
    """One line per file in progress: its modes, then its path relative
    to INPUTDIR; as many as ``rows`` allows (the last says how many more)."""
    from rich.cells import cell_len
    from rich.text import Text

    if rows <= 0 or not files:
        return []
    shown = files if len(files) <= rows else files[: rows - 1]
    modes_w = min(max(cell_len(m) for m, _ in shown), max(0, width // 3))
    lines = []
    for modes, path in shown:
        room = width - 4 - modes_w
        out = Text("  ")
        if room >= min(cell_len(path), 10):
            out.append(squeeze(modes, modes_w).ljust(modes_w), style="cyan")
            out.append("  ")
        else:
            room = width - 2
        out.append(squeeze(path, room))
        lines.append(out)
    if len(shown) < len(files):
        lines.append(Text(squeeze(f"  … and {len(files) - len(shown)} more", width), style="dim"))
    return lines


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


def make_display(
    out: TextIO = sys.stdout, dashboard: bool = False, quiet: bool = False, roots: tuple[Path, Path] | None = None
) -> PlainDisplay | RichDisplay:
    """The live display on a terminal (the dashboard with -C), plain lines
    otherwise (a pipe, a log file, cron), their paths below ``roots``
    (INPUTDIR, OUTDIR); with ``quiet``, only failures."""
    if quiet or not out.isatty():
        return PlainDisplay(out, quiet, roots)
    return Dashboard(out) if dashboard else RichDisplay(out)
