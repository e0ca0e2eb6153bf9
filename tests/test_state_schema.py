"""The state's schema 2 (the folder cover): a schema 1 state is migrated;
the loudness tables, made when first written."""

from __future__ import annotations

import sqlite3

from flac2all.audio.loudness import Loudness
from flac2all.model import SourceFacts
from flac2all.records import Record
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


def test_loudness_is_kept_by_source_and_audio_and_its_tables_made_when_first_written(tmp_path):
    source, inp = tmp_path / "in" / "album" / "a.flac", tmp_path / "in"
    measured = Loudness(-9.5, 0.9, (3, 7), (1, 2))
    with State(tmp_path, inp) as state:
        assert state.loudness(source, "md5") is None and state.album_tags(source.parent) is None
        state.put(
            Record(tmp_path / "mp3" / "album" / "a.mp3", source, "mp3", SourceFacts(1, 2, "md5", "t", "p"), "s", 3, 4)
        )
    with sqlite3.connect(state_path(tmp_path)) as db:  # a run that measured nothing leaves no trace of them
        assert {name for (name,) in db.execute("SELECT name FROM sqlite_master")} >= {"outputs", "meta"}
        assert "loudness" not in {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    with State(tmp_path, inp) as state:
        state.put_loudness(source, "md5", measured)
        assert state.folders_without_album() == [source.parent]  # (a run stopped here)
        state.put_album_tags(source.parent, "-8.50 dB 0.900000")
        assert state.folders_without_album() == []
    with State(tmp_path, inp) as state:
        assert state.loudness(source, "md5") == measured
        assert state.loudness(source, "other audio") is None
        assert state.loudness(inp / "moved" / "b.flac", "md5") == measured  # the same audio, moved
        assert state.album_tags(source.parent) == "-8.50 dB 0.900000"
        assert list(state.rows_from(source.parent)) == [str(tmp_path / "mp3" / "album" / "a.mp3")]
        assert state.rows_from(inp) == {} and state.rows_from(inp / "elsewhere") == {}
    with sqlite3.connect(state_path(tmp_path)) as db:
        db.execute("UPDATE loudness SET measurement = 'not json'")
    with State(tmp_path, inp, readonly=True) as dry:
        assert dry.loudness(source, "md5") is None  # measured again, never a crash
