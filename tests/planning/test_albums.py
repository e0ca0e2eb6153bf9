"""Which folders get an album gain, and which outputs are retagged with it,
from the results of a run and what the state recorded."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest
from mutagen.flac import FLAC
from mutagen.id3 import ID3

from flac2all.audio.loudness import Loudness, album
from flac2all.model import Action, Status, Task, TaskResult
from flac2all.planning.albums import Albums, album_key
from flac2all.records import Row
from flac2all.state import STATE_DIR, STATE_FILE
from flac2all.tags import gain
from flac2all.tags.source import Comments
from tests.conftest import read_log, require, run_flac2all

LOUD, QUIET = Loudness(-8.0, 0.9, (6200,), (10,)), Loudness(-20.0, 0.3, (5000,), (30,))


def result(source: Path, mode: str, loudness: Loudness | None, status: Status = Status.SUCCESS) -> TaskResult:
    task = Task(source, mode, source.with_suffix(f".{mode}"), Action.ENCODE)
    return TaskResult(task, status, loudness=loudness)


def folder(root: Path, name: str, tracks: int) -> list[Path]:
    (root / name).mkdir()
    paths = [root / name / f"{i}.flac" for i in range(tracks)]
    for p in paths:
        p.write_bytes(b"")
    (root / name / "cover.jpg").write_bytes(b"")  # not a track
    return paths


def row(source: Path, mode: str = "mp3") -> tuple[str, Row]:
    return str(source.with_suffix(f".{mode}")), Row(
        str(source), mode, 1, 2, f"md5 of {source.name}", "", "", "h", 3, 4, ""
    )


def nothing_recorded(source: Path, md5: str) -> None:
    return None


def test_only_a_folder_whose_every_track_is_measured_and_encoded_gets_an_album_gain(tmp_path):
    whole, partial, failed, unmeasured = (folder(tmp_path, n, 2) for n in ("whole", "partial", "failed", "none"))
    albums = Albums()
    for mode in ("mp3", "opus"):
        albums.add(result(whole[0], mode, LOUD))
        albums.add(result(whole[1], mode, QUIET))
        albums.add(result(partial[0], mode, LOUD))  # its other track was skipped, and never measured
        albums.add(result(failed[0], mode, LOUD))
        albums.add(result(unmeasured[0], mode, None))  # fill: it had gain tags of its own
        albums.add(result(unmeasured[1], mode, QUIET))
    albums.add(result(failed[1], "mp3", QUIET))
    albums.add(result(failed[1], "opus", None, Status.FAILED))
    judged = {r.key.name: r for r in albums.retags(lambda folder: {}, nothing_recorded, lambda folder: None)}
    assert sorted(judged) == ["none", "partial", "whole"]  # "failed": judged again by a run where nothing fails
    assert all(judged[name].album is None and judged[name].outputs == () for name in ("none", "partial"))
    done = judged["whole"]
    assert done.album == album([LOUD, QUIET])
    assert done.tags == " ".join(v for _, v in gain.pairs(done.album, "ALBUM"))
    assert [(t.output.name, track) for t, track in done.outputs] == [
        ("0.mp3", LOUD),
        ("0.opus", LOUD),
        ("1.mp3", QUIET),
        ("1.opus", QUIET),
    ]


def test_a_track_added_to_an_album_retags_the_outputs_of_the_others_with_the_new_album_gain(tmp_path):
    old, new = folder(tmp_path, "album", 2)
    albums = Albums()
    albums.add(result(new, "mp3", QUIET))  # the old track's output was up to date: skipped
    rows = dict([row(old), row(new)])
    recorded = {(old, f"md5 of {old.name}"): LOUD}
    (done,) = albums.retags(lambda folder: rows, lambda s, md5: recorded.get((s, md5)), lambda folder: "-10 dB 0.9")
    assert done.album == album([LOUD, QUIET])
    assert [(t.output.name, t.action, t.settings_hash, track) for t, track in done.outputs] == [
        ("0.mp3", Action.RETAG, "h", LOUD),
        ("1.mp3", Action.ENCODE, "", QUIET),
    ]
    # The same album gain as the others carry already: only this run's outputs are tagged.
    (same,) = albums.retags(lambda folder: rows, lambda s, md5: recorded.get((s, md5)), lambda folder: done.tags)
    assert [t.output.name for t, _ in same.outputs] == ["1.mp3"]
    # A measurement of other audio than the source's now does not count.
    (unknown,) = albums.retags(lambda folder: rows, lambda s, md5: None, lambda folder: None)
    assert unknown.album is None and unknown.tags == "" and unknown.outputs == ()


def test_a_track_gone_changes_the_album_of_the_others_and_a_silent_album_gets_no_gain(tmp_path):
    kept, *_ = folder(tmp_path, "album", 1)
    albums = Albums()
    albums.add(TaskResult(Task(kept.parent / "gone.flac", "mp3", Path("/o/gone.mp3"), Action.DELETE), Status.SUCCESS))
    rows = dict([row(kept)])
    (done,) = albums.retags(lambda folder: rows, lambda s, md5: LOUD, lambda folder: "old")
    assert [t.output.name for t, _ in done.outputs] == ["0.mp3"] and done.album == album([LOUD])
    (silent,) = albums.retags(lambda folder: rows, lambda s, md5: Loudness(None, 0.0), lambda folder: None)
    assert silent.album is None and silent.outputs == ()


def test_an_output_retagged_from_its_source_gets_its_track_gain_back_without_an_album(tmp_path):
    edited, unmeasured = folder(tmp_path, "album", 2)
    albums = Albums()
    task = Task(edited, "mp3", edited.with_suffix(".mp3"), Action.RETAG, settings_hash="h")
    albums.add(TaskResult(task, Status.SUCCESS))  # its source's tags changed
    rows = dict([row(edited), row(unmeasured)])
    recorded = {(edited, f"md5 of {edited.name}"): LOUD}  # the other track was never measured
    (done,) = albums.retags(lambda folder: rows, lambda s, md5: recorded.get((s, md5)), lambda folder: None)
    assert done.album is None and done.outputs == ((task, LOUD),)


def test_a_folder_an_earlier_run_measured_and_left_without_album_is_judged_though_nothing_ran_there(tmp_path):
    (track,) = folder(tmp_path, "album", 1)
    albums = Albums()
    albums.touch(track.parent)
    rows = dict([row(track)])
    (done,) = albums.retags(lambda folder: rows, lambda s, md5: LOUD, lambda folder: None)
    assert done.album == album([LOUD]) and [t.output.name for t, _ in done.outputs] == ["0.mp3"]


def test_outputs_of_a_mode_that_carries_no_tags_or_is_unknown_are_left_alone(tmp_path):
    (track,) = folder(tmp_path, "album", 1)
    albums = Albums()
    albums.add(result(track, "mp3", LOUD))
    rows = dict([row(track, "test"), row(track, "nosuchmode"), row(track, "mp3")])
    (done,) = albums.retags(lambda folder: rows, lambda s, md5: LOUD, lambda folder: None)
    assert [t.output.name for t, _ in done.outputs] == ["0.mp3"]


# --album-by tags, by the real command: an album is the sources sharing
# ALBUMARTIST (else ARTIST), ALBUM and DISCNUMBER, in whatever folders.


def track(path: Path, effects: list[str], tags: dict[str, str]) -> Path:
    """A FLAC of 1.2 s of ``effects``, tagged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["sox", "-D", "-n", "-r", "44100", "-b", "16", "-c", "2", str(path), "synth", "1.2", *effects], check=True
    )
    audio = FLAC(path)
    audio.update(tags)
    audio.save()
    return path


def library(root: Path) -> dict[str, list[Path]]:
    """Album X's disc 1 over two folders (its DISCNUMBER spelt two ways),
    its disc 2 in the second, album Y (ARTIST, no ALBUMARTIST) in the
    first, and a track without ALBUM there."""
    disc1 = {"ALBUMARTIST": "Band", "ALBUM": "X", "DISCNUMBER": "1/2", "ARTIST": "Guest"}
    return {
        "x1": [
            track(root / "A" / "1.flac", ["pinknoise", "vol", "0.2"], disc1),
            track(root / "A" / "2.flac", ["sine", "440", "vol", "0.6"], disc1),
            track(root / "B" / "3.flac", ["pinknoise", "vol", "0.9"], {**disc1, "DISCNUMBER": "1"}),
        ],
        "x2": [track(root / "B" / "4.flac", ["sine", "300", "vol", "0.1"], {**disc1, "DISCNUMBER": "2"})],
        "y": [
            track(root / "A" / "5.flac", ["sine", "900", "vol", "0.5"], {"ARTIST": "Band", "ALBUM": "X"}),
            track(root / "B" / "6.flac", ["pinknoise", "vol", "0.4"], {"ARTIST": "Band", "ALBUM": "X"}),
        ],
        "none": [track(root / "A" / "7.flac", ["sine", "2000", "vol", "0.3"], {"TITLE": "alone"})],
    }


def loudgain_album(paths: list[Path]) -> float:
    """loudgain's album gain (dB) of ``paths`` (its track gain for one)."""
    require("loudgain")
    args = ["loudgain", "-q", "-O", *(["-a"] if len(paths) > 1 else []), *map(str, paths)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return float(out.splitlines()[-1].split("\t")[8].split()[0])


def album_gain(out: Path, source: Path) -> float:
    output = out / "flac" / source.parent.name / source.name
    return float(FLAC(output)["REPLAYGAIN_ALBUM_GAIN"][0].removesuffix(" dB"))


def convert(inp: Path, out: Path, *more: str) -> dict[str, str]:
    run = run_flac2all("flac,mp3", inp, "-o", out, "--replaygain", "compute", *more)
    assert run.returncode == 0, run.stdout + run.stderr
    return {str(Path(r["outfile"]).relative_to(out)): r["conversion_status"] for r in read_log(out)}


def stamps(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.suffix in (".flac", ".mp3")}


@pytest.mark.slow
def test_by_tags_an_album_over_two_folders_gets_loudgain_s_album_gain_of_all_its_tracks(tmp_path):
    pytest.importorskip("scipy.signal")
    albums = library(tmp_path / "in")
    out = tmp_path / "out"
    statuses = convert(tmp_path / "in", out, "--album-by", "tags")
    assert set(statuses.values()) == {"SUCCESS"} and len(statuses) == 14
    for name, sources in albums.items():
        want = loudgain_album(sources)
        for source in sources:
            assert album_gain(out, source) == pytest.approx(want, abs=0.1), (name, source)
            mp3 = {
                f.desc: f.text[0] for f in ID3(out / "mp3" / source.parent.name / f"{source.stem}.mp3").getall("TXXX")
            }
            assert float(mp3[gain.ALBUM_GAIN].removesuffix(" dB")) == pytest.approx(want, abs=0.1)
    assert abs(loudgain_album(albums["x1"]) - loudgain_album(albums["x1"][:2])) > 0.5  # a folder's gain fails
    before = stamps(out)
    again = convert(tmp_path / "in", out, "--album-by", "tags")
    assert set(again.values()) == {"SUCCESS (skipped: up to date)"} and stamps(out) == before

    # A state whose tag albums an older flac2all keyed otherwise: every album
    # judged again, its outputs retagged, none encoded, the gains as they were.
    with sqlite3.connect(out / STATE_DIR / STATE_FILE) as db:
        db.execute("UPDATE meta SET value = 'tags' WHERE key = 'album_by'")
    rejudged = convert(tmp_path / "in", out, "--album-by", "tags")
    assert set(rejudged.values()) == {"SUCCESS (skipped: up to date)"} and stamps(out) != before
    for sources in albums.values():
        want = loudgain_album(sources)
        assert all(album_gain(out, s) == pytest.approx(want, abs=0.1) for s in sources)
    assert set(convert(tmp_path / "in", out, "--album-by", "tags").values()) == {"SUCCESS (skipped: up to date)"}

    # Back to folders: every output retagged (none encoded) with its folder's album gain.
    folders = convert(tmp_path / "in", out)
    assert set(folders.values()) == {"SUCCESS (skipped: up to date)"}
    for folder in ("A", "B"):
        sources = sorted((tmp_path / "in" / folder).glob("*.flac"))
        want = loudgain_album(sources)
        assert all(album_gain(out, s) == pytest.approx(want, abs=0.1) for s in sources)
    assert stamps(out) != before


@pytest.mark.slow
def test_by_tags_a_track_added_or_removed_retags_its_album_s_siblings_alone(tmp_path):
    pytest.importorskip("scipy.signal")
    albums = library(tmp_path / "in")
    out = tmp_path / "out"
    convert(tmp_path / "in", out, "--album-by", "tags")
    before = stamps(out)
    md5s = {p: FLAC(p).info.md5_signature for p in before if p.suffix == ".flac"}
    added = track(
        tmp_path / "in" / "C" / "8.flac",
        ["sine", "150", "vol", "0.9"],
        {"ALBUMARTIST": "Band", "ALBUM": "X", "DISCNUMBER": "1"},
    )
    statuses = convert(tmp_path / "in", out, "--album-by", "tags")
    assert {k for k, v in statuses.items() if v == "SUCCESS"} == {"flac/C/8.flac", "mp3/C/8.mp3"}  # encoded alone
    assert {v for k, v in statuses.items() if "/8." not in k} == {"SUCCESS (skipped: up to date)"}
    want = loudgain_album([*albums["x1"], added])
    assert all(album_gain(out, s) == pytest.approx(want, abs=0.1) for s in [*albums["x1"], added])
    now = stamps(out)
    siblings = {
        out / mode / s.parent.name / f"{s.stem}.{ext}"
        for s in albums["x1"]
        for mode, ext in (("flac", "flac"), ("mp3", "mp3"))
    }
    assert {p for p in before if now[p] != before[p]} == siblings  # the other albums' outputs untouched
    assert all(FLAC(p).info.md5_signature == md5 for p, md5 in md5s.items())  # retagged, not re-encoded
    assert set(convert(tmp_path / "in", out, "--album-by", "tags").values()) == {"SUCCESS (skipped: up to date)"}
    assert stamps(out) == now

    added.unlink()
    convert(tmp_path / "in", out, "--album-by", "tags", "--delete")
    want = loudgain_album(albums["x1"])
    assert all(album_gain(out, s) == pytest.approx(want, abs=0.1) for s in albums["x1"])
    assert all(stamps(out)[p] == now[p] for p in now if p.exists() and p not in siblings)


def test_an_album_by_tags_is_its_album_artist_else_artist_album_and_disc_number(tmp_path):
    def key(**tags: str):
        return album_key(Comments(tags.items()), tmp_path)

    assert key(ALBUMARTIST="Band", ARTIST="Guest", ALBUM="X", DISCNUMBER="1/2") == ("Band", "X", "1")
    assert key(ARTIST="Band", ALBUM="X", DISCNUMBER=" 1 ") == ("Band", "X", "1")
    assert key(ARTIST="Band", ALBUM="X") == ("Band", "X", "")
    assert key(ARTIST="Band", ALBUM="X", DISCNUMBER="A") == ("Band", "X", "A")
    assert key(ALBUMARTIST="Band", ALBUM="X", DISCNUMBER="2") != key(ALBUMARTIST="Band", ALBUM="X", DISCNUMBER="1")
    assert key(**{"ALBUM ARTIST": "Band"}, ARTIST="Guest", ALBUM="X") == ("Band", "X", "")  # foobar2000's name
    assert key(ALBUM_ARTIST="Band", ARTIST="Guest", ALBUM="X") == ("Band", "X", "")
    assert key(ALBUMARTIST=" ", **{"ALBUM ARTIST": "Band"}, ARTIST="Guest", ALBUM="X") == ("Band", "X", "")
    # A compilation's tracks, each by its own artist, are its folder's album,
    # not one album a track, nor one with another compilation of that title.
    assert key(ARTIST="A", ALBUM="Hits", COMPILATION="1") == key(ARTIST="B", ALBUM="Hits", COMPILATION="1") == tmp_path
    assert key(ALBUMARTIST="VA", ARTIST="A", ALBUM="Hits", COMPILATION="1") == ("VA", "Hits", "")
    assert key(ARTIST="A", ALBUM="X", COMPILATION="0") == ("A", "X", "")
    assert key(ARTIST="Band", TITLE="alone") == tmp_path  # no ALBUM: its folder's album
    assert key(ARTIST="Band", ALBUM="") == tmp_path
