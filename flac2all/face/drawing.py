"""The live display's text for a given width: drawn at each refresh, the
done/total count and the ETA always stay; the bar shrinks, then goes, then
the less needed figures, and file names lose their middle to an ellipsis.
"""

from __future__ import annotations

from flac2all.face.pace import Pace

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
