"""--replaygain compute on a cluster: each track measured where it is
encoded, on whichever worker; the album gated at the master over the blocks
every worker sent back, as loudgain's album mode gates it on one host."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from mutagen.id3 import ID3

from tests.cluster.processes import start_master, start_worker
from tests.conftest import read_log, require

pytestmark = pytest.mark.timeout(180)


def album_of_twelve(folder: Path) -> list[Path]:
    """Twelve short tracks of different loudness and content."""
    folder.mkdir(parents=True)
    tracks = []
    for i in range(12):
        effects = (
            ["pinknoise", "vol", f"{0.05 + 0.07 * i:.2f}"] if i % 2 else ["sine", str(200 + 150 * i), "vol", "0.4"]
        )
        tracks.append(folder / f"{i:02}.flac")
        subprocess.run(
            ["sox", "-D", "-n", "-r", "44100", "-b", "16", "-c", "2", str(tracks[-1]), "synth", "0.8", *effects],
            check=True,
        )
    return tracks


def on_two_workers(out: Path, music: Path, *options: str):
    """``music`` converted to mp3 in ``out`` by a master and two one-slot
    workers, each of which must end well; the two workers."""
    master, port = start_master("mp3", out, music, *options)
    try:
        a, b = start_worker(port, 1), start_worker(port, 1)
        assert master.wait(150) == 0, master.output
        assert a.wait(30) == 0 and b.wait(30) == 0
    finally:
        master.kill()
    return a, b


def loudgain_album(tracks: list[Path]) -> dict[str, float]:
    """loudgain's track gain of each of ``tracks`` (by its stem), and the
    album's as 'Album'."""
    lines = subprocess.run(
        ["loudgain", "-q", "-a", "-O", *map(str, tracks)], check=True, capture_output=True, text=True
    ).stdout.splitlines()
    return {Path(line.split("\t")[0]).stem: float(line.split("\t")[8].split()[0]) for line in lines[1:]}


@pytest.mark.slow
def test_an_album_measured_on_two_workers_gets_loudgain_s_album_gain(tmp_path):
    require("loudgain")
    pytest.importorskip("scipy.signal")
    tracks = album_of_twelve(tmp_path / "music" / "album")
    out = tmp_path / "out"
    a, b = on_two_workers(out, tmp_path / "music", "--replaygain", "compute")
    assert a.count(r"^encoded ") and b.count(r"^encoded ")  # both hosts measured tracks of the album
    assert {row["conversion_status"] for row in read_log(out)} == {"SUCCESS"}
    theirs = loudgain_album(tracks)
    for track in tracks:
        tags = {f.desc: f.text[0] for f in ID3(out / "mp3" / "album" / f"{track.stem}.mp3").getall("TXXX")}
        assert float(tags["REPLAYGAIN_TRACK_GAIN"].removesuffix(" dB")) == pytest.approx(theirs[track.stem], abs=0.1)
        assert float(tags["REPLAYGAIN_ALBUM_GAIN"].removesuffix(" dB")) == pytest.approx(theirs["Album"], abs=0.1)


@pytest.mark.slow
def test_an_album_by_tags_over_two_folders_measured_on_two_workers_gets_loudgain_s_album_gain(tmp_path):
    require("loudgain")
    pytest.importorskip("scipy.signal")
    from mutagen.flac import FLAC

    tracks = album_of_twelve(tmp_path / "music" / "disc")[:6]
    moved = tmp_path / "music" / "bonus"
    moved.mkdir()
    for track in tracks[3:]:  # half the album in another folder
        track.rename(moved / track.name)
    tracks = [*tracks[:3], *(moved / t.name for t in tracks[3:])]
    for track in tracks:
        audio = FLAC(track)
        audio.update({"ALBUMARTIST": "Band", "ALBUM": "Split"})
        audio.save()
    out = tmp_path / "out"
    on_two_workers(out, tmp_path / "music", "--replaygain", "compute", "--album-by", "tags")
    assert {row["conversion_status"] for row in read_log(out)} == {"SUCCESS"}
    want = loudgain_album(tracks)["Album"]
    assert abs(loudgain_album(tracks[:3])["Album"] - want) > 0.3  # a folder's album gain fails
    for track in tracks:
        tags = {f.desc: f.text[0] for f in ID3(out / "mp3" / track.parent.name / f"{track.stem}.mp3").getall("TXXX")}
        assert float(tags["REPLAYGAIN_ALBUM_GAIN"].removesuffix(" dB")) == pytest.approx(want, abs=0.1)
