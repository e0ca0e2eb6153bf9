"""Outputs found up to date: the commonest outcome of a re-run, kept as
text (``Skip``), in memory for a plan made whole and on disk (``SkipLog``)
for a mirror planned folder by folder."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from flac2all.model import Action, Status, Task, TaskResult

UP_TO_DATE = "skipped: up to date"


class Skip(NamedTuple):
    """An output that is up to date, as the planner finds it and the report
    logs it: the commonest outcome of a re-run, so kept as text (a no-op
    re-run of a million sources would otherwise make two million Tasks,
    Jobs and TaskResults). Logged as a ``SKIPPED`` result with the message
    ``UP_TO_DATE``, -1 s and return code 0, as a skip note is (``result``)."""

    source: str  # absolute paths, as os.fspath spells them
    output: str
    mode: str
    cost: float  # what its task would cost (the plan's order: costliest first)

    def task(self) -> Task:
        return Task(Path(self.source), self.mode, Path(self.output), Action.SKIP, note=UP_TO_DATE)

    def result(self, host: str = "") -> TaskResult:
        return TaskResult(self.task(), Status.SKIPPED, UP_TO_DATE, 0, -1.0, host=host)


# Skips a SkipLog keeps in memory (about 60 MB) before it writes them to
# disk, then in one transaction each.
SPILL = 200_000
WRITTEN_AT_ONCE = 20000


class SkipLog:
    """Outputs up to date kept on disk, in a private temporary SQLite
    database, rather than in memory: a no-op re-run of a million sources
    has two million. Iterated costliest first (the plan's order: ties in
    the order of the sources' relative paths, then of the modes); logged
    by source (``by_source``, the CSV's order)."""

    def __init__(self, modes: dict[str, int]) -> None:
        """``modes``: each mode's place among the run's."""
        self.modes = modes
        # "": a temporary database of its own, deleted when closed.
        self.db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE skips (cost REAL, place BLOB, key BLOB, source TEXT, output TEXT, mode TEXT)")
        self.count = 0
        self.pending: list[tuple] = []
        self.spilled = False
        self.encoding = sys.getfilesystemencoding()

    def add(self, skips: list[Skip], places: dict[str, bytes]) -> None:
        """``skips``; ``places``: each source's place in the order of
        relative paths, by its text (what orders skips of equal cost)."""
        encoding, modes = self.encoding, self.modes
        keys = {source: source.encode(encoding, "surrogateescape") for source in places}
        self.pending += [(s.cost, places[s.source] + bytes((modes[s.mode],)), keys[s.source], *s[:3]) for s in skips]
        self.count += len(skips)
        if len(self.pending) >= (WRITTEN_AT_ONCE if self.spilled else SPILL):
            self.flush()

    def flush(self) -> None:
        """Write what was added (in one transaction: a few thousand rows)."""
        if self.pending:
            self.spilled = True
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO skips VALUES (?, ?, ?, ?, ?, ?)", self.pending)
            self.db.execute("COMMIT")
            self.pending = []

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Skip]:
        if not self.spilled:  # sorted here: (cost, place) descending, then ascending
            ordered = sorted(self.pending, key=lambda row: row[1])
            ordered.sort(key=lambda row: row[0], reverse=True)
            return (Skip(row[3], row[4], row[5], row[0]) for row in ordered)
        self.flush()
        rows = self.db.execute("SELECT source, output, mode, cost FROM skips ORDER BY cost DESC, place")
        return map(Skip._make, rows)

    def by_source(self) -> Iterator[tuple[bytes, str, str, str]]:
        """(source as bytes, mode, source, output), by source then mode."""
        if not self.spilled:
            return iter(sorted((row[2], row[5], row[3], row[4]) for row in self.pending))
        self.flush()
        return self.db.execute("SELECT key, mode, source, output FROM skips ORDER BY key, mode")

    def close(self) -> None:
        self.db.close()
