"""What the user sees while a run goes: a live display on a terminal
(``live``, or with -C the ``dashboard``), one plain line per finished task
otherwise (``plain``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from flac2all.face.dashboard import Dashboard
from flac2all.face.live import RichDisplay
from flac2all.face.plain import PlainDisplay


def make_display(
    out: TextIO = sys.stdout, dashboard: bool = False, quiet: bool = False, roots: tuple[Path, Path] | None = None
) -> PlainDisplay | RichDisplay:
    """The live display on a terminal (the dashboard with -C), plain lines
    otherwise (a pipe, a log file, cron), their paths below ``roots``
    (INPUTDIR, OUTDIR); with ``quiet``, only failures."""
    if quiet or not out.isatty():
        return PlainDisplay(out, quiet, roots)
    return Dashboard(out) if dashboard else RichDisplay(out)
