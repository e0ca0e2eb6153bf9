"""Cluster mode with real processes and real sockets on 127.0.0.1: nothing
lost, nothing run twice, whatever happens to a worker or the master."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from flac2all.cluster import protocol
from flac2all.cluster.ledger import SMALL_COPY
from flac2all.model import Settings
from tests.cluster.processes import (
    FakeMaster,
    alive,
    free_port,
    start_master,
    start_worker,
    wait_for_encoders,
    worker_pids,
)
from tests.conftest import decodes, duration, make_flac, read_log, run_flac2all, source_length, temp_files

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    for n in range(8):
        make_flac(root / f"d{n % 2}" / f"{n}.flac", seconds=0.2, tags={"TITLE": f"t{n}"})
    return root


@pytest.fixture
def slow_opusenc(tmp_path, fake_bin):
    """An opusenc that takes ``delay`` seconds per file and marks its starts."""

    def make(delay: float, name: str = "slow") -> tuple[Path, Path]:
        marks = tmp_path / f"{name}-marks"
        marks.mkdir()
        folder = tmp_path / f"{name}-bin"
        folder.mkdir()
        exe = folder / "opusenc"
        real = shutil.which("opusenc")
        exe.write_text(f"""#!/bin/bash
case "$1" in --version) exec {real} "$@";; esac
echo $$ > {marks}/$$
sleep {delay}
exec {real} "$@"
""")
        exe.chmod(0o755)
        return folder, marks

    return make


def check_outputs(out: Path, lib: Path, modes: dict[str, str]) -> list[dict]:
    rows = read_log(out)
    sources = sorted(lib.rglob("*.flac"))
    assert len(rows) == len(sources) * len(modes)  # one row per task: none lost, none twice
    assert all(r["conversion_status"].startswith("SUCCESS") for r in rows), rows
    for src in sources:
        for mode, ext in modes.items():
            output = out / mode / src.relative_to(lib).with_suffix(ext)
            assert decodes(output)
            assert duration(output) == pytest.approx(source_length(src), abs=0.08)
    assert temp_files(out) == []
    return rows


def test_the_worker_command_lives_in_worker_cli():
    """flac2all_worker runs worker_cli.main; ``python -m`` of either module
    (the old one is used by scripts and the netns test) runs it too."""
    (script,) = entry_points(group="console_scripts", name="flac2all_worker")
    assert script.value == "flac2all.cluster.worker_cli:main"
    for module in ("flac2all.cluster.worker_cli", "flac2all.cluster.worker"):
        run = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60, check=False
        )
        assert (run.returncode, run.stdout.split()[0]) == (0, "flac2all_worker"), run.stderr


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


def test_late_joiner_gets_work_at_once(lib, tmp_path, slow_opusenc):
    slow_bin, _ = slow_opusenc(0.5)
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
        settings = protocol.settings_to_wire(Settings(Path("/in"), Path("/out"), ("opus",)))
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


def keygen(folder: Path, *args: str):
    return run_flac2all("--cluster-keygen", folder, *args)


def test_keys_authorize_the_right_worker_only_and_every_refusal_is_logged(lib, tmp_path):
    keys, other = tmp_path / "keys", tmp_path / "other"
    assert keygen(keys, "--worker", "good").returncode == 0
    assert keygen(keys, "--worker", "dropped").returncode == 0
    (keys / "authorized" / "dropped.key").unlink()  # a key the master no longer accepts
    assert keygen(other, "--worker", "stranger").returncode == 0  # another cluster's worker
    assert not (keys / "workers" / "good" / "master.key_secret").exists()  # no worker holds the master's secret
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib, "--keys", str(keys), insecure=False)
    try:
        assert "unauthenticated" not in master.output
        few = ("--retry-seconds", "3")
        unknown = start_worker(port, 1, "--keys", str(keys / "workers" / "dropped"), *few, insecure=False)
        stranger = start_worker(port, 1, "--keys", str(other / "workers" / "stranger"), *few, insecure=False)
        plain = start_worker(port, 1, *few)  # no keys at all
        assert unknown.wait(60) == 3 and stranger.wait(60) == 3 and plain.wait(60) == 3
        assert "Got 1 worker(s)" not in master.output
        good = start_worker(port, 1, "--keys", str(keys / "workers" / "good"), insecure=False)
        assert master.wait(60) == 0
        assert good.wait(30) == 0
    finally:
        master.kill()
    check_outputs(out, lib, {"opus": ".opus"})
    assert master.count(r"Refused a connection from 127\.0\.0\.1: unknown key") == 1  # once per address
    assert master.count(r"Refused a connection from .*: bad handshake") >= 1
    for refused in (unknown, stranger, plain):
        assert "handshake refused: wrong or unknown key" in refused.output, refused.output


def test_worker_refuses_to_pin_a_rogue_master(lib, tmp_path):
    """A master without the key the worker pins gets no worker."""
    keys, rogue = tmp_path / "keys", tmp_path / "rogue"
    keygen(keys, "--worker", "w")
    keygen(rogue)
    shutil.copy(keys / "authorized" / "w.key", rogue / "authorized" / "w.key")  # even if it accepts the worker
    master, port = start_master("opus", tmp_path / "out", lib, "--keys", str(rogue), insecure=False)
    try:
        worker = start_worker(port, 1, "--keys", str(keys / "workers" / "w"), "--retry-seconds", "3", insecure=False)
        assert worker.wait(60) == 3
        assert "Got 1 worker(s)" not in master.output
    finally:
        master.kill()
    assert "handshake refused: wrong or unknown key" in worker.output


def test_a_worker_missing_one_of_its_keys_is_told_which_and_where_to_get_it(tmp_path):
    keys = tmp_path / "keys"
    assert keygen(keys, "--worker", "w").returncode == 0
    mine = keys / "workers" / "w"
    (mine / "master.key").unlink()  # copied all but one
    worker = start_worker(free_port(), 1, "--keys", str(mine), "--retry-seconds", "1", insecure=False)
    assert worker.wait(30) == 2
    assert f"the key {mine / 'master.key'} is missing" in worker.output
    assert "flac2all --cluster-keygen --worker NAME" in worker.output


def test_keygen_never_overwrites_keys_unless_forced(tmp_path):
    keys = tmp_path / "keys"
    assert keygen(keys).returncode == 0
    assert keygen(keys, "--worker", "w1").returncode == 0
    before = {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()}
    again = keygen(keys)
    assert again.returncode == 2 and "already holds the master's keys" in again.stderr
    same = keygen(keys, "--worker", "w1")
    assert same.returncode == 2 and "already has keys" in same.stderr
    assert {p: p.read_bytes() for p in keys.rglob("*") if p.is_file()} == before
    assert keygen(keys, "--worker", "w1", "--force").returncode == 0
    assert (keys / "workers" / "w1" / "worker.key").read_bytes() != before[keys / "workers" / "w1" / "worker.key"]
    assert (keys / "master.key").read_bytes() == before[keys / "master.key"]


def test_the_first_master_makes_the_keys_and_a_keyless_worker_is_told_why(lib, tmp_path):
    config = tmp_path / ".config" / "flac2all" / "cluster"  # XDG_CONFIG_HOME of the test
    master, port = start_master("opus", tmp_path / "out", lib, "--wait-workers", "3", insecure=False)
    assert master.wait(30) == 2
    assert f"Made the cluster's keys in {config}" in master.output
    assert (config / "master.key_secret").is_file() and (config / "authorized").is_dir()
    assert "flac2all --cluster-keygen" in master.output  # how to give a worker keys
    worker = start_worker(port, 1, insecure=False)
    assert worker.wait(30) == 2
    assert "no worker keys in" in worker.output
    lax = start_worker(port, 1, allow=())
    assert lax.wait(30) == 2 and "--insecure needs --allow" in lax.output


def test_the_worker_tells_why_no_master_answers(tmp_path):
    """Nothing listens: connection refused; a name that does not resolve."""
    port = free_port()
    refused = start_worker(port, 1, "--retry-seconds", "2")
    assert refused.wait(30) == 3
    assert "connection refused: nothing listens on 127.0.0.1" in refused.output
    argv = [sys.executable, "-m", "flac2all.cluster.worker_cli", "no-such-host.invalid", "--insecure", "--allow", "/x"]
    unknown = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert unknown.returncode == 2 and "host name no-such-host.invalid does not resolve" in unknown.stderr


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
