"""Huge embedded pictures: Ogg outputs get them in seconds, in valid pages,
and a stop while a source's outputs are being tagged keeps (in the log and
the state) the outputs already committed."""

from __future__ import annotations

import base64
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mutagen.flac import Picture
from mutagen.ogg import OggPage
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

from flac2all.tags import ogg
from tests.conftest import make_flac, read_log, run_flac2all


def picture(kind: int, size: int, seed: int) -> Picture:
    pic = Picture()
    pic.type, pic.mime, pic.desc = kind, "application/octet-stream", f"blob {seed}"
    pic.data = (seed.to_bytes(4, "big") + os.urandom(4092)) * (size // 4096)
    return pic


def pictures_in(path: Path) -> list[bytes]:
    tags = (OggOpus if path.suffix == ".opus" else OggVorbis)(path).tags
    return [Picture(base64.b64decode(b)).data for b in tags["METADATA_BLOCK_PICTURE"]]


def pages_valid(path: Path) -> None:
    """Every page's CRC and sequence number, and the audio, as the Xiph
    tools and ffmpeg read them."""
    checker = "opusinfo" if path.suffix == ".opus" else "ogginfo"
    said = subprocess.run([checker, str(path)], capture_output=True, text=True)
    # (what they say of the pictures aside: it makes their exit status 1)
    complaints = [
        line
        for line in said.stdout.splitlines()
        if line.startswith(("WARNING", "ERROR")) and "METADATA_BLOCK_PICTURE" not in line
    ]
    assert complaints == [], said.stdout[-2000:]
    argv = ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a", "-f", "null", "-"]
    decoded = subprocess.run(argv, capture_output=True, text=True)
    errors = [e for e in decoded.stderr.splitlines() if "picture" not in e and "repeated" not in e]
    assert decoded.returncode == 0 and errors == [], decoded.stderr


@pytest.mark.parametrize("sizes", [(0,), (1,), (254,), (255,), (256,), (65025,), (65024, 1), (200_000, 7, 65025)])
def test_packets_are_paged_as_ogg_says(sizes):
    """Packets of every length around the lacing limits: written, read back
    whole by mutagen's page reader, each page at most 255 segments."""
    packets = [bytes([n % 251]) * n for n in sizes]
    pages = ogg.paged(packets, serial=7, sequence=1)
    assert [p.sequence for p in pages] == list(range(1, len(pages) + 1))
    assert all(len(p.write()) <= 27 + 255 + 255 * 255 for p in pages)
    assert pages[-1].complete and not pages[0].continued
    data = io.BytesIO(b"".join(p.write() for p in pages))
    reread = []
    while data.tell() < len(data.getvalue()):
        reread.append(OggPage(data))
    assert OggPage.to_packets(reread, strict=True) == packets


@pytest.fixture(scope="module")
def huge(tmp_path_factory) -> tuple[Path, list[Picture]]:
    """A source with four pictures of 13 MB each."""
    root = tmp_path_factory.mktemp("huge")
    pics = [picture(kind, 13_000_000, i) for i, kind in enumerate((3, 4, 5, 6))]
    make_flac(root / "in" / "huge.flac", seconds=1.0, tags={"TITLE": "huge"}, pictures=pics)
    return root, pics


@pytest.mark.slow
def test_huge_pictures_reach_ogg_outputs_in_seconds(huge):
    root, pics = huge
    out = root / "out"
    started = time.monotonic()
    run = run_flac2all("opus,vorbis", "-o", out, root / "in", timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert time.monotonic() - started < 45  # mutagen's own paging: minutes per output
    for path in (out / "opus" / "huge.opus", out / "vorbis" / "huge.ogg"):
        assert pictures_in(path) == [p.data for p in pics]
        pages_valid(path)
    assert OggOpus(out / "opus" / "huge.opus")["TITLE"] == ["huge"]


def retitled(tmp_path: Path, titles: list[str], **source) -> list[tuple[Path, object, ogg.Replaced]]:
    """An opus and a vorbis output of a 2 s source, their comments replaced
    by ``titles`` alone: each output, as parsed before, and what
    replace_comment did."""
    src = make_flac(tmp_path / "in" / "a.flac", seconds=2.0, **source)
    out = tmp_path / "out"
    assert run_flac2all("opus,vorbis", "-o", out, src.parent).returncode == 0
    done = []
    for path, headers in ((out / "opus" / "a.opus", 1), (out / "vorbis" / "a.ogg", 2)):
        audio = (OggOpus if headers == 1 else OggVorbis)(path)
        audio.tags.clear()
        audio.tags["TITLE"] = titles
        comment = b"OpusTags" + audio.tags.write(framing=False) if headers == 1 else b"\x03vorbis" + audio.tags.write()
        done.append((path, audio, ogg.replace_comment(path, comment, headers)))
        pages_valid(path)
        assert list(type(audio)(path).tags) == [("TITLE", t) for t in titles]
    return done


def test_a_small_comment_replaces_a_larger_one_in_place(tmp_path):
    """Fewer pages than before: the audio pages after them renumbered."""
    for _, _, replaced in retitled(tmp_path, ["short"], pictures=[picture(3, 300_000, 1)]):
        assert replaced is ogg.Replaced.DONE  # not read back: renumbered


def test_a_comment_on_as_many_pages_is_read_back_in_place(tmp_path):
    """As many header pages as before: the file read back is the one
    parsed before with the new comment (the length unchanged)."""
    for path, audio, replaced in retitled(tmp_path, ["ünïcode = value"] * 40, tags={"TITLE": "long"}):
        assert replaced is ogg.Replaced.READ_BACK
        assert type(audio)(path).info.length == audio.info.length


@pytest.mark.slow
def test_a_stop_while_outputs_are_checked_keeps_those_committed(tmp_path, fake_bin):
    """SIGTERM while the last output of a source is being checked (a flac
    --test that hangs): the run ends within seconds, and the outputs
    committed before are in the log and the state."""
    src = make_flac(tmp_path / "in" / "a.flac", seconds=0.5, tags={"TITLE": "t"})
    marker = tmp_path / "testing"
    real = subprocess.run(["which", "flac"], capture_output=True, text=True, check=True).stdout.strip()
    path = fake_bin("flac", f'case "$*" in *--test*) touch {marker}; sleep 60;; esac\nexec {real} "$@"\n')
    out = tmp_path / "out"
    env = {**os.environ, "PATH": f"{path}{os.pathsep}{os.environ['PATH']}"}
    argv = [sys.executable, "-m", "flac2all", "mp3,opus,flac", "-o", str(out), str(src.parent)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        stdout, stderr = proc.communicate(timeout=20)
        assert time.monotonic() - stopped < 10
    finally:
        proc.kill()
    committed = {p.relative_to(out) for p in out.rglob("a.*")}
    assert committed == {Path("mp3/a.mp3"), Path("opus/a.opus")}, stdout + stderr
    rows = {r["format"]: r["conversion_status"] for r in read_log(out)}
    assert rows == {"mp3": "SUCCESS", "opus": "SUCCESS"}, stdout + stderr
    with sqlite3.connect(out / ".flac2all" / "state.sqlite") as db:
        recorded = {os.fsdecode(r[0]) for r in db.execute("SELECT output FROM outputs")}
    assert recorded == {str(p) for p in committed}
