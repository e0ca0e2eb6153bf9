"""Finding the FLAC stream in a file (flacstream.py)."""

from __future__ import annotations

from mutagen import id3

from flac2all.audio.flacstream import locate


def test_no_flac_stream_is_found_in_what_is_not_flac(tmp_path):
    mp3 = tmp_path / "song.flac"
    tag = id3.ID3()
    tag.add(id3.TIT2(encoding=3, text="x"))
    mp3.write_bytes(bytes(range(256)) * 400 + b"\xff\xfb\x90\x64" * 500)
    tag.save(mp3)
    assert locate(mp3) is None
