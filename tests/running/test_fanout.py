"""The decoder's output reaches every encoder whole and in order, whether
the kernel passes it from pipe to pipe (no tap) or this process copies it
(a tap that measures it): with encoders that read slowly (their pipes
fill, and one takes part of a round while another takes all of it), and
with one that stops reading early (the others still get everything)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from flac2all.running import fanout
from flac2all.running.cuts import WavHead
from flac2all.running.fanout import CHUNK, run_fanout
from flac2all.running.procs import ProcessGroup
from tests.conftest import make_flac

# Several rounds' worth, not a multiple of a page or of CHUNK.
DATA = os.urandom(5 * CHUNK + 12345)


def saved(path: Path, pause: float = 0.0) -> list[str]:
    """A branch that writes what it reads to ``path``, after ``pause``
    seconds (its pipe fills meanwhile), in small reads (dd's 4 KiB)."""
    return ["sh", "-c", f'sleep {pause}; exec dd bs=4096 status=none of="$1"', "sh", str(path)]


class Tap:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def __call__(self, chunk: bytes) -> None:
        self.hash.update(chunk)


@pytest.mark.parametrize("tapped", [False, True], ids=["spliced", "copied"])
def test_every_branch_gets_the_whole_stream_even_slow_ones(tmp_path, tapped):
    source = tmp_path / "pcm"
    source.write_bytes(DATA)
    outs = [tmp_path / f"out{i}" for i in range(3)]
    branches = [[saved(outs[0])], [saved(outs[1], 0.3)], [saved(outs[2], 0.1)]]
    tap = Tap() if tapped else None
    with source.open("rb") as stdin:
        failures, ended = run_fanout(["cat"], branches, 30, ProcessGroup(), stdin, tap)
    assert failures == [None, None, None]
    assert len(ended) == 3
    for out in outs:
        assert out.read_bytes() == DATA
    if tap is not None:
        assert tap.hash.digest() == hashlib.sha256(DATA).digest()


def test_a_branch_that_stops_reading_early_leaves_the_others_whole(tmp_path):
    source = tmp_path / "pcm"
    source.write_bytes(DATA)
    outs = [tmp_path / "first", tmp_path / "last"]
    early = ["sh", "-c", "exec head -c 1000 > /dev/null"]
    first, last = [[early], [saved(outs[0], 0.1)], [saved(outs[1])]], [[saved(outs[0])], [saved(outs[1], 0.1)], [early]]
    for order in (first, last):
        with source.open("rb") as stdin:
            failures, _ = run_fanout(["cat"], order, 30, ProcessGroup(), stdin)
        assert failures == [None, None, None]
        assert [out.read_bytes() == DATA for out in outs] == [True, True]


def test_without_tee_the_stream_is_copied(tmp_path, monkeypatch):
    """Where libc has no tee(2) the copy does the work."""
    monkeypatch.setattr(fanout, "tee", lambda: None)
    source = tmp_path / "pcm"
    source.write_bytes(DATA)
    outs = [tmp_path / "a", tmp_path / "b"]
    with source.open("rb") as stdin:
        failures, _ = run_fanout(["cat"], [[saved(outs[0])], [saved(outs[1], 0.1)]], 30, ProcessGroup(), stdin)
    assert failures == [None, None]
    assert [out.read_bytes() == DATA for out in outs] == [True, True]


def test_without_pidfd_each_branch_still_ends_at_its_own_time(tmp_path, monkeypatch):
    """FreeBSD has no pidfd: the branches are looked at instead, and a quick
    mode's time is not its slow sibling's."""
    monkeypatch.delattr(os, "pidfd_open")
    source = tmp_path / "pcm"
    source.write_bytes(DATA)
    quick, slow = ["sh", "-c", "exec cat > /dev/null"], ["sh", "-c", "cat > /dev/null; sleep 0.6"]
    with source.open("rb") as stdin:
        failures, ended = run_fanout(["cat"], [[quick], [slow]], 30, ProcessGroup(), stdin)
    assert failures == [None, None]
    assert ended[1] - ended[0] > 0.4


def test_without_splice_there_is_no_tee(monkeypatch):
    """Where Python has no os.splice (FreeBSD) tee is never tried."""
    monkeypatch.delattr(os, "splice")
    fanout.tee.cache_clear()
    try:
        assert fanout.tee() is None
    finally:
        fanout.tee.cache_clear()


def test_a_decode_with_no_branch_is_read_to_its_end_by_the_tap(tmp_path):
    data = os.urandom(3 * CHUNK + 123)
    (tmp_path / "pcm").write_bytes(data)
    seen = []
    failures, ended = run_fanout(["cat", str(tmp_path / "pcm")], [], 30, ProcessGroup(), tap=seen.append)
    assert failures == [] and ended == []
    assert b"".join(seen) == data


def test_a_tracks_wav_header_is_the_decoders_format_with_its_own_size(tmp_path):
    source = make_flac(tmp_path / "s.flac", seconds=0.2, bits=24, channels=3)
    wav = subprocess.run(["flac", "-d", "-c", "-s", str(source)], capture_output=True, check=True).stdout
    (tmp_path / "s.wav").write_bytes(wav)
    with open(tmp_path / "s.wav", "rb") as f:
        head = WavHead.read(f.fileno())
        rest = f.read()
    assert head.block == 9  # 3 channels of 24 bits
    frames = 101  # an odd size: RIFF's pad byte follows
    cut = tmp_path / "cut.wav"
    cut.write_bytes(head.for_frames(frames) + rest[: frames * 9] + b"\0")
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=channels,sample_rate,duration_ts", "-of", "csv=p=0", cut],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split(",")
    assert [int(v) for v in probe] == [44100, 3, frames]
    assert head.for_frames(2**31)[4:8] == b"\xff\xff\xff\xff"  # past 4 GiB: the most RIFF says
