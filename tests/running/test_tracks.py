"""The tracks of a FLAC a CUE sheet splits, measured from their cuts of
the one decode (--replaygain compute, fill): each track's gain as loudgain
reads the track's output, and the album's (the sheet's tracks are one
album) as loudgain reads the whole disc, and its album mode the tracks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mutagen.flac import FLAC
from mutagen.oggvorbis import OggVorbis

from tests.conftest import read_log, require, run_flac2all

pytestmark = pytest.mark.timeout(120)

# Three tracks of other loudness and content, 2 s each.
PARTS = (
    ("2", "sine", "440", "vol", "0.1"),
    ("2", "pinknoise", "vol", "0.6"),
    ("2", "sine", "1000", "vol", "0.3"),
)
CUE = """TITLE "Disc"
PERFORMER "Band"
FILE "Disc.wav" WAVE
  TRACK 01 AUDIO
    TITLE "One"
    INDEX 01 00:00:00
  TRACK 02 AUDIO
    TITLE "Two"
    INDEX 01 00:02:00
  TRACK 03 AUDIO
    TITLE "Three"
    INDEX 01 00:04:00
"""


def disc(folder: Path, tags: dict[str, str] | None = None) -> Path:
    """A FLAC of the three parts end to end, with its CUE sheet beside it."""
    folder.mkdir(parents=True)
    parts = []
    for i, effects in enumerate(PARTS):
        parts.append(folder / f"part{i}.wav")
        subprocess.run(["sox", "-D", "-n", "-r", "44100", "-b", "16", "-c", "2", str(parts[-1]), "synth", *effects])
    source = folder / "Disc.flac"
    subprocess.run(["sox", *map(str, parts), str(source)], check=True)
    for part in parts:
        part.unlink()
    if tags:
        audio = FLAC(source)
        audio.update(tags)
        audio.save()
    (folder / "Disc.cue").write_text(CUE)
    return source


def loudgain_gains(paths: list[Path]) -> dict[str, float]:
    """loudgain's gain (dB) by file stem, and the album's as 'Album'."""
    require("loudgain")
    lines = subprocess.run(
        ["loudgain", "-q", "-a", "-O", *map(str, paths)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    return {Path(line.split("\t")[0]).stem: float(line.split("\t")[8].split()[0]) for line in lines[1:]}


def gain_of(value: list[str]) -> float:
    return float(value[0].removesuffix(" dB"))


def test_each_split_track_gets_its_own_gain_and_the_sheet_s_album_gain(tmp_path):
    pytest.importorskip("scipy.signal")
    disc(tmp_path / "in" / "Band")
    out = tmp_path / "out"
    run = run_flac2all("flac,vorbis", tmp_path / "in", "-o", out, "--cue", "split", "--replaygain", "compute")
    assert run.returncode == 0, run.stderr
    assert {row["conversion_status"] for row in read_log(out)} == {"SUCCESS"}
    flacs = sorted((out / "flac" / "Band" / "Disc").glob("*.flac"))
    oggs = sorted((out / "vorbis" / "Band" / "Disc").glob("*.ogg"))
    assert [p.stem for p in flacs] == ["01 One", "02 Two", "03 Three"] and len(oggs) == 3
    theirs = loudgain_gains(flacs)
    assert len({round(theirs[p.stem]) for p in flacs}) == 3  # three loudnesses: a whole-file gain fails
    for flac, ogg in zip(flacs, oggs, strict=True):
        for tags in (FLAC(flac), OggVorbis(ogg)):
            assert gain_of(tags["REPLAYGAIN_TRACK_GAIN"]) == pytest.approx(theirs[flac.stem], abs=0.1)
            assert gain_of(tags["REPLAYGAIN_ALBUM_GAIN"]) == pytest.approx(theirs["Album"], abs=0.1)
            assert float(tags["REPLAYGAIN_TRACK_PEAK"][0]) <= float(tags["REPLAYGAIN_ALBUM_PEAK"][0])
    again = run_flac2all("flac,vorbis", tmp_path / "in", "-o", out, "--cue", "split", "--replaygain", "compute")
    assert again.returncode == 0
    assert {row["conversion_status"] for row in read_log(out)} == {"SUCCESS (skipped: up to date)"}
    assert gain_of(FLAC(flacs[0])["REPLAYGAIN_ALBUM_GAIN"]) == pytest.approx(theirs["Album"], abs=0.1)


def test_fill_keeps_a_source_s_own_gain_and_keep_measures_nothing(tmp_path):
    disc(tmp_path / "in" / "Own", {"REPLAYGAIN_TRACK_GAIN": "-1.00 dB", "REPLAYGAIN_TRACK_PEAK": "0.500000"})
    out = tmp_path / "out"
    run = run_flac2all("flac", tmp_path / "in", "-o", out, "--cue", "split", "--replaygain", "fill")
    assert run.returncode == 0, run.stderr
    for flac in sorted((out / "flac" / "Own" / "Disc").glob("*.flac")):
        tags = FLAC(flac)
        assert tags["REPLAYGAIN_TRACK_GAIN"] == ["-1.00 dB"] and "REPLAYGAIN_ALBUM_GAIN" not in tags
    kept = tmp_path / "kept"
    assert run_flac2all("flac", tmp_path / "in", "-o", kept, "--cue", "split").returncode == 0
    assert all(
        FLAC(p)["REPLAYGAIN_TRACK_GAIN"] == ["-1.00 dB"] for p in (kept / "flac" / "Own" / "Disc").glob("*.flac")
    )


def test_a_resplit_of_some_tracks_keeps_the_album_gain_of_the_whole_decode(tmp_path):
    pytest.importorskip("scipy.signal")
    source = disc(tmp_path / "in" / "Band")
    out = tmp_path / "out"
    args = ("flac", tmp_path / "in", "-o", out, "--cue", "split", "--replaygain", "compute")
    assert run_flac2all(*args).returncode == 0
    folder = out / "flac" / "Band" / "Disc"
    first = folder / "01 One.flac"
    album = loudgain_gains(sorted(folder.glob("*.flac")))["Album"]
    before = (first.stat().st_mtime_ns, FLAC(first)["REPLAYGAIN_ALBUM_GAIN"])
    sheet = tmp_path / "in" / "Band" / "Disc.cue"
    sheet.write_text(CUE.replace("INDEX 01 00:04:00", "INDEX 01 00:03:40"))  # tracks 2 and 3 cut again
    assert run_flac2all(*args).returncode == 0
    statuses = {Path(row["outfile"]).name: row["conversion_status"] for row in read_log(out)}
    assert statuses["01 One.flac"] == "SUCCESS (skipped: up to date)"
    assert statuses["02 Two.flac"] == statuses["03 Three.flac"] == "SUCCESS"
    assert (first.stat().st_mtime_ns, FLAC(first)["REPLAYGAIN_ALBUM_GAIN"]) == before
    flacs = sorted(folder.glob("*.flac"))
    theirs = loudgain_gains(flacs)
    whole = loudgain_gains([source])["Disc"]
    for flac in flacs:  # one album gain, the whole disc's, whichever tracks were cut again
        assert FLAC(flac)["REPLAYGAIN_ALBUM_GAIN"] == before[1]
        assert gain_of(before[1]) == pytest.approx(whole, abs=0.1)
        assert gain_of(before[1]) == pytest.approx(album, abs=0.1)
        assert gain_of(FLAC(flac)["REPLAYGAIN_TRACK_GAIN"]) == pytest.approx(theirs[flac.stem], abs=0.1)


def test_a_disc_split_beside_other_tracks_is_an_album_of_its_own(tmp_path):
    pytest.importorskip("scipy.signal")
    folder = tmp_path / "in" / "Band"
    source = disc(folder)
    plain = []
    for name, effects in (("a", ("pinknoise", "vol", "0.2")), ("b", ("sine", "300", "vol", "0.7"))):
        plain.append(folder / f"{name}.flac")
        subprocess.run(
            ["sox", "-D", "-n", "-r", "44100", "-b", "16", "-c", "2", str(plain[-1]), "synth", "1.5", *effects]
        )
    out = tmp_path / "out"
    args = ("flac", tmp_path / "in", "-o", out, "--cue", "split", "--replaygain", "compute")
    assert run_flac2all(*args).returncode == 0
    theirs = loudgain_gains(plain)
    for track in plain:
        assert gain_of(FLAC(out / "flac" / "Band" / track.name)["REPLAYGAIN_ALBUM_GAIN"]) == pytest.approx(
            theirs["Album"], abs=0.1
        )
    whole = loudgain_gains([source])["Disc"]
    split = sorted((out / "flac" / "Band" / "Disc").glob("*.flac"))
    assert len(split) == 3
    assert all(gain_of(FLAC(p)["REPLAYGAIN_ALBUM_GAIN"]) == pytest.approx(whole, abs=0.1) for p in split)
    assert abs(whole - theirs["Album"]) > 0.5  # two albums, two gains
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.flac")}
    assert run_flac2all(*args).returncode == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_an_edit_of_the_sheet_s_tags_splits_again_to_keep_the_measured_gains(tmp_path):
    pytest.importorskip("scipy.signal")
    disc(tmp_path / "in" / "Band")
    out = tmp_path / "out"
    args = ("flac", tmp_path / "in", "-o", out, "--cue", "split", "--replaygain", "compute")
    assert run_flac2all(*args).returncode == 0
    folder = out / "flac" / "Band" / "Disc"
    gains = {p.name: (FLAC(p)["REPLAYGAIN_TRACK_GAIN"], FLAC(p)["REPLAYGAIN_ALBUM_GAIN"]) for p in folder.iterdir()}
    (tmp_path / "in" / "Band" / "Disc.cue").write_text(CUE.replace('TITLE "Disc"', 'TITLE "Disc, remastered"'))
    assert run_flac2all(*args).returncode == 0
    assert {row["conversion_status"] for row in read_log(out)} == {"SUCCESS"}
    for p in folder.iterdir():
        assert FLAC(p)["ALBUM"] == ["Disc, remastered"]
        assert (FLAC(p)["REPLAYGAIN_TRACK_GAIN"], FLAC(p)["REPLAYGAIN_ALBUM_GAIN"]) == gains[p.name]
