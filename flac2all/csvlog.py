"""The CSV log of a run: its rows (one per task, sorted by source then mode
so that two runs compare with diff), the space set aside for it before the
run, and the rows of results past what a Report keeps, on disk."""

from __future__ import annotations

import csv
import heapq
import json
import os
import shutil
import sqlite3
import stat
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from flac2all import dirs
from flac2all.model import Action, Status, TaskResult
from flac2all.skips import UP_TO_DATE

if TYPE_CHECKING:
    from flac2all.report import Report

# The first six columns are the original's; the host that ran each task is
# appended, so that existing parsers and grep -v SUCCESS keep working.
CSV_HEADER = ("infile", "outfile", "format", "conversion_status", "return_code", "execution_time", "host")
LOG_NAME = "conversion_results.log"


def first(item: tuple) -> object:
    return item[0]


class RowLog:
    """CSV rows kept on disk, in a private temporary SQLite database, and
    read back by source then mode."""

    def __init__(self) -> None:
        self.db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE rows (key BLOB, mode TEXT, row TEXT)")
        self.pending: list[tuple[bytes, str, str]] = []

    def add(self, key: bytes, mode: str, row: tuple) -> None:
        self.pending.append((key, mode, json.dumps(row)))  # (ASCII: surrogate-escaped names survive)
        if len(self.pending) >= 10000:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO rows VALUES (?, ?, ?)", self.pending)
            self.db.execute("COMMIT")
            self.pending = []

    def by_source(self) -> Iterator[tuple[tuple[bytes, str], tuple]]:
        """((source as bytes, mode), row), in that order (ties as added)."""
        self.flush()
        for key, mode, row in self.db.execute("SELECT key, mode, row FROM rows ORDER BY key, mode, rowid"):
            yield (key, mode), tuple(json.loads(row))


def reserve(path: Path, size: int) -> None:
    """Set aside ``size`` bytes for the log before the run, so that a disk
    the run fills still has room for it (``write`` writes into the reserved
    file)."""
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = dirs.open_temp(log_temp(path).name, folder, keep=True)
    finally:
        os.close(folder)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError:  # no room even now, or a file system without it: write tries anyway
        pass
    finally:
        os.close(fd)


def write(path: Path, report: Report) -> None:
    """``report``'s CSV log (RFC 4180), written atomically (into the space
    ``reserve`` set aside, if it did); rows sorted by source then mode so
    that two runs compare with diff."""
    times: dict[float, str] = {}  # each time formatted once
    rows = [csv_row(r, times) for r in report.results]
    # An output up to date: a SUCCESS on the skip host, -1 s, return code 0.
    status, elapsed, host = f"SUCCESS ({UP_TO_DATE})", f"{-1.0:.3f}", report.skip_host
    rows += [(s.source, s.output, s.mode, status, 0, elapsed, host) for s in report.skipped]
    keyed = sorted(((log_key(row), row) for row in rows), key=first)
    if report.skip_log is not None:
        logged = (
            ((key, mode), (source, output, mode, status, 0, elapsed, host))
            for key, mode, source, output in report.skip_log.by_source()
        )
        keyed = heapq.merge(keyed, logged, key=first)
    if report.row_log is not None:
        keyed = heapq.merge(keyed, report.row_log.by_source(), key=first)
    save(path, (row for _, row in keyed))


def append(path: Path, report: Report) -> None:
    """A watch batch's rows added to the log at ``path`` (its header first
    if there is none yet): what the batch did or failed to do, not the
    outputs it found up to date nor the orphans it kept (every batch would
    list them again). Written whole or not at all, as ``write`` writes it:
    the rows so far, then the batch's, renamed over it."""
    times: dict[float, str] = {}
    kept = [r for r in report.results if r.task.action is not Action.ORPHAN or r.status is Status.FAILED]
    keyed: Iterable[tuple] = sorted(((log_key(row), row) for row in (csv_row(r, times) for r in kept)), key=first)
    if report.row_log is not None:
        keyed = heapq.merge(keyed, report.row_log.by_source(), key=first)
    try:
        before = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        before = None
    try:
        save(path, (row for _, row in keyed), before)
    finally:
        if before is not None:
            os.close(before)
    report.log_path = path


def save(path: Path, rows: Iterable[tuple], before: int | None = None) -> None:
    """The log at ``path`` replaced by ``rows`` under the header, or after
    the log open as ``before`` (a regular file, not empty) when given.
    Into the space ``reserve`` set aside (kept, truncated to the rows at the
    end); surrogateescape writes undecodable file names back as their
    bytes. Never through a link planted under either name."""
    with (
        dirs.written(path, path.parent, log_temp(path).name, keep=True) as fd,
        open(fd, "w", newline="", encoding="utf-8", errors="surrogateescape", closefd=False) as f,
    ):
        if before is not None and stat.S_ISREG((st := os.fstat(before)).st_mode) and st.st_size:
            with open(before, "rb", closefd=False) as old:
                shutil.copyfileobj(old, f.buffer)
            f.buffer.flush()
        else:
            csv.writer(f).writerow(CSV_HEADER)
        csv.writer(f).writerows(rows)
        f.truncate()


def csv_row(r: TaskResult, times: dict[float, str]) -> tuple:
    """A result's row of the CSV log (``times``: each time formatted once)."""
    # (An output of Path(""), text ".": a folder that could not be read.)
    return (
        os.fspath(r.task.source),
        "" if (out := os.fspath(r.task.output)) == "." else out,
        r.task.mode,
        r.status_text,
        r.returncode,
        times.get(r.elapsed) or times.setdefault(r.elapsed, f"{r.elapsed:.3f}"),
        r.host,
    )


def log_key(row: tuple) -> tuple[bytes, str]:
    """Where a CSV row goes in the log: by source as os.fsencode's bytes
    (without its call), then mode."""
    return row[0].encode(FS_ENCODING, "surrogateescape"), row[2]


FS_ENCODING = sys.getfilesystemencoding()


def log_temp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")
