"""How a cluster run shares its work, with real processes and real sockets on
127.0.0.1: every host busy, nothing lost, nothing run twice."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from flac2all.cluster.leases import SMALL_COPY
from tests.cluster.outputs import check_outputs
from tests.cluster.processes import (
    start_master,
    start_worker,
)
from tests.conftest import make_flac, read_log, temp_files

pytestmark = pytest.mark.timeout(180)


@pytest.mark.slow
def test_normal_run_with_two_worker_hosts(lib, tmp_path, fake_bin):
    out = tmp_path / "out"
    decodes_log = tmp_path / "decodes"
    spy = fake_bin("flac", f'echo "$*" >> {decodes_log}\nexec {shutil.which("flac")} "$@"\n')
    master, port = start_master("mp3,opus", out, lib)
    try:
        a = start_worker(port, 1, path_prefix=spy)
        b = start_worker(port, 2, path_prefix=spy)
        assert master.wait(120) == 0, master.output
        assert a.wait(30) == 0 and b.wait(30) == 0
    finally:
        master.kill()
    assert "Waiting for worker(s) to connect. We need at least one worker to continue" in master.output
    assert "Got 3 worker(s)" in master.output and "Commencing run..." in master.output
    assert a.count("Spawned worker process") == 1 and b.count("Spawned worker process") == 2
    check_outputs(out, lib, {"mp3": ".mp3", "opus": ".opus"})
    assert a.count(r"^encoded ") + b.count(r"^encoded ") == 16
    assert "Files we managed to convert successfully: 16" in master.output
    # Each source went to one worker as one job: decoded once for both modes.
    decoded = [line for line in decodes_log.read_text().splitlines() if line.startswith("--decode")]
    assert len(decoded) == 8


@pytest.mark.slow
def test_small_copies_go_in_batches_and_each_is_done_once(tmp_path):
    """-c of many small files: sent as batches of copies (protocol 4), a
    large one alone; every copy made once, one log row each, all believed."""
    lib = tmp_path / "music"
    make_flac(lib / "a.flac", seconds=0.2)
    for n in range(70):
        small = lib / f"d{n % 3}" / f"{n}.txt"
        small.parent.mkdir(parents=True, exist_ok=True)
        small.write_text(f"file {n}")
    (lib / "big.bin").write_bytes(os.urandom(SMALL_COPY + 1))
    out = tmp_path / "out"
    master, port = start_master("mp3", out, lib, "-c")
    # (A process that comes after the quick run is over waits for the next
    # master: its exit status is not this test's.)
    workers = [start_worker(port, 2, "--retry-seconds", "2"), start_worker(port, 1, "--retry-seconds", "2")]
    try:
        assert master.wait(120) == 0, master.output
    finally:
        master.kill()
        for w in workers:
            w.wait(30)
    rows = read_log(out)
    assert len(rows) == 72 and len({r["outfile"] for r in rows}) == 72  # each once
    assert all(r["conversion_status"].startswith("SUCCESS") for r in rows), rows
    copied = [Path(r["outfile"]) for r in rows if r["outfile"].endswith((".txt", ".bin"))]
    assert len(copied) == 71
    for output in copied:
        assert output.read_bytes() == (lib / output.relative_to(out / "mp3")).read_bytes()
    assert sum(w.count(r"^copied ") for w in workers) == 71
    assert temp_files(out) == []


@pytest.mark.slow
def test_late_joiner_gets_work_at_once(lib, tmp_path, slow_opusenc):
    slow_bin, _ = slow_opusenc(
        1.0
    )  # a second a file: the late worker's start-up under load stays well within the first's work
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    try:
        first = start_worker(port, 1, path_prefix=slow_bin)
        master.wait_for(r"^encoded ", timeout=30)
        late = start_worker(port, 1)
        late.wait_for(r"^encoded ", timeout=10)
        assert master.wait(120) == 0
        assert first.wait(30) == 0 and late.wait(30) == 0
    finally:
        master.kill()
    assert late.count(r"^encoded ") >= 3  # it took its share as soon as it said ready
    check_outputs(out, lib, {"opus": ".opus"})


@pytest.mark.slow
def test_slow_worker_never_hoards_tasks(lib, tmp_path, slow_opusenc):
    slow_bin, _ = slow_opusenc(2.0, "tortoise")
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    try:
        tortoise = start_worker(port, 1, path_prefix=slow_bin)
        # Known to the master before the hare can finish the run alone (a
        # worker that comes after the run waits out its --retry-seconds).
        master.wait_for(r"Got 1 worker")
        hare = start_worker(port, 1)
        assert master.wait(120) == 0
        tortoise.wait(30)
        hare.wait(30)
    finally:
        master.kill()
    # With one slot it holds one task at a time: the fast worker does the rest.
    assert tortoise.count(r"^encoded ") <= 2
    assert hare.count(r"^encoded ") >= 6
    check_outputs(out, lib, {"opus": ".opus"})
