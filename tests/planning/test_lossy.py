"""Lossy sources under a device profile: copied, converted or skipped, and
held to a maximum bit rate."""

from __future__ import annotations

from pathlib import Path

import pytest
from mutagen.id3 import ID3
from mutagen.mp4 import MP4
from mutagen.oggopus import OggOpus

from tests.conftest import decodes, run_flac2all
from tests.planning.device import run


@pytest.mark.slow
def test_lossy_convert_skip_and_max_bitrate(device_lib, tmp_path, spy):
    out = tmp_path / "out"
    result, started = run(device_lib, out, spy, "--lossy", "convert")
    assert result.returncode == 0, result.stderr
    album, source = out / "mp3" / "Album.", device_lib / "Album."
    # mp3 -> mp3 is a copy; the other formats are converted, with their tags.
    assert (album / "bought.mp3").read_bytes() == (source / "bought.mp3").read_bytes()
    assert ID3(album / "store.mp3")["TIT2"].text == ["Bought m4a"] and decodes(album / "store.mp3")
    for name, title in (("bought.opus", "Bought mp3"), ("store.opus", "Bought m4a")):
        converted = out / "opus" / "Album." / name
        assert decodes(converted) and OggOpus(converted)["TITLE"] == [title]
    assert not list(out.rglob("*.m4a"))
    assert sum(line.startswith("ffmpeg") for line in started) == 3  # one decoder per conversion
    statuses = {(Path(r["outfile"]).name, r["conversion_status"]) for r in result.rows()}
    assert ("store.opus", "SUCCESS (converted)") in statuses and ("bought.mp3", "SUCCESS (copied)") in statuses
    again, started = run(device_lib, out, spy, "--lossy", "convert")
    assert started == [] and {r["conversion_status"] for r in again.rows()} == {"SUCCESS (skipped: up to date)"}
    # Into aac: the m4a is copied, the mp3 converted.
    aac = run_flac2all("aac", "-o", tmp_path / "aac", "--lossy", "convert", device_lib)
    assert aac.returncode == 0, aac.stderr
    assert (tmp_path / "aac" / "aac" / "Album." / "store.m4a").read_bytes() == (source / "store.m4a").read_bytes()
    assert MP4(tmp_path / "aac" / "aac" / "Album." / "bought.m4a")["\xa9nam"] == ["Bought mp3"]
    # Above --max-bitrate even mp3 -> mp3 is re-encoded.
    capped, _ = run(device_lib, tmp_path / "capped", spy, "--lossy", "copy", "--max-bitrate", "192")
    assert capped.returncode == 0, capped.stderr
    capped_mp3 = tmp_path / "capped" / "mp3" / "Album." / "bought.mp3"
    assert capped_mp3.read_bytes() != (source / "bought.mp3").read_bytes() and decodes(capped_mp3)
    assert ID3(capped_mp3)["TIT2"].text == ["Bought mp3"]
    assert (tmp_path / "capped" / "mp3" / "Album." / "store.m4a").exists()  # 96 kbit/s: copied
    # skip: not even -c copies them.
    skipped, _ = run(device_lib, tmp_path / "skipped", spy, "--lossy", "skip", "-c")
    assert skipped.returncode == 0
    names = {p.name for p in (tmp_path / "skipped" / "mp3" / "Album.").iterdir()}
    assert "cover.jpg" in names and not {"bought.mp3", "store.m4a"} & names
