"""The device library: long and accented names, names that clash once
spelled for FAT32, lossy files, big covers and a playlist."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_flac
from tests.planning.device import ACCENTS, BIG, LONG, front_cover, jpeg, lossy_files


@pytest.fixture
def device_lib(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    cover = front_cover(jpeg(BIG, BIG))
    acdc = root / "AC" / "DC"
    make_flac(acdc / '01 Track: "1"?.flac', seconds=0.15, tags={"TITLE": "colon"}, pictures=[cover])
    make_flac(acdc / "01 Track_ _1__.flac", seconds=0.15, tags={"TITLE": "underscores"})  # the same, spelled
    album = root / "Album."  # a trailing dot
    make_flac(album / "CON.flac", seconds=0.15, tags={"TITLE": "reserved"})
    make_flac(album / "Trailing..flac", seconds=0.15)
    make_flac(album / f"{LONG}.flac", seconds=0.15)
    make_flac(album / f"{LONG}?.flac", seconds=0.15)  # clashes with the one above once cut and spelled
    make_flac(album / f"{ACCENTS}.flac", seconds=0.15)
    make_flac(root / "Case" / "Song.flac", seconds=0.15)
    make_flac(root / "Case" / "song.flac", seconds=0.15)  # one name on FAT32
    (album / "cover.jpg").write_bytes(jpeg(BIG, BIG))
    lossy_files(album, tmp_path)
    (album / "list.m3u8").write_text(
        "#EXTM3U\n"
        "#EXTINF:1,reserved\nCON.flac\n"
        f"#EXTINF:1,bought\n{album / 'bought.mp3'}\n"
        '../AC/DC/01 Track: "1"?.flac\n'
        "#EXTINF:1,gone\nmissing.flac\n"
        "http://radio.invalid/stream\n"
    )
    return root
