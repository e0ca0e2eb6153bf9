"""Unhealthy nodes: a node that cannot see the files or lacks an
encoder, and a node whose mount goes away mid-run, never cost the library;
every row says which host ran it. Real processes on 127.0.0.1; the bad
nodes live in their own mount (and host name) namespace (``unshare``), and
are skipped where namespaces cannot be made."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.processes import (
    TEST_ROOT,
    Proc,
    env_with,
    needs_namespaces,
    start_master,
    start_worker,
    wait_for_encoders,
    worker_in_namespace,
)
from tests.conftest import decodes, make_flac, read_log

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    for n in range(6):
        make_flac(root / f"d{n % 2}" / f"{n}.flac", seconds=0.2, tags={"TITLE": f"t{n}"})
    return root


def all_succeeded(out: Path, count: int) -> list[dict]:
    rows = read_log(out)
    assert len(rows) == count
    assert all(r["conversion_status"] == "SUCCESS" for r in rows), rows
    assert all(decodes(Path(r["outfile"])) for r in rows)
    return rows


@pytest.mark.slow
@needs_namespaces
def test_a_node_without_the_input_mount_gets_no_work_and_is_reported(lib, tmp_path):
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    try:
        bad = worker_in_namespace(port, "blind-node", f"mount -t tmpfs none {lib}")
        master.wait_for(r"Worker blind-node:\d+ is unhealthy and gets no work: cannot see .*input folder mounted")
        good = start_worker(port, 1)
        assert master.wait(120) == 0, master.output
        assert good.wait(30) == 0
        assert bad.wait(30) == 1, bad.output  # it refused the run
    finally:
        master.kill()
    rows = all_succeeded(out, 6)
    assert {r["host"] for r in rows} == {os.uname().nodename}
    assert "refusing this run: cannot see" in bad.output
    assert re.search(r"blind-node \(\w+ [\d.]+\): 0 done, 0 failed; unhealthy: cannot see", master.output), (
        master.output
    )


@pytest.mark.slow
@needs_namespaces
def test_a_node_whose_mount_goes_away_mid_run_is_quarantined(lib, tmp_path, fake_bin):
    """It passed its health check; then its input mount went away: its
    failures are its environment's (the master sees the sources), so they
    count against it, not the files, which a healthy node converts."""
    out = tmp_path / "out"
    slow = fake_bin("opusenc", f'case "$1" in --version) ;; *) sleep 0.5;; esac\nexec {shutil.which("opusenc")} "$@"\n')
    master, port = start_master("opus", out, lib)
    try:
        flaky = worker_in_namespace(port, "flaky-node", "true", path_prefix=slow)
        master.wait_for(r"^encoded ", timeout=30)
        hide = ["nsenter", "-t", str(flaky.proc.pid), "-m", "mount", "-t", "tmpfs", "none", str(lib)]
        subprocess.run(hide, check=True)
        master.wait_for(r"Worker flaky-node:\d+ quarantined, it gets no more jobs: 3 failures of its environment", 30)
        good = start_worker(port, 1)
        assert master.wait(120) == 0, master.output
        assert good.wait(30) == 0
        assert flaky.wait(30) == 1
    finally:
        master.kill()
    rows = all_succeeded(out, 6)
    by_host = {r["host"] for r in rows}
    assert by_host == {"flaky-node", os.uname().nodename} and sum(r["host"] == "flaky-node" for r in rows) >= 1
    assert re.search(
        r"flaky-node \(\w+ [\d.]+; flac [\d.]+, opusenc [\d.]+\): \d+ done, 0 failed; quarantined: 3 failures",
        master.output,
    ), master.output


@pytest.mark.slow
def test_a_node_without_an_encoder_gets_only_the_other_modes_jobs(lib, tmp_path):
    """Its PATH has every program but lame: mp3 jobs go to the other node,
    and a source's opus still goes to it (a job split by mode)."""
    out = tmp_path / "out"
    no_lame = tmp_path / "no-lame"
    no_lame.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for program in ("flac", "opusenc", "oggenc", "ffmpeg", "setpriv", "sh", "bash", "sleep"):
            exe = Path(folder) / program
            if exe.exists() and not (no_lame / program).exists():
                (no_lame / program).symlink_to(exe)
    env = env_with(None)
    env["PATH"] = str(no_lame)
    master, port = start_master("mp3,opus", out, lib)
    try:
        argv = [sys.executable, "-m", "flac2all.cluster.worker_cli", "127.0.0.1", "--port", str(port), "-t", "1"]
        lacking = Proc([*argv, "--insecure", "--allow", TEST_ROOT], env)
        master.wait_for(r"cannot run mp3: it gets the other modes' jobs")
        lacking.wait_for(r"^encoded +opus ", timeout=30)  # it works on what it can run
        full = start_worker(port, 1)
        assert master.wait(120) == 0, master.output
        assert lacking.wait(30) == 0 and full.wait(30) == 0
    finally:
        master.kill()
    all_succeeded(out, 12)
    assert "this node cannot run mp3 (no lame)" in lacking.output
    assert lacking.count(r"^encoded +mp3 ") == 0 and lacking.count(r"^FAILED") == 0
    assert full.count(r"^encoded +mp3 ") == 6


def test_the_master_gives_up_waiting_for_workers_and_says_how_to_start_one(lib, tmp_path):
    master, port = start_master("opus", tmp_path / "out", lib, "--wait-workers", "1")
    assert master.wait(30) == 2, master.output
    assert f"Start a worker on each worker host with: flac2all_worker 127.0.0.1 --port {port} --insecure" in (
        master.output
    )
    assert "no worker that could run it came within --wait-workers 1 s" in master.output


@pytest.mark.slow
def test_a_worker_that_stays_serves_the_next_master(lib, tmp_path):
    out1, out2 = tmp_path / "out1", tmp_path / "out2"
    master, port = start_master("opus", out1, lib)
    worker = start_worker(port, 1, "--stay", "--retry-seconds", "1")
    try:
        assert master.wait(60) == 0, master.output
        worker.wait_for(r"the run is over; waiting for the next master \(--stay\)")
        again, _ = start_master("opus", out2, lib, port=port)
        try:
            assert again.wait(60) == 0
        except Exception:
            raise AssertionError(again.output + "\n---\n" + worker.output) from None
        assert worker.proc.poll() is None  # still there for the next one
        worker.signal(15)
        assert worker.wait(20) == 0
    finally:
        master.kill()
        worker.kill()
    all_succeeded(out1, 6)
    all_succeeded(out2, 6)


@pytest.mark.slow
@needs_namespaces
def test_a_node_whose_output_mount_is_read_only_is_quarantined_and_the_run_goes_on(lib, tmp_path):
    """One worker sees the output folder read-only (its mount, not the
    output): its tasks go to another worker and it is quarantined, instead
    of the run halting as for a full disk."""
    out = tmp_path / "out"
    (out / "opus").mkdir(parents=True)
    master, port = start_master("opus", out, lib)
    try:
        bad = worker_in_namespace(port, "ro-node", f"mount --bind -o ro {out / 'opus'} {out / 'opus'}")
        master.wait_for(r"Got 1 worker")
        master.wait_for(r"Worker ro-node:\d+ quarantined, it gets no more jobs: 3 failures of its environment", 60)
        good = start_worker(port, 1)
        assert master.wait(120) == 0, master.output
        assert good.wait(30) == 0
        bad.wait(30)
    finally:
        master.kill()
    rows = all_succeeded(out, 6)
    assert {r["host"] for r in rows} == {os.uname().nodename}
    assert "read-only file system" in master.output
    assert "halt" not in master.output.lower(), master.output


def test_a_shared_output_out_of_inodes_halts_the_run_instead_of_quarantining_every_worker(lib, tmp_path, fake_bin):
    """The output's filesystem has bytes free but no inode left: the
    master, which writes there too, sees it can take no more files, so the
    workers' "no space left on device" is the output's, not theirs. The run
    stops as for a full disk ("make room and run again"), at once; it must
    not blame and quarantine every worker in turn, then wait --wait-workers
    for one that can write and end with "no worker could run it"."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=200", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    go, marks = tmp_path / "go", tmp_path / "marks"
    marks.mkdir()
    # Each encode waits for the test to use up the inodes, then tries to
    # create its output there.
    slow = fake_bin(
        "opusenc", f'touch {marks}/$$\nwhile [ ! -e {go} ]; do sleep 0.05; done\nexec {shutil.which("opusenc")} "$@"\n'
    )
    out = disk / "out"
    master = workers = None
    try:
        master, port = start_master("opus", out, lib, "--wait-workers", "20")
        workers = [start_worker(port, 1, path_prefix=slow) for _ in range(2)]
        master.wait_for(r"Got 2 worker")
        wait_for_encoders(marks, 2)
        filler = disk / "filler"
        filler.mkdir()
        for n in range(1000):
            try:
                (filler / str(n)).touch()
            except OSError:
                break
        assert os.statvfs(disk).f_favail == 0 and os.statvfs(disk).f_bavail > 1000
        go.touch()
        code = master.wait(60)
    finally:
        for proc in [master, *(workers or [])]:
            if proc is not None:
                proc.kill()
        subprocess.run(["umount", "-l", str(disk)])
    assert "no free inodes" in master.output and "no space left" not in master.output, master.output
    assert "quarantined" not in master.output, master.output
    assert "STOPPED after: no free inodes" in master.output, master.output
    assert code == 1, master.output


@pytest.mark.slow
def test_a_run_every_worker_refuses_ends_with_why_and_the_host_says_it_once(lib, tmp_path):
    """Three worker processes of one host refuse the run (its folders are
    outside --allow): the host says so once, and the master (waiting up to
    300 s for a worker by default) stops soon, with the reason."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    master, port = start_master("opus", tmp_path / "out", lib)
    try:
        worker = start_worker(port, 3, allow=(str(elsewhere),))
        assert master.wait(90) == 2, master.output
        assert worker.wait(30) == 1, worker.output
    finally:
        master.kill()
    assert "every worker refused the run" in master.output
    assert "is outside what this worker allows" in master.output
    assert worker.count(r"refusing this run: the run's input folder .* is outside what this worker allows") == 1
