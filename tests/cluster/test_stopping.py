"""Workers and masters stopped, killed, frozen or restarted mid-run: jobs
are requeued or finished, never lost nor run twice, and the log is written."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from flac2all.cluster import jobs, protocol
from flac2all.model import Settings
from tests.cluster.outputs import check_outputs
from tests.cluster.processes import (
    FakeMaster,
    alive,
    free_port,
    start_master,
    start_worker,
    wait_for_encoders,
    worker_pids,
)
from tests.conftest import read_log, temp_files

pytestmark = pytest.mark.timeout(180)


@pytest.mark.slow
@pytest.mark.parametrize("modes", ["opus", "mp3,opus"])
def test_sigkill_of_a_worker_mid_encode_requeues_its_job(lib, tmp_path, slow_opusenc, modes):
    slow_bin, marks = slow_opusenc(30, "doomed")
    out = tmp_path / "out"
    master, port = start_master(modes, out, lib)
    per_source = len(modes.split(","))
    try:
        doomed = start_worker(port, 1, path_prefix=slow_bin)
        (pid,) = worker_pids(doomed, 1)
        encoder_pids = wait_for_encoders(marks)
        t_kill = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        # With mp3,opus its mp3 may be finished, but not the job: both go back.
        master.wait_for(rf"declared dead; {per_source} task\(s\) requeued", timeout=15)
        detected = time.monotonic() - t_kill
        rescuer = start_worker(port, 2)
        assert master.wait(120) == 0, master.output
        assert rescuer.wait(30) == 0
    finally:
        master.kill()
    assert detected < 8  # heartbeats: about 5 s
    for encoder in encoder_pids:  # its encoder died with it
        assert not alive(encoder)
    # every output whole, and no temp file of the dead worker left behind
    check_outputs(out, lib, {"mp3": ".mp3", "opus": ".opus"} if per_source == 2 else {"opus": ".opus"})
    assert rescuer.count(r"^encoded ") == 8 * per_source


@pytest.mark.slow
def test_sigstop_past_the_dead_timeout_then_sigcont(lib, tmp_path, slow_opusenc):
    slow_bin, marks = slow_opusenc(1.5, "frozen")
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    try:
        frozen = start_worker(port, 1, path_prefix=slow_bin)
        (pid,) = worker_pids(frozen, 1)
        wait_for_encoders(marks)
        os.kill(pid, signal.SIGSTOP)
        master.wait_for(r"declared dead; 1 task\(s\) requeued", timeout=15)
        helper_bin, _ = slow_opusenc(0.5, "helper")
        helper = start_worker(port, 1, path_prefix=helper_bin)
        helper.wait_for(r"^encoded ", timeout=20)
        os.kill(pid, signal.SIGCONT)  # its result for the old attempt is no longer wanted
        assert master.wait(120) == 0, master.output
        assert helper.wait(30) == 0
        frozen.wait(30)
    finally:
        master.kill()
    rows = check_outputs(out, lib, {"opus": ".opus"})
    assert len({r["outfile"] for r in rows}) == 8
    # It came back as a new session: its stale attempt counted for nothing
    # (thrown away by the master as late, or by the worker itself on resume).
    assert f":{pid})" in master.output.split("declared dead", 1)[1]


FIRST_SIGNAL_LINE = "finishing the current job, then exiting; a second Ctrl-C or SIGTERM stops at once"


@pytest.mark.slow
def test_two_sigterms_stop_a_worker_at_once_and_requeue(lib, tmp_path, slow_opusenc):
    slow_bin, marks = slow_opusenc(30, "leaving")
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    try:
        leaving = start_worker(port, 1, path_prefix=slow_bin)
        wait_for_encoders(marks)
        leaving.signal(signal.SIGTERM)
        leaving.wait_for(FIRST_SIGNAL_LINE, timeout=5)
        # Signals of one kind that arrive together count once: let the
        # worker process take the first before the second comes.
        time.sleep(0.5)
        assert master.count("said goodbye") == 0  # the first kept the job
        t0 = time.monotonic()
        leaving.signal(signal.SIGTERM)
        master.wait_for(r"said goodbye; 1 task\(s\) requeued", timeout=5)
        requeue_time = time.monotonic() - t0
        assert leaving.wait(15) == 0
        other = start_worker(port, 2)
        assert master.wait(120) == 0
        assert other.wait(30) == 0
    finally:
        master.kill()
    assert requeue_time < 3
    assert "stopping at once" in leaving.output
    for encoder in (int(p.name) for p in marks.iterdir()):
        assert not alive(encoder)
    assert leaving.count(r"^encoded ") == 0
    check_outputs(out, lib, {"opus": ".opus"})  # whole, and no temp file left
    assert other.count(r"^encoded ") == 8


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm to the parent", "ctrl-c to the process group"])
def test_first_signal_lets_the_current_job_finish(lib, tmp_path, slow_opusenc, how):
    slow_bin, marks = slow_opusenc(3, "finishing")
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    try:
        finishing = start_worker(port, 1, path_prefix=slow_bin)
        wait_for_encoders(marks)
        if how == "sigterm to the parent":
            finishing.signal(signal.SIGTERM)
        else:  # as a terminal does: every process of the group gets it, and the parent forwards it
            os.killpg(finishing.proc.pid, signal.SIGINT)
        finishing.wait_for(FIRST_SIGNAL_LINE, timeout=5)
        assert finishing.wait(30) == 0, finishing.output
        # Its result was sent before its goodbye; the master may have sent it
        # another job meanwhile, which goes back to the queue unstarted. If
        # that job went out after the worker had closed its socket, the master
        # finds it unreachable before it reads the goodbye (seen under load).
        master.wait_for(r"(said goodbye|is unreachable); [01] task\(s\) requeued", timeout=5)
        helper = start_worker(port, 2)
        assert master.wait(120) == 0, master.output
        assert helper.wait(30) == 0
    finally:
        master.kill()
    assert len(list(marks.iterdir())) == 1  # it took no other job
    assert finishing.count(r"^encoded ") == 1 and "stopping at once" not in finishing.output
    done_there = finishing.wait_for(r"^encoded .* -> (.*)$").group(1)
    rows = check_outputs(out, lib, {"opus": ".opus"})
    assert [r["conversion_status"] for r in rows if r["outfile"] == done_there] == ["SUCCESS"]
    assert helper.count(r"^encoded ") == 7 and done_there not in helper.output  # not done twice


def test_first_signal_to_an_idle_worker_says_goodbye_at_once():
    master = FakeMaster()
    worker = start_worker(master.port, 2, allow=("/in", "/out"))
    try:
        settings = jobs.settings_to_wire(Settings(Path("/in"), Path("/out"), ("opus",)))
        ready = []
        deadline = time.monotonic() + 20
        while len(ready) < 2 and (got := master.recv(deadline - time.monotonic())):
            identity, msg = got
            if msg["type"] == "hello":
                master.send(identity, protocol.welcome_to_wire(settings, protocol.Timings()))
            elif msg["type"] == "ready":
                ready.append(msg["credit"])
        assert ready == [1, 1]
        t0 = time.monotonic()
        worker.signal(signal.SIGTERM)
        byes = {master.expect("bye", timeout=5)[0] for _ in range(2)}
        assert worker.wait(10) == 0
        took = time.monotonic() - t0
    finally:
        master.close()
        worker.kill()
    assert len(byes) == 2 and took < 3
    assert worker.count(FIRST_SIGNAL_LINE) == 1  # one line, not one per process


@pytest.mark.slow
def test_master_killed_workers_stop_encoders_and_exit(lib, tmp_path, slow_opusenc):
    slow_bin, marks = slow_opusenc(30, "orphaned")
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    worker = start_worker(port, 2, "--retry-seconds", "2", path_prefix=slow_bin)
    wait_for_encoders(marks, 2)
    master.kill()
    assert worker.wait(40) != 0  # gave up on its master
    for encoder in (int(p.name) for p in marks.iterdir()):
        assert not alive(encoder)
    assert temp_files(out) == []
    assert "silent for 4 s; encoder stopped" in worker.output


@pytest.mark.slow
def test_restarted_master_resumes_and_skips_finished_outputs(lib, tmp_path, slow_opusenc):
    slow_bin, marks = slow_opusenc(0.6, "steady")
    out = tmp_path / "out"
    port = free_port()
    master, _ = start_master("opus", out, lib, port=port)
    worker = start_worker(port, 1, "--retry-seconds", "30", path_prefix=slow_bin)
    master.wait_for(r"^encoded ", timeout=30)
    master.wait_for(r"^encoded .*\n?", timeout=5)
    master.kill()
    # The job it was running when the master died may still commit: once it
    # has noticed the silence, it has (or has dropped it, with its temp file).
    worker.wait_for(r"silent for .* encoder stopped", timeout=20)
    done_before = {p: p.stat().st_mtime_ns for p in (out / "opus").rglob("*.opus")}
    assert 1 <= len(done_before) < 8
    again, _ = start_master("opus", out, lib, port=port)
    try:
        assert again.wait(120) == 0, again.output
        assert worker.wait(30) == 0
    finally:
        again.kill()
        worker.kill()
    rows = check_outputs(out, lib, {"opus": ".opus"})
    skipped = {r["outfile"] for r in rows if r["conversion_status"].startswith("SUCCESS (skipped")}
    assert skipped == {str(p) for p in done_before}
    for p, mtime in done_before.items():
        assert p.stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_ctrl_c_on_the_master_stops_the_workers_and_writes_the_log(lib, tmp_path, slow_opusenc):
    slow_bin, marks = slow_opusenc(1.0, "busy")
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    try:
        worker = start_worker(port, 2, path_prefix=slow_bin)
        master.wait_for(r"^encoded ", timeout=30)
        master.signal(signal.SIGINT)
        assert master.wait(30) == 130, master.output
        assert worker.wait(30) == 0, worker.output  # the master ended the run
    finally:
        master.kill()
    rows = read_log(out)
    assert 1 <= len(rows) < 8 and all(r["conversion_status"] == "SUCCESS" for r in rows)
    for encoder in (int(p.name) for p in marks.iterdir()):
        assert not alive(encoder)
    assert temp_files(out) == []
    assert "Interrupted" in master.output
