"""Extras copied with -c and folder art: regular files only, never a
device, a FIFO or a link to one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mutagen.mp3 import MP3

from tests.conftest import make_flac, read_log, run_flac2all, status_by_name, temp_files


@pytest.fixture
def hostile_extras(tmp_path: Path) -> Path:
    """An album whose extras include a link to /dev/zero named like cover
    art and a FIFO nobody writes to."""
    root = tmp_path / "in"
    make_flac(root / "album" / "01.flac")
    (root / "album" / "cover.jpg").symlink_to("/dev/zero")
    os.mkfifo(root / "album" / "notes.txt")
    (root / "album" / "booklet.pdf").write_bytes(b"%PDF-1.4 booklet\n" * 100)
    return root


def test_copy_takes_regular_files_only(hostile_extras, tmp_path):
    out = tmp_path / "out"
    run = run_flac2all("mp3", "-c", "-o", out, hostile_extras, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    status = status_by_name(out)
    assert status == {
        "01.flac": "SUCCESS",
        "booklet.pdf": "SUCCESS (copied)",
        "cover.jpg": "ERROR: not a regular file (character device)",
        "notes.txt": "ERROR: not a regular file (FIFO)",
    }
    copied = out / "mp3" / "album" / "booklet.pdf"
    assert copied.read_bytes() == (hostile_extras / "album" / "booklet.pdf").read_bytes()
    assert not (out / "mp3" / "album" / "cover.jpg").exists()
    assert not (out / "mp3" / "album" / "notes.txt").exists()
    assert temp_files(out) == []


def test_folder_art_that_is_not_a_regular_file_is_not_read(hostile_extras, tmp_path):
    out = tmp_path / "out"
    run = run_flac2all("mp3", "--embed-folder-art", "-o", out, hostile_extras, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert [r["conversion_status"] for r in read_log(out)] == ["SUCCESS"]
    assert not MP3(out / "mp3" / "album" / "01.mp3").tags.getall("APIC")


@pytest.fixture
def hostile_lossy(tmp_path: Path) -> Path:
    """An album whose lossy files include a FIFO nobody writes to and a link
    to /dev/zero, each named like a lossy file (and like a FLAC file)."""
    root = tmp_path / "in"
    make_flac(root / "A" / "01.flac")
    os.mkfifo(root / "A" / "fifo.mp3")
    (root / "A" / "zero.ogg").symlink_to("/dev/zero")
    # And named like FLAC sources (each was "not a FLAC file (empty, 0 bytes)").
    os.mkfifo(root / "A" / "pipe.flac")
    (root / "A" / "devzero.flac").symlink_to("/dev/zero")
    return root


@pytest.mark.parametrize(
    "options",
    [("opus", "--lossy", "convert"), ("mp3", "--lossy", "copy", "--max-bitrate", "64")],
    ids=["convert", "bitrate"],
)
def test_lossy_files_that_are_not_regular_are_refused_not_read(hostile_lossy, tmp_path, options):
    out = tmp_path / "out"
    # A FIFO opened by the planner blocked the run for ever (and SIGTERM with
    # it); /dev/zero was read until memory ran out.
    run = run_flac2all(*options, "-o", out, hostile_lossy, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    status = status_by_name(out)
    assert status == {
        "01.flac": "SUCCESS",
        "fifo.mp3": "ERROR: not a regular file (FIFO)",
        "zero.ogg": "ERROR: not a regular file (character device)",
        "pipe.flac": "ERROR: not a regular file (FIFO)",
        "devzero.flac": "ERROR: not a regular file (character device)",
    }
    assert temp_files(out) == []
