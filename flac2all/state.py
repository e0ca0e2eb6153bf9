"""The state of a mirror: what each output was made from, in SQLite.

``OUTDIR/.flac2all/state.sqlite`` (WAL mode, schema versioned) holds one row
per output this tool wrote: its source's size, mtime, audio MD5, tags and
pictures hashes, the hash of the settings that shaped it, and the output's
own size and mtime. A row is written right after its output is committed
(renamed into place), so the state never claims an output that is not there.

It is a cache: deleting it loses nothing. The next run adopts existing
outputs by their provenance tag (``FLAC2ALL_SOURCE``) or, failing that, by
trusting outputs newer than their source.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from flac2all.model import SourceFacts

SCHEMA_VERSION = 1
COMMIT_EVERY = 0.5  # seconds
STATE_DIR = ".flac2all"
STATE_FILE = "state.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outputs (
    output BLOB PRIMARY KEY,       -- relative to OUTDIR, as file-system bytes
    source BLOB NOT NULL,          -- relative to the input folder
    mode TEXT NOT NULL,
    src_size INTEGER NOT NULL,
    src_mtime_ns INTEGER NOT NULL,
    audio_md5 TEXT NOT NULL,
    tags_hash TEXT NOT NULL,
    pictures_hash TEXT NOT NULL,
    settings_hash TEXT NOT NULL,
    out_size INTEGER NOT NULL,
    out_mtime_ns INTEGER NOT NULL
);
"""
# Schema migrations: version -> SQL that brings version-1 to it.
MIGRATIONS: dict[int, str] = {}


@dataclass(frozen=True)
class Record:
    """One output and what it was made from (absolute paths)."""

    output: Path
    source: Path
    mode: str
    facts: SourceFacts
    settings_hash: str
    out_size: int
    out_mtime_ns: int

    @classmethod
    def made(
        cls, output: Path, source: Path, mode: str, facts: SourceFacts, settings_hash: str, st: os.stat_result
    ) -> Record:
        """The record of an output as it stands (``st``: its stat)."""
        return cls(output, source, mode, facts, settings_hash, st.st_size, st.st_mtime_ns)

    def output_is(self, st: os.stat_result | None) -> bool:
        """The output on disk is the one recorded (same size and mtime)."""
        return st is not None and (st.st_size, st.st_mtime_ns) == (self.out_size, self.out_mtime_ns)

    def source_is(self, size: int, mtime_ns: int) -> bool:
        """The source's stat is the one recorded."""
        return (self.facts.size, self.facts.mtime_ns) == (size, mtime_ns)


def state_path(outdir: Path) -> Path:
    return outdir / STATE_DIR / STATE_FILE


class StateError(Exception):
    pass


class State:
    """The state database of one output folder."""

    def __init__(self, outdir: Path, input_dir: Path, readonly: bool = False) -> None:
        self.outdir = outdir
        self.input_dir = input_dir
        path = state_path(outdir)
        self.db: sqlite3.Connection | None = None
        if readonly:
            if not path.exists():
                return  # a dry run on a new mirror: an empty state
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            # A lost commit only means an adoption next run, never a wrong row.
            self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        self._out_prefix = len(os.fsencode(outdir).rstrip(b"/")) + 1
        self._in_prefix = len(os.fsencode(input_dir).rstrip(b"/")) + 1
        self._last_commit = time.monotonic()

    def _migrate(self) -> None:
        assert self.db is not None
        self.db.executescript(SCHEMA)
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{state_path(self.outdir)} was written by a newer flac2all (schema {version}); "
                "upgrade, or delete it (it is only a cache)"
            )
        for v in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
            self.db.executescript(MIGRATIONS[v])
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        if self.db is not None:
            if self.db.in_transaction:
                self.db.commit()
            self.db.close()
            self.db = None

    # Paths inside OUTDIR / the input folder, as bytes relative to it (string
    # slicing: Path.relative_to shows on runs of thousands of tasks).
    def _rel_out(self, path: Path) -> bytes:
        return os.fsencode(path)[self._out_prefix :]

    def _rel_src(self, path: Path) -> bytes:
        return os.fsencode(path)[self._in_prefix :]

    def _write(self, sql: str, args: tuple) -> None:
        """Rows are grouped into transactions of at most COMMIT_EVERY s: a run
        killed before a commit loses rows (the next run adopts the outputs
        again), never writes one for an output that is not there."""
        assert self.db is not None
        if not self.db.in_transaction:
            self.db.execute("BEGIN")
        self.db.execute(sql, args)
        if time.monotonic() - self._last_commit > COMMIT_EVERY:
            self.db.commit()
            self._last_commit = time.monotonic()

    def load(self) -> dict[Path, Record]:
        """Every row, by absolute output path."""
        if self.db is None:
            return {}
        rows = self.db.execute(
            "SELECT output, source, mode, src_size, src_mtime_ns, audio_md5, tags_hash, pictures_hash,"
            " settings_hash, out_size, out_mtime_ns FROM outputs"
        )
        out_root, in_root = os.fsencode(self.outdir), os.fsencode(self.input_dir)
        records = {}
        for output, source, mode, size, mtime, md5, th, ph, sh, osize, omtime in rows:
            out = Path(os.fsdecode(os.path.join(out_root, output)))
            records[out] = Record(
                out,
                Path(os.fsdecode(os.path.join(in_root, source))),
                mode,
                SourceFacts(size, mtime, md5, th, ph),
                sh,
                osize,
                omtime,
            )
        return records

    def put(self, record: Record) -> None:
        f = record.facts
        self._write(
            "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._rel_out(record.output),
                self._rel_src(record.source),
                record.mode,
                f.size,
                f.mtime_ns,
                f.audio_md5,
                f.tags_hash,
                f.pictures_hash,
                record.settings_hash,
                record.out_size,
                record.out_mtime_ns,
            ),
        )

    def forget(self, output: Path) -> None:
        self._write("DELETE FROM outputs WHERE output = ?", (self._rel_out(output),))

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
