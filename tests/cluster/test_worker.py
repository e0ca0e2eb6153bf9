"""A worker writes only inside OUTDIR, even while someone who can write the
output tree swaps a folder for a link to another folder."""

from __future__ import annotations

import time

import pytest

from tests.cluster.processes import start_master, start_worker
from tests.conftest import make_flac
from tests.running.flipping import flip, planted

pytestmark = pytest.mark.timeout(180)


@pytest.mark.slow
def test_a_folder_flipped_to_a_link_every_millisecond_gets_nothing_from_a_worker(tmp_path):
    # Three seconds of flipping (by hand: a minute, the same), over as many
    # cluster runs as fit in them. A run may not end: the master refuses
    # to trust a worker whose output it does not see (the folder was the
    # link when it looked), and waits for another; it is stopped then.
    album = tmp_path / "in" / "A"
    make_flac(album / "song.flac", seconds=0.1)
    make_flac(album / "other.flac", seconds=0.1)
    for n in range(60):
        (album / f"{n}.txt").write_text(f"copy {n}")
    out, victim = tmp_path / "out", tmp_path / "victim"
    victim.mkdir()
    for name in ("song.mp3", "other.mp3", *(f"{n}.txt" for n in range(60))):
        (victim / name).write_bytes(b"precious")
    before = planted(victim)
    flipper, done = None, 0
    while flipper is None or flipper.poll() is None:
        master, port = start_master("mp3", out, tmp_path / "in", "-c", "--force")
        worker = start_worker(port, 1)
        try:
            master.wait_for("Commencing run")
            flipper = flipper or flip(out / "mp3" / "A", victim, 3.0)
            deadline = time.monotonic() + 10
            while master.proc.poll() is None and flipper.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            master.kill()
            worker.kill()
        done += worker.count(r"^(copied|encoded) ")
    assert int(flipper.stdout.read()) > 100
    assert done > 0
    assert planted(victim) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "victim"]
