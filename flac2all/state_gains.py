"""The state's gain tables (``--replaygain fill|compute``): the loudness
measured of each source, and the album gain each album's outputs were last
given; a part of ``state.State``, which holds the connection.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from flac2all.audio.loudness import Loudness
from flac2all.records import Row

# The loudness measured of each source (--replaygain fill, compute), and
# the album gain each source folder's outputs were last given. Made when
# first written (a run that measures nothing leaves a state as it was, and
# a flac2all before these tables reads such a state as ever).
LOUDNESS_TABLES = (
    """CREATE TABLE IF NOT EXISTS loudness (
    source BLOB PRIMARY KEY,     -- relative to the input folder
    folder BLOB NOT NULL,        -- the source's folder, as albums has it
    audio_md5 TEXT NOT NULL,     -- of the audio measured: another audio is measured again
    measurement TEXT NOT NULL    -- Loudness.to_wire, as JSON
)""",
    """CREATE TABLE IF NOT EXISTS albums (
    folder BLOB PRIMARY KEY,     -- an album: a source folder, relative to the input folder; or TAGGED + its tags
    tags TEXT NOT NULL           -- the album gain and peak its outputs were given ("": none; STALE)
)""",
    # --album-by tags: the album each measured source was last judged in.
    """CREATE TABLE IF NOT EXISTS album_members (
    source BLOB PRIMARY KEY,     -- relative to the input folder
    album BLOB NOT NULL          -- as the albums table has it
)""",
    "CREATE INDEX IF NOT EXISTS album_members_by_album ON album_members (album)",
    # A folder's outputs by their sources (``rows_from``), for its album gain.
    "CREATE INDEX IF NOT EXISTS outputs_by_source ON outputs (source)",
    # A measurement by its audio alone: a source moved or copied keeps it.
    "CREATE INDEX IF NOT EXISTS loudness_by_audio ON loudness (audio_md5)",
)

# An album's tags when it is to be judged again, every output of it retagged:
# one of its tracks measured anew (until the album step of the run that did
# it has judged it: a run stopped before that leaves it to the next), or
# --album-by changed.
STALE = "\0to be judged again"

# An album by its tags (--album-by tags): its album artist (planning.albums.album_key), ALBUM,
# DISCNUMBER; an album by its folder is the folder's path.
TagKey = tuple[str, str, str]
AlbumKey = Path | TagKey
# How a tag album's key starts in the state (no path relative to the input
# folder starts with a NUL byte).
TAGGED = b"\0tags:"


class GainTables:
    """The gain tables' rows, read and written through the state's
    connection (``State`` is one)."""

    db: sqlite3.Connection | None
    input_dir: Path

    def _write(self, sql: str, args: tuple) -> None:
        raise NotImplementedError

    def _rel_src(self, path: Path) -> bytes:
        raise NotImplementedError

    def _rows_by_output(self, where: str, args: tuple) -> dict[str, Row]:
        raise NotImplementedError

    def _loudness_tables(self, table: str = "loudness") -> bool:
        """Whether the loudness tables (``table`` among them) are there to read."""
        assert self.db is not None
        found = self.db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
        return found.fetchone()[0] > 0

    def _key(self, album: AlbumKey) -> bytes:
        """An album's key in the albums and album_members tables."""
        if isinstance(album, Path):
            return self._rel_src(album)
        return TAGGED + json.dumps(list(album), ensure_ascii=False).encode()

    def _album(self, key: bytes) -> AlbumKey:
        """The inverse of ``_key``."""
        if key.startswith(TAGGED):
            artist, title, disc = json.loads(key[len(TAGGED) :].decode())
            return (artist, title, disc)
        return self.input_dir / os.fsdecode(key) if key else self.input_dir

    def put_loudness(self, source: Path, audio_md5: str, loudness: Loudness) -> None:
        """The loudness measured of ``source``'s audio (``audio_md5``); the
        albums it is in to be judged again (``STALE``) if it is new."""
        assert self.db is not None
        measurement = json.dumps(loudness.to_wire(), separators=(",", ":"))
        src = self._rel_src(source)
        if self._loudness_tables():
            known = self.db.execute("SELECT audio_md5, measurement FROM loudness WHERE source = ?", (src,)).fetchone()
            if known is not None and tuple(known) == (audio_md5, measurement):
                return
        for table in LOUDNESS_TABLES:
            self._write(table, ())
        folder = self._rel_src(source.parent)
        self._write("INSERT OR REPLACE INTO loudness VALUES (?, ?, ?, ?)", (src, folder, audio_md5, measurement))
        self._write("UPDATE albums SET tags = ? WHERE folder = ?", (STALE, folder))
        in_albums = "SELECT album FROM album_members WHERE source = ?"
        self._write(f"UPDATE albums SET tags = ? WHERE folder IN ({in_albums})", (STALE, src))

    def judge_again(self) -> None:
        """Every album to be judged again (``STALE``): --album-by changed."""
        if self.db is not None and self._loudness_tables():
            self._write("UPDATE albums SET tags = ?", (STALE,))

    def loudness(self, source: Path, audio_md5: str) -> Loudness | None:
        """The loudness recorded of ``source`` when its audio was
        ``audio_md5``, else of the same audio under another name (a source
        moved); None if not recorded (or unreadable)."""
        if self.db is None or not audio_md5 or not self._loudness_tables():
            return None
        row = (
            self.db.execute(
                "SELECT measurement FROM loudness WHERE source = ? AND audio_md5 = ?",
                (self._rel_src(source), audio_md5),
            ).fetchone()
            or self.db.execute("SELECT measurement FROM loudness WHERE audio_md5 = ?", (audio_md5,)).fetchone()
        )
        try:
            return None if row is None else Loudness.from_wire(json.loads(row[0]))
        except ValueError:  # json's errors too: a damaged row is measured again
            return None

    def album_tags(self, album: AlbumKey) -> str | None:
        """What album gain the outputs of ``album``'s sources were given."""
        if self.db is None or not self._loudness_tables():
            return None
        row = self.db.execute("SELECT tags FROM albums WHERE folder = ?", (self._key(album),)).fetchone()
        return None if row is None else row[0]

    def folders_without_album(self, by_tags: bool = False) -> list[Path]:
        """The folders with a measured source whose album is not judged (a
        run stopped before its album step) or to be judged again
        (``STALE``); ``by_tags``: a measured source in no tag album yet, or
        in one to be judged again."""
        if self.db is None or not self._loudness_tables():
            return []
        if by_tags and not self._loudness_tables("album_members"):
            return self.measured_folders()
        judged = (
            "SELECT 1 FROM album_members AS m WHERE m.source = loudness.source"
            " AND NOT EXISTS (SELECT 1 FROM albums WHERE albums.folder = m.album AND albums.tags = ?)"
            if by_tags
            else "SELECT 1 FROM albums WHERE albums.folder = loudness.folder AND albums.tags != ?"
        )
        # (a source whose outputs are all gone, moved or deleted, is in no album any more)
        made = "SELECT 1 FROM outputs WHERE outputs.source = loudness.source"
        rows = self.db.execute(
            f"SELECT DISTINCT folder FROM loudness WHERE EXISTS ({made}) AND NOT EXISTS ({judged})", (STALE,)
        )
        return [self.input_dir / os.fsdecode(folder) if folder else self.input_dir for (folder,) in rows]

    def measured_folders(self) -> list[Path]:
        """Every folder with a measured source."""
        if self.db is None or not self._loudness_tables():
            return []
        rows = self.db.execute("SELECT DISTINCT folder FROM loudness")
        return [self.input_dir / os.fsdecode(folder) if folder else self.input_dir for (folder,) in rows]

    def put_album_tags(self, album: AlbumKey, tags: str) -> None:
        for table in LOUDNESS_TABLES:
            self._write(table, ())
        self._write("INSERT OR REPLACE INTO albums VALUES (?, ?)", (self._key(album), tags))

    def members_of(self, album: AlbumKey) -> list[Path]:
        """The sources ``album`` (--album-by tags) was last judged with."""
        if self.db is None or not self._loudness_tables("album_members"):
            return []
        rows = self.db.execute("SELECT source FROM album_members WHERE album = ?", (self._key(album),))
        return [self.input_dir / os.fsdecode(source) for (source,) in rows]

    def albums_in(self, folder: Path) -> dict[Path, AlbumKey]:
        """The album (--album-by tags) each source directly in ``folder``
        was last judged in, those gone since too."""
        if self.db is None or not self._loudness_tables("album_members"):
            return {}
        prefix = self._rel_src(folder) + b"/" if folder != self.input_dir else b""
        select = "SELECT source, album FROM album_members WHERE"
        if prefix:
            rows = self.db.execute(
                f"{select} source >= ? AND source < ? AND instr(substr(source, ?), X'2F') = 0",
                (prefix, prefix[:-1] + b"0", len(prefix) + 1),
            )
        else:
            rows = self.db.execute(f"{select} instr(source, X'2F') = 0")
        return {self.input_dir / os.fsdecode(source): self._album(album) for source, album in rows}

    def put_members(self, album: AlbumKey, sources: list[Path]) -> None:
        """``album``'s sources (--album-by tags) as it was judged now."""
        for table in LOUDNESS_TABLES:
            self._write(table, ())
        key = self._key(album)
        self._write("DELETE FROM album_members WHERE album = ?", (key,))
        for source in sources:
            self._write("INSERT OR REPLACE INTO album_members VALUES (?, ?)", (self._rel_src(source), key))

    def rows_from(self, folder: Path) -> dict[str, Row]:
        """The rows of the outputs made from the sources directly in
        ``folder`` (an input folder): by the source's index, as ``rows_in``
        goes by the output's."""
        if self.db is None:
            return {}
        prefix = self._rel_src(folder) + b"/" if folder != self.input_dir else b""
        if not prefix:
            return self._rows_by_output(" WHERE instr(source, X'2F') = 0", ())
        return self._rows_by_output(
            " WHERE source >= ? AND source < ? AND instr(substr(source, ?), X'2F') = 0",
            (prefix, prefix[:-1] + b"0", len(prefix) + 1),
        )
