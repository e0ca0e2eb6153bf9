"""A whole-disc FLAC with a CUE sheet, split into one output per track and
mode by the real command: the tracks' samples, end to end, are the
source's (bit-exact in flac mode), each with the sheet's tags; a sheet that
does not fit fails its album with the reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mutagen.flac import FLAC, CueSheet, CueSheetTrack, CueSheetTrackIndex

import flac2all
from flac2all.lines import SOURCE_HERE
from flac2all.planning import cue
from tests.conftest import make_flac, mutagen_file, read_log, run_flac2all, temp_files
from tests.running.test_interruption import alive, slow_opusenc, start, wait_for

MODES = "flac,mp3,vorbis,opus"
CUE = """\ufeffREM GENRE "Прог-рок"
REM DATE 1999
PERFORMER "Группа"
TITLE "Альбом"
CATALOG 0123456789012
FILE "Disc.wav" WAVE
  TRACK 01 AUDIO
    TITLE "Первая"
    INDEX 01 00:00:00
  TRACK 02 AUDIO
    TITLE "Second"
    PERFORMER "Guest"
    SONGWRITER "Writer"
    ISRC GBAYE0000001
    INDEX 00 00:00:60
    INDEX 01 00:01:05
  TRACK 03 AUDIO
    TITLE "Third"
    INDEX 01 00:02:00
"""
# INDEX 01 of tracks 2 and 3 at 44.1 kHz (588 samples a frame); the pregap
# (INDEX 00 of track 2) ends track 1.
BOUNDS = [0, 44100 + 5 * 588, 88200, 3 * 44100]


def pcm(path: Path) -> bytes:
    return subprocess.run(
        ["flac", "-d", "-c", "-s", "--force-raw-format", "--endian=little", "--sign=signed", str(path)],
        capture_output=True,
        check=True,
    ).stdout


def album(root: Path, cue: str | bytes | None = CUE) -> Path:
    source = make_flac(root / "in" / "Band" / "Disc.flac", seconds=3.0, tags={"ALBUM": "Old", "LABEL": "Kept"})
    if cue is not None:
        (root / "in" / "Band" / "Disc.cue").write_bytes(cue.encode() if isinstance(cue, str) else cue)
    return source


def outputs(outdir: Path, mode: str, extension: str) -> list[Path]:
    return sorted((outdir / mode / "Band" / "Disc").glob(f"*.{extension}"))


def check_split(source: Path, outdir: Path, names: list[str]) -> None:
    flacs = outputs(outdir, "flac", "flac")
    assert [p.stem for p in flacs] == names
    assert b"".join(pcm(p) for p in flacs) == pcm(source)
    assert [FLAC(p).info.total_samples for p in flacs] == [b - a for a, b in zip(BOUNDS, BOUNDS[1:], strict=False)]
    for mode, extension in (("mp3", "mp3"), ("vorbis", "ogg"), ("opus", "opus")):
        made = outputs(outdir, mode, extension)
        assert len(made) == 3
        lengths = [mutagen_file(p).info.length for p in made]
        for length, a, b in zip(lengths, BOUNDS, BOUNDS[1:], strict=False):
            assert abs(length - (b - a) / 44100) < 0.1


def test_external_cue_three_tracks_per_mode_bit_exact_with_its_tags(tmp_path):
    source = album(tmp_path)
    outdir = tmp_path / "out"
    run = run_flac2all(MODES, tmp_path / "in", "-o", outdir, "-c")
    assert run.returncode == 0, run.stderr
    check_split(source, outdir, ["01 Первая", "02 Second", "03 Third"])
    second = FLAC(outputs(outdir, "flac", "flac")[1])
    assert second["TITLE"] == ["Second"] and second["ARTIST"] == ["Guest"] and second["COMPOSER"] == ["Writer"]
    assert second["ALBUM"] == ["Альбом"] and second["ALBUMARTIST"] == ["Группа"] and second["ISRC"] == ["GBAYE0000001"]
    assert second["TRACKNUMBER"] == ["2"] and second["TRACKTOTAL"] == ["3"] and second["DATE"] == ["1999"]
    assert second["CATALOGNUMBER"] == ["0123456789012"] and second["LABEL"] == ["Kept"]
    first = mutagen_file(outputs(outdir, "mp3", "mp3")[0])
    assert str(first.tags["TIT2"]) == "Первая" and str(first.tags["TPE1"]) == "Группа"
    assert not list(outdir.rglob("*.cue"))  # the sheet used is not copied as a stray file
    again = run_flac2all(MODES, tmp_path / "in", "-o", outdir, "-c")
    assert again.returncode == 0
    assert {row["conversion_status"] for row in read_log(outdir)} <= {"SUCCESS (skipped: up to date)"}


def test_embedded_cuesheet_block_and_cp1251_sheet(tmp_path):
    source = album(tmp_path, None)
    flac = FLAC(source)
    block = CueSheet(None)
    for number, first in zip((1, 2, 3), BOUNDS, strict=False):
        track = CueSheetTrack(number, first)
        track.indexes.append(CueSheetTrackIndex(1, 0))
        block.tracks.append(track)
    block.tracks.append(CueSheetTrack(170, BOUNDS[-1]))
    flac.metadata_blocks.append(block)
    flac.save()
    run = run_flac2all("flac,mp3,vorbis,opus", tmp_path / "in", "-o", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    # A CUESHEET block names no title: each track is named by its number alone.
    check_split(source, tmp_path / "out", ["01", "02", "03"])

    (tmp_path / "in" / "Band" / "Disc.cue").write_bytes(CUE.lstrip("\ufeff").encode("cp1251"))
    refused = run_flac2all("flac", tmp_path / "in", "-o", tmp_path / "cp")
    assert refused.returncode == 1
    assert "CUE Disc.cue is not UTF-8; convert it or use --cue-encoding cp1251" in refused.stdout + refused.stderr
    run = run_flac2all(MODES, tmp_path / "in", "-o", tmp_path / "cp", "--cue-encoding", "cp1251")
    assert run.returncode == 0, run.stderr
    check_split(source, tmp_path / "cp", ["01 Первая", "02 Second", "03 Third"])


def test_a_sheet_that_does_not_fit_fails_its_album_and_ignore_converts_it_whole(tmp_path):
    album(tmp_path, CUE.replace("INDEX 01 00:02:00", "INDEX 01 00:09:00"))
    outdir = tmp_path / "out"
    run = run_flac2all("flac", tmp_path / "in", "-o", outdir)
    assert run.returncode == 1
    (row,) = read_log(outdir)
    assert "track 03 starts at 0:09.00, past the end of the audio (0:03.00)" in row["conversion_status"]
    assert not list(outdir.rglob("*.flac"))
    (tmp_path / "in" / "Band" / "Disc.cue").write_text(CUE.replace("Disc.wav", "Other.wav"))
    run = run_flac2all("flac", tmp_path / "in", "-o", outdir)
    assert "CUE Disc.cue names Other.wav, not Disc.flac" in read_log(outdir)[0]["conversion_status"]
    whole = run_flac2all("flac", tmp_path / "in", "-o", outdir, "--cue", "ignore")
    assert whole.returncode == 0, whole.stderr
    assert (outdir / "flac" / "Band" / "Disc.flac").exists()


def test_the_dry_run_and_plan_json_show_the_tracks(tmp_path):
    album(tmp_path)
    run = run_flac2all("mp3", tmp_path / "in", "-o", tmp_path / "out", "--dry-run", "--plan-json", tmp_path / "p.json")
    assert run.returncode == 0, run.stderr
    assert "mp3/Band/Disc/02 Second.mp3" in run.stdout
    encodes = json.loads((tmp_path / "p.json").read_text())["actions"]["encode"]
    assert [e["track"] for e in encodes] == [
        {"number": n, "start": a, "end": b} for n, a, b in zip((1, 2, 3), BOUNDS, BOUNDS[1:], strict=False)
    ]


def test_path_format_takes_the_tracks_tags(tmp_path):
    album(tmp_path)
    outdir = tmp_path / "out"
    run = run_flac2all(
        "opus", tmp_path / "in", "-o", outdir, "--path-format", "{albumartist}/{album}/{track:02}-{title}"
    )
    assert run.returncode == 0, run.stderr
    names = sorted(p.relative_to(outdir / "opus").as_posix() for p in outdir.rglob("*.opus"))
    assert names == ["Группа/Альбом/01-Первая.opus", "Группа/Альбом/02-Second.opus", "Группа/Альбом/03-Third.opus"]


def test_an_edited_sheet_retags_what_its_tags_changed_and_resplits_what_its_indexes_moved(tmp_path):
    source = album(tmp_path)
    outdir = tmp_path / "out"
    assert run_flac2all("flac,mp3", tmp_path / "in", "-o", outdir).returncode == 0
    sheet = tmp_path / "in" / "Band" / "Disc.cue"
    sheet.write_text(CUE.replace("REM DATE 1999", "REM DATE 2000"))
    run = run_flac2all("flac,mp3", tmp_path / "in", "-o", outdir)
    assert run.returncode == 0, run.stderr
    assert "6 retagged" in run.stdout and "0 encoded" in run.stdout
    assert [FLAC(p)["DATE"] for p in outputs(outdir, "flac", "flac")] == [["2000"]] * 3
    assert str(mutagen_file(outputs(outdir, "mp3", "mp3")[2]).tags["TDRC"]) == "2000"
    # Track 3 starts a second earlier: tracks 2 and 3 are made anew, track 1 is left be.
    sheet.write_text(CUE.replace("REM DATE 1999", "REM DATE 2000").replace("INDEX 01 00:02:00", "INDEX 01 00:01:50"))
    run = run_flac2all("flac,mp3", tmp_path / "in", "-o", outdir)
    assert run.returncode == 0, run.stderr
    assert "4 encoded" in run.stdout and "2 skipped" in run.stdout
    flacs = outputs(outdir, "flac", "flac")
    assert b"".join(pcm(p) for p in flacs) == pcm(source)
    assert FLAC(flacs[2]).info.total_samples == 3 * 44100 - (44100 + 50 * 588)


def test_one_decoder_for_every_track_and_mode(tmp_path, spy):
    folder, log = spy
    album(tmp_path)
    run = run_flac2all("flac,mp3,opus", tmp_path / "in", "-o", tmp_path / "out", path_prefix=folder)
    assert run.returncode == 0, run.stderr
    decodes = [line for line in log.read_text().splitlines() if line.startswith("flac --decode")]
    assert len(decodes) == 1
    assert len([line for line in log.read_text().splitlines() if line.startswith("lame ")]) == 3


def test_a_failing_encoder_fails_its_tracks_alone_and_leaves_nothing_half_made(tmp_path, fake_bin):
    folder = fake_bin("lame", 'cat > /dev/null\necho "lame: cannot encode" >&2\nexit 1\n')
    album(tmp_path)
    outdir = tmp_path / "out"
    run = run_flac2all("flac,mp3", tmp_path / "in", "-o", outdir, path_prefix=folder)
    assert run.returncode == 1
    rows = read_log(outdir)
    failed = [r for r in rows if r["conversion_status"].startswith("ERROR")]
    assert len(failed) == 3 and all("lame" in r["conversion_status"] for r in failed)
    assert len(outputs(outdir, "flac", "flac")) == 3 and outputs(outdir, "mp3", "mp3") == []
    assert temp_files(outdir) == []


def test_a_hung_encoder_is_killed_at_the_time_out(tmp_path, fake_bin):
    folder = fake_bin("opusenc", "exec sleep 60\n")
    album(tmp_path)
    outdir = tmp_path / "out"
    started = time.monotonic()
    run = run_flac2all("opus", tmp_path / "in", "-o", outdir, "--timeout", "2", path_prefix=folder, timeout=40)
    assert time.monotonic() - started < 30
    assert run.returncode == 1
    assert all("opusenc timed out after 2 s" in r["conversion_status"] for r in read_log(outdir))
    assert outputs(outdir, "opus", "opus") == [] and temp_files(outdir) == []


def test_a_library_planned_folder_by_folder_splits_and_then_keeps_its_tracks(tmp_path, monkeypatch):
    # Past FLAC2ALL_STREAM_AFTER sources a first run is planned as the walk
    # goes, and a re-run folder by folder (the state's rows a folder at a time).
    monkeypatch.setenv("FLAC2ALL_STREAM_AFTER", "1")
    source = album(tmp_path)
    make_flac(tmp_path / "in" / "Other" / "single.flac")
    outdir = tmp_path / "out"
    run = run_flac2all("flac", tmp_path / "in", "-o", outdir, "-c")
    assert run.returncode == 0, run.stderr
    flacs = outputs(outdir, "flac", "flac")
    assert len(flacs) == 3 and b"".join(pcm(p) for p in flacs) == pcm(source)
    again = run_flac2all("flac", tmp_path / "in", "-o", outdir, "-c", "--delete")
    assert again.returncode == 0, again.stderr
    statuses = [r["conversion_status"] for r in read_log(outdir)]
    assert len(statuses) == 4 and all("skipped" in s for s in statuses), statuses
    assert outputs(outdir, "flac", "flac") == flacs


@pytest.mark.slow
def test_ctrl_c_leaves_no_track_half_made_and_the_rerun_makes_them_all(tmp_path, fake_bin):
    markers = tmp_path / "markers"
    source = album(tmp_path)
    outdir = tmp_path / "out"
    proc = start(tmp_path / "in", outdir, slow_opusenc(fake_bin, markers))  # flac2all opus,vorbis
    wait_for(lambda: len(list(markers.iterdir())) >= 1 and temp_files(outdir))
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stdout + stderr
    assert temp_files(outdir) == []
    assert not list(outdir.rglob("*.opus")) and not list(outdir.rglob("*.ogg"))
    for marker in markers.iterdir():
        assert not alive(int(marker.name))
    rerun = run_flac2all("opus,vorbis,flac", "-o", outdir, tmp_path / "in")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert len(outputs(outdir, "opus", "opus")) == 3 and len(outputs(outdir, "vorbis", "ogg")) == 3
    assert b"".join(pcm(p) for p in outputs(outdir, "flac", "flac")) == pcm(source)


@pytest.fixture
def looked(monkeypatch) -> list[Path]:
    """The FLACs the planner reads for a sheet (``cue.read_tracks``), in order."""
    seen: list[Path] = []
    real = cue.read_tracks

    def read_tracks(source, sheet_file, encoding=None):
        seen.append(source)
        return real(source, sheet_file, encoding)

    monkeypatch.setattr(cue, "read_tracks", read_tracks)
    return seen


def test_an_unchanged_source_converted_whole_is_not_opened_for_a_sheet(tmp_path, looked):
    make_flac(tmp_path / "in" / "a.flac")
    make_flac(tmp_path / "in" / "b.flac")
    for path_format in (None, "{filename}"):
        out = tmp_path / f"out-{path_format is None}"
        for _ in range(2):
            assert flac2all.convert(tmp_path / "in", out, "mp3", cue="split", path_format=path_format).exit_status == 0
        assert len(looked) == 2  # the first run's two, the no-op run's none
        looked.clear()


def put_later(sheet: Path, text: str, output: Path) -> None:
    """A sheet put beside a FLAC after its output was written (its time a
    second later: file times may have a coarser grain than a short run)."""
    sheet.write_text(text)
    later = output.stat().st_mtime_ns + 1_000_000_000
    os.utime(sheet, ns=(later, later))


@pytest.mark.parametrize("exclude", [(), ("*.cue",)])
def test_a_sheet_put_beside_a_flac_converted_whole_splits_it_on_the_next_run(tmp_path, exclude):
    album(tmp_path, cue=None)
    out = tmp_path / "out"
    assert flac2all.convert(tmp_path / "in", out, "opus", cue="split").exit_status == 0
    whole = out / "opus" / "Band" / "Disc.opus"
    assert whole.is_file() and outputs(out, "opus", "opus") == []
    put_later(tmp_path / "in" / "Band" / "Disc.cue", CUE, whole)
    # (A glob that leaves the sheet out of the walk leaves it a sheet, as on a first run.)
    assert flac2all.convert(tmp_path / "in", out, "opus", cue="split", exclude=exclude).exit_status == 0
    tracks = outputs(out, "opus", "opus")
    assert [p.stem for p in tracks] == ["01 Первая", "02 Second", "03 Third"]
    lengths = [mutagen_file(p).info.length for p in tracks]
    assert all(abs(n - (b - a) / 44100) < 0.1 for n, a, b in zip(lengths, BOUNDS, BOUNDS[1:], strict=False))
    assert mutagen_file(tracks[1])["title"] == ["Second"]
    assert whole.is_file()  # an orphan now, kept (--delete removes it)
    (row,) = [r for r in read_log(out) if r["outfile"] == str(whole)]
    assert row["conversion_status"] == f"SUCCESS ({SOURCE_HERE})" and "source here" in SOURCE_HERE
    # Split, the tracks are up to date: the next run makes nothing anew.
    before = {p: p.stat().st_mtime_ns for p in tracks}
    assert flac2all.convert(tmp_path / "in", out, "opus", cue="split").exit_status == 0
    assert {p: p.stat().st_mtime_ns for p in outputs(out, "opus", "opus")} == before


def test_a_sheet_that_does_not_fit_put_beside_a_flac_converted_whole_keeps_its_output(tmp_path):
    album(tmp_path, cue=None)
    for n in range(4):  # enough other outputs for --delete's guard to allow removing one
        make_flac(tmp_path / "in" / "Other" / f"{n}.flac", seconds=0.2)
    out = tmp_path / "out"
    assert flac2all.convert(tmp_path / "in", out, "opus", cue="split").exit_status == 0
    whole = out / "opus" / "Band" / "Disc.opus"
    made = whole.stat().st_mtime_ns
    put_later(tmp_path / "in" / "Band" / "Disc.cue", CUE.replace("00:02:00", "09:02:00"), whole)  # past its end
    report = flac2all.convert(tmp_path / "in", out, "opus", cue="split", delete=True)
    assert report.exit_status == 1
    failed = [r for r in read_log(out) if "past the end of the audio" in r["conversion_status"]]
    assert len(failed) == 1 and failed[0]["infile"].endswith("Disc.flac")
    # The whole output stays, untouched: up to date, not an orphan --delete removes.
    assert whole.stat().st_mtime_ns == made and outputs(out, "opus", "opus") == []
    assert len(list((out / "opus" / "Other").glob("*.opus"))) == 4


def test_a_flac_converted_whole_beside_its_sheet_stays_whole_and_unopened(tmp_path, looked):
    album(tmp_path)  # the sheet there from the start
    out = tmp_path / "out"
    assert flac2all.convert(tmp_path / "in", out, "opus", cue="ignore").exit_status == 0
    whole = out / "opus" / "Band" / "Disc.opus"
    made = whole.stat().st_mtime_ns
    # Converted whole with the sheet beside it, as asked then: a run with the
    # default --cue split neither splits it nor reads the sheet.
    assert flac2all.convert(tmp_path / "in", out, "opus", cue="split").exit_status == 0
    assert looked == [] and outputs(out, "opus", "opus") == [] and whole.stat().st_mtime_ns == made


def test_a_flac_split_by_force_after_it_was_converted_whole_stays_split(tmp_path):
    album(tmp_path)
    for n in range(4):  # enough other outputs for --delete's guard to allow removing one
        make_flac(tmp_path / "in" / "Other" / f"{n}.flac", seconds=0.2)
    out = tmp_path / "out"
    assert flac2all.convert(tmp_path / "in", out, "opus", cue="ignore").exit_status == 0
    whole = out / "opus" / "Band" / "Disc.opus"
    assert flac2all.convert(tmp_path / "in", out, "opus", cue="split", force=True).exit_status == 0
    tracks = outputs(out, "opus", "opus")
    assert len(tracks) == 3 and whole.is_file()  # the whole output an orphan now, kept
    # The sheet is older than the whole output, yet the FLAC stays split:
    # its tracks are up to date, and --delete removes the whole output.
    before = {p: p.stat().st_mtime_ns for p in tracks}
    assert flac2all.convert(tmp_path / "in", out, "opus", cue="split").exit_status == 0
    assert {p: p.stat().st_mtime_ns for p in outputs(out, "opus", "opus")} == before and whole.is_file()
    assert flac2all.convert(tmp_path / "in", out, "opus", cue="split", delete=True).exit_status == 0
    assert {p: p.stat().st_mtime_ns for p in outputs(out, "opus", "opus")} == before and not whole.exists()


def test_with_fat32_names_a_flac_converted_whole_beside_its_sheet_stays_whole(tmp_path, looked):
    album(tmp_path)
    out = tmp_path / "out"
    assert flac2all.convert(tmp_path / "in", out, "opus", cue="ignore", names="fat32").exit_status == 0
    whole = out / "opus" / "Band" / "Disc.opus"
    made = whole.stat().st_mtime_ns
    assert flac2all.convert(tmp_path / "in", out, "opus", cue="split", names="fat32").exit_status == 0
    assert looked == [] and outputs(out, "opus", "opus") == [] and whole.stat().st_mtime_ns == made
