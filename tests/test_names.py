"""FAT32 names (names.py) and the state's schema 2 (the folder cover), as units."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from pathvalidate import is_valid_filename

from flac2all.model import Names, SourceFacts
from flac2all.planning.names import Namer, component, units
from flac2all.state import State, state_path


def test_components_are_spelled_for_fat32():
    assert component('Track: "1"?.flac') == "Track_ _1__.flac"
    assert component("CON.mp3") == "CON_.mp3" and component("nul") == "nul_"
    assert component("Album.", is_file=False) == "Album" and component(" . ", is_file=False) == "_"
    assert component("a\udcffb.mp3") == "a_b.mp3"  # a name whose bytes were not UTF-8
    long = component("x" * 250 + ".mp3", tag=" (2)")
    assert long.endswith("x (2).mp3") and units(long) == 255
    wide = component("😀" * 200 + ".mp3")  # 2 UTF-16 units and 4 bytes each
    assert len(os.fsencode(wide)) <= 255 and wide.endswith(".mp3") and is_valid_filename(wide, platform="windows")


def test_the_namer_keeps_sources_apart_folders_together_and_names_stable():
    out = Path("/out")
    namer = Namer(out, Names.FAT32, 255, {})
    a = namer.output(Path("/in/A:B/1.flac"), out / "mp3/A:B/x?.mp3")
    b = namer.output(Path("/in/A?B/2.flac"), out / "mp3/a?b/X:.mp3")
    assert (a, b) == (out / "mp3/A_B/x_.mp3", out / "mp3/A_B/X_ (2).mp3")  # one folder, as FAT32 sees it
    assert namer.output(Path("/in/A:B/1.flac"), out / "mp3/A:B/x?.mp3") == a  # asked again: the same
    # Next run, the state remembers: a new source sorted first takes neither name.
    again = Namer(out, Names.FAT32, 255, {a: Path("/in/A:B/1.flac"), b: Path("/in/A?B/2.flac")})
    assert again.output(Path("/in/A*B/0.flac"), out / "mp3/A*B/x*.mp3") == out / "mp3/A_B/x_ (3).mp3"
    assert again.output(Path("/in/A?B/2.flac"), out / "mp3/a?b/X:.mp3") == b
    # A deep folder is cut, the same way for all its files, leaving room for names.
    deep = Namer(out, Names.FAT32, 120, {})
    folder = out / "mp3" / ("d" * 100) / ("e" * 100)
    one = deep.output(Path("/in/1"), folder / ("n" * 100 + ".mp3"))
    two = deep.output(Path("/in/2"), folder / "short.mp3")
    assert one.parent == two.parent and units(one.relative_to(out).as_posix()) <= 120
    assert two.name == "short.mp3" and one.name.endswith(".mp3")
    assert Namer(out, Names.POSIX, 255, {}).output(Path("/in/a"), out / "mp3/a:b.mp3") == out / "mp3/a:b.mp3"


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
