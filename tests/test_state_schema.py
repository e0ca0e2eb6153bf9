"""The state's schema 2 (the folder cover): a schema 1 state is migrated."""

from __future__ import annotations

import sqlite3

from flac2all.model import SourceFacts
from flac2all.state import State, state_path


def test_a_schema_1_state_is_migrated_and_read_by_a_dry_run(tmp_path):
    path = state_path(tmp_path)
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "INSERT INTO meta VALUES ('schema_version', '1');"
            "CREATE TABLE outputs (output BLOB PRIMARY KEY, source BLOB NOT NULL, mode TEXT NOT NULL,"
            " src_size INTEGER NOT NULL, src_mtime_ns INTEGER NOT NULL, audio_md5 TEXT NOT NULL,"
            " tags_hash TEXT NOT NULL, pictures_hash TEXT NOT NULL, settings_hash TEXT NOT NULL,"
            " out_size INTEGER NOT NULL, out_mtime_ns INTEGER NOT NULL);"
            "INSERT INTO outputs VALUES"
            " (x'6d70332f612e6d7033', x'612e666c6163', 'mp3', 1, 2, 'm', 't', 'p', 's', 3, 4);"
        )
    with State(tmp_path, tmp_path / "in", readonly=True) as dry:
        [rec] = dry.load().values()
        assert rec.art == "" and rec.output == tmp_path / "mp3" / "a.mp3"
    with State(tmp_path, tmp_path / "in") as state:
        [rec] = state.load().values()
        assert rec.facts == SourceFacts(1, 2, "m", "t", "p") and rec.art == ""
        state.put(type(rec)(**{**rec.__dict__, "art": "cover.jpg:1:2"}))
    with State(tmp_path, tmp_path / "in") as state:
        assert [r.art for r in state.load().values()] == ["cover.jpg:1:2"]
        assert state.meta("schema_version") == "2"
