"""The state of a mirror: what each output was made from, in SQLite.

``OUTDIR/.flac2all/state.sqlite`` (WAL mode, schema versioned) holds one row
per output this tool wrote, under its real name (as --names spelled it):
its source's size, mtime, audio MD5, tags and pictures hashes, the hash of
the settings that shaped it, the output's own size and mtime, and the
identity of the folder cover it embeds (--embed-folder-art). A row is written right after its output is committed
(renamed into place), so the state never claims an output that is not there.

It is a cache: deleting it loses nothing. The next run adopts existing
outputs by their provenance tag (``FLAC2ALL_SOURCE``) or, failing that, by
trusting outputs newer than their source. So a state that cannot be read
(damaged, not a database, a schema from a newer flac2all) is moved aside
(``move_aside``) and rebuilt, never a reason to stop.

A read-only state (a dry run's) writes nothing next to the file: SQLite's
``immutable`` mode, or a private copy when a killed run left rows in the WAL.

Errors while writing rows (``put``, ``forget``, ``close``: a full disk, say)
are left as the sqlite3 errors they are (``sqlite_errorcode`` tells which).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from flac2all import dirs
from flac2all.errors import TaskError, disk_full_cause
from flac2all.records import Record, Records, Row
from flac2all.state_gains import GainTables

SCHEMA_VERSION = 2
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
    out_mtime_ns INTEGER NOT NULL,
    art TEXT NOT NULL DEFAULT ''  -- the folder cover embedded: name:size:mtime_ns
);
"""
COLUMNS = [
    "output",
    "source",
    "mode",
    "src_size",
    "src_mtime_ns",
    "audio_md5",
    "tags_hash",
    "pictures_hash",
    "settings_hash",
    "out_size",
    "out_mtime_ns",
    "art",
]
# Schema migrations: version -> SQL that brings version-1 to it, and the
# columns a state of version-1 has.
MIGRATIONS: dict[int, str] = {2: "ALTER TABLE outputs ADD COLUMN art TEXT NOT NULL DEFAULT ''"}
OLD_COLUMNS = {1: COLUMNS[:-1]}
# SQLite's own words for a file that is not a state it can read.
DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


def state_path(outdir: Path) -> Path:
    return outdir / STATE_DIR / STATE_FILE


class StateError(Exception):
    """The state cannot be used."""


class UnreadableStateError(StateError):
    """The state file is not one this flac2all can read. ``reason`` says why;
    ``kind`` ("corrupt" or "newer") names the file ``move_aside`` makes."""

    def __init__(self, message: str, reason: str, kind: str = "corrupt") -> None:
        super().__init__(message)
        self.reason = reason
        self.kind = kind


class State(GainTables):
    """The state database of one output folder."""

    def __init__(self, outdir: Path, input_dir: Path, readonly: bool = False, empty: bool = False) -> None:
        """``readonly``: write nothing (a dry run); ``empty``: a state with no
        rows that opens no file (a dry run's when the file cannot be read)."""
        self.outdir = outdir
        self.input_dir = input_dir
        self.path = state_path(outdir)
        self.readonly = readonly or empty
        self.db: sqlite3.Connection | None = None
        self.columns = COLUMNS
        self._copy: tempfile.TemporaryDirectory | None = None
        self._out_prefix = len(os.fsencode(outdir).rstrip(b"/")) + 1
        self._in_prefix = len(os.fsencode(input_dir).rstrip(b"/")) + 1
        self._last_commit = time.monotonic()
        if empty or (readonly and not self.path.exists()):
            return  # a dry run on a new mirror: an empty state
        # What the open may make (its folder, the file, SQLite's -wal and
        # -shm): what it made is removed if it fails.
        made = [] if readonly else [p for p in self._files() if not os.path.lexists(p)]
        try:
            self.db = self._open_readonly() if readonly else self._open()
            self._check()
            if not readonly:
                self._migrate()
        except sqlite3.DatabaseError as exc:
            self._abandon(made)
            if (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF in DAMAGED:
                raise UnreadableStateError(f"{self.path} cannot be read: {exc}", str(exc)) from exc
            if not readonly and (cause := self._full(exc)) is not None:
                raise StateError(cause) from exc  # not SQLite's "disk I/O error"
            raise
        except OSError as exc:
            self._abandon(made)
            if not readonly and (cause := self._full(exc)) is not None:
                raise StateError(cause) from exc
            raise
        except BaseException:
            self._abandon(made)
            raise

    def _files(self) -> list[Path]:
        """The state's folder and files, the folder first."""
        return [self.path.parent, *(self.path.with_name(self.path.name + s) for s in ("", "-wal", "-shm"))]

    def _abandon(self, made: list[Path]) -> None:
        """Close a state that failed to open, and remove what opening it made."""
        with contextlib.suppress(sqlite3.Error):
            self.close()
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir() if path == self.path.parent else path.unlink()

    def _full(self, exc: BaseException) -> str | None:
        """The one message for OUTDIR's filesystem taking no more data, when
        that is why the state could not be opened (SQLite says "disk I/O
        error" or "database or disk is full"), else None."""
        return disk_full_cause(exc, self.outdir)

    def _open(self) -> sqlite3.Connection:
        self._refuse_links()
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        # A lost commit only means an adoption next run, never a wrong row.
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _refuse_links(self) -> None:
        """SQLite opens the state and its journals by name: the state's
        folder must be a folder of the output folder (made here, never
        through a link), and each of those names a regular file if any."""
        try:
            with dirs.held(self.path.parent, self.outdir, create=True) as folder:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    try:
                        st = os.stat(self.path.name + suffix, dir_fd=folder, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        raise StateError(f"{self.path}{suffix} is not a regular file (a link?): refusing to open it")
        except TaskError as exc:
            raise StateError(f"cannot open the state: {exc}") from None

    def _open_readonly(self) -> sqlite3.Connection:
        """Open without writing anything beside the file: ``mode=ro`` on a
        WAL database makes -wal and -shm files, or fails on a read-only
        file system."""
        wal = self.path.with_name(self.path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            # A killed run left rows in the WAL only; immutable mode would
            # not see them. Read a private copy that SQLite may recover.
            self._copy = tempfile.TemporaryDirectory(prefix="flac2all-state-")
            copy = Path(self._copy.name) / STATE_FILE
            shutil.copyfile(self.path, copy)
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
            return sqlite3.connect(copy, isolation_level=None)
        # Percent-encoded bytes: any file name, even with '?', '#' or non-UTF-8.
        return sqlite3.connect(f"file:{quote(os.fsencode(self.path))}?immutable=1", uri=True, isolation_level=None)

    def _check(self) -> None:
        """Read every page once (``quick_check``), then the schema's version
        and columns: a damaged state is found here, not halfway through."""
        assert self.db is not None
        found = [row[0] for row in self.db.execute("PRAGMA quick_check")]
        if found != ["ok"]:
            raise UnreadableStateError(f"{self.path} is damaged: {found[0]}", f"damaged: {found[0]}")
        tables = {name for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" in tables:
            version = self._version()
            if version > SCHEMA_VERSION:
                raise UnreadableStateError(
                    f"{self.path} was written by a newer flac2all (schema {version}); "
                    "upgrade, or delete it (it is only a cache)",
                    f"written by a newer flac2all, schema {version}",
                    "newer",
                )
        self.columns = COLUMNS
        if "outputs" in tables:
            columns = [row[1] for row in self.db.execute("PRAGMA table_info(outputs)")]
            if columns in OLD_COLUMNS.values():
                self.columns = columns  # migrated when opened to write
            elif columns != COLUMNS:
                raise UnreadableStateError(
                    f"{self.path} has an unknown layout (columns {', '.join(columns)})", "unknown layout"
                )

    def _version(self) -> int:
        assert self.db is not None
        row = self.db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        try:
            return int(row[0]) if row else 0
        except ValueError:
            raise UnreadableStateError(f"{self.path}: schema version {row[0]!r}", "unknown schema version") from None

    def _migrate(self) -> None:
        assert self.db is not None
        self.db.executescript(SCHEMA)
        version = self._version()
        if version == SCHEMA_VERSION:
            return  # opening writes nothing: a refused run leaves the file as it was
        if version > 0:  # (0: tables just made, as this version makes them)
            for v in range(version + 1, SCHEMA_VERSION + 1):
                self.db.executescript(MIGRATIONS[v])
        self.columns = COLUMNS
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        if self.db is not None:
            if self.db.in_transaction:
                self.db.commit()
            self.db.close()
            self.db = None
        if self._copy is not None:
            self._copy.cleanup()
            self._copy = None

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

    def load(self) -> Records:
        """Every row, by absolute output path: one query into ``Row``s,
        no Path made (``Records`` makes a Record when one is asked for)."""
        if self.db is None:
            return Records()
        return Records(self._rows_by_output("", ()))

    def rows_in(self, *folders: str) -> dict[str, Row]:
        """The rows of the outputs directly in ``folders`` (absolute, as
        text ending in "/"), not in their subfolders: a range of the
        outputs' index each, in one query, whatever the size of the state
        (no folder: every row)."""
        if self.db is None:
            return {}
        if not folders:  # every row
            return self._rows_by_output("", ())
        ranges, args = [], []
        for folder in folders:
            prefix = os.fsencode(folder)[self._out_prefix :]
            if not prefix:
                ranges.append("instr(output, X'2F') = 0")
                continue
            # The outputs below the folder: from its bytes to the same ending
            # in "0", the byte after "/".
            ranges.append("(output >= ? AND output < ? AND instr(substr(output, ?), X'2F') = 0)")
            args += [prefix, prefix[:-1] + b"0", len(prefix) + 1]
        return self._rows_by_output(" WHERE " + " OR ".join(ranges), tuple(args))

    def rows_outside(self, folders: set[str]) -> Iterator[tuple[str, Row]]:
        """The rows of the outputs that are in none of ``folders`` (as
        ``rows_in`` names them), one by one."""
        for output, row in self._rows("", ()):
            if output[: output.rfind("/") + 1] not in folders:
                yield output, row

    def source_of(self, output: Path) -> Path | None:
        """The source the row of ``output`` names, None without one."""
        if self.db is None:
            return None
        row = self.db.execute("SELECT source FROM outputs WHERE output = ?", (self._rel_out(output),)).fetchone()
        return None if row is None else self.input_dir / os.fsdecode(row[0])

    def rows_of_mode(self, mode: str) -> dict[str, Row]:
        """The rows of the outputs of ``mode``, by the output's absolute path."""
        if self.db is None:
            return {}
        return self._rows_by_output(" WHERE mode = ?", (mode,))

    def count(self) -> int:
        """How many rows."""
        if self.db is None:
            return 0
        return self.db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0]

    def _select(self, where: str, args: tuple) -> tuple[sqlite3.Cursor, str, str, str]:
        """The rows ``where`` selects, and how to make their text: (cursor,
        encoding, OUTDIR's text, the input's, each ending in "/")."""
        assert self.db is not None
        art = "art" if "art" in self.columns else "''"  # a dry run's older state, not migrated
        rows = self.db.execute(
            "SELECT output, source, mode, src_size, src_mtime_ns, audio_md5, tags_hash, pictures_hash,"
            f" settings_hash, out_size, out_mtime_ns, {art} FROM outputs{where}",
            args,
        )
        # Text as os.fsdecode makes it (surrogateescape for undecodable
        # bytes), the roots joined as os.path.join would.
        out_root, in_root = os.path.join(os.fspath(self.outdir), ""), os.path.join(os.fspath(self.input_dir), "")
        return rows, sys.getfilesystemencoding(), out_root, in_root

    def _rows_by_output(self, where: str, args: tuple) -> dict[str, Row]:
        """``_rows`` as a dict, made in one comprehension (the hot path of
        a no-op re-run)."""
        rows, encoding, out_root, in_root = self._select(where, args)
        make = Row._make
        return {
            out_root + output.decode(encoding, "surrogateescape"): make(
                (in_root + source.decode(encoding, "surrogateescape"), *rest)
            )
            for output, source, *rest in rows
        }

    def _rows(self, where: str, args: tuple) -> Iterator[tuple[str, Row]]:
        """(absolute output text, Row) of the rows ``where`` selects, one by one."""
        rows, encoding, out_root, in_root = self._select(where, args)
        make = Row._make
        for output, source, *rest in rows:
            yield (
                out_root + output.decode(encoding, "surrogateescape"),
                make((in_root + source.decode(encoding, "surrogateescape"), *rest)),
            )

    def put(self, record: Record) -> None:
        f = record.facts
        self._write(
            "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                record.art,
            ),
        )

    def forget(self, output: Path) -> None:
        self._write("DELETE FROM outputs WHERE output = ?", (self._rel_out(output),))

    def meta(self, key: str) -> str | None:
        """A value of the meta table (None: never recorded, or no state)."""
        if self.db is None:
            return None
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def __enter__(self) -> State:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def move_aside(outdir: Path, kind: str) -> Path:
    """Rename an unreadable state (and its -wal and -shm, which must never
    meet a new database) to ``state.sqlite.<kind>-<timestamp>``; return
    the new name. The next State opened there is a new, empty one."""
    path = state_path(outdir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        with dirs.held(path.parent, outdir) as folder:  # renamed in the state's folder, never through a link

            def there(name: str) -> bool:
                try:
                    os.stat(name, dir_fd=folder, follow_symlinks=False)
                except FileNotFoundError:
                    return False
                return True

            aside = path.with_name(f"{path.name}.{kind}-{stamp}")
            n = 1
            while there(aside.name):
                aside = path.with_name(f"{path.name}.{kind}-{stamp}.{n}")
                n += 1
            for suffix in ("", "-wal", "-shm"):
                if suffix == "" or there(path.name + suffix):
                    os.replace(path.name + suffix, aside.name + suffix, src_dir_fd=folder, dst_dir_fd=folder)
    except TaskError as exc:
        raise StateError(f"cannot move the state aside: {exc}") from None
    return aside
