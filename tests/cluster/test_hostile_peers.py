"""Hostile peers against a real master, a hostile master against a real
worker: nobody crashes, nothing is written outside the allowed folders, and
no forged SUCCESS reaches the CSV; one test per attack."""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import zmq

from flac2all.cluster import jobs, protocol
from flac2all.cluster import keys as cluster_keys
from flac2all.cluster.protocol import Checks, ProtocolError, Timings
from flac2all.model import Action, Settings, Task
from tests.cluster.processes import FakeMaster, a_real_worker_finishes, start_master, start_worker
from tests.conftest import decodes, duration, make_flac, read_log, run_flac2all
from tests.running.flipping import flip

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    for n in range(4):
        make_flac(root / f"{n}.flac", seconds=0.2)
    return root


class FakeWorker:
    """A bare DEALER that talks to a real master as the test says."""

    def __init__(
        self,
        ctx: zmq.Context,
        port: int,
        host: str,
        session: str | None = None,
        slots: int = 1,
        keys: Path | None = None,
    ) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if keys is not None:  # a worker's key folder (flac2all --cluster-keygen --worker NAME)
            mine = cluster_keys.worker_keys(keys)
            self.sock.curve_secretkey, self.sock.curve_publickey = mine.secret, mine.public
            self.sock.curve_serverkey = mine.master_public
        self.sock.connect(f"tcp://127.0.0.1:{port}")
        self.host, self.slots = host, slots
        self.hello(session)

    def hello(self, session: str | None = None) -> None:
        """A hello: a new session (on the same connection after the first)."""
        self.session = session or uuid.uuid4().hex
        self.sock.send(protocol.hello_to_wire(self.session, self.host, 1, self.slots))

    def join(self, modes: list[str], credit: int = 1) -> None:
        self.sock.send(protocol.health_to_wire("", modes))
        self.sock.send(protocol.ready_to_wire(credit))

    def messages(self, seconds: float) -> list[dict]:
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.sock.poll(int(left * 1000) + 1):
                got.append(protocol.decode(self.sock.recv()))
        return got

    def beat(self) -> None:
        self.sock.send(protocol.heartbeat_to_wire())


def only_true_successes(out: Path, count: int, liar: str) -> None:
    rows = read_log(out)
    assert len(rows) == count
    assert all(r["conversion_status"] == "SUCCESS" for r in rows), rows
    assert all(decodes(Path(r["outfile"])) for r in rows)
    assert liar not in {r["host"] for r in rows}


@pytest.mark.slow
def test_a_session_clash_is_refused_and_the_run_goes_on(lib, tmp_path):
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    ctx = zmq.Context()
    try:
        first = FakeWorker(ctx, port, "first")
        assert [m["type"] for m in first.messages(2) if m["type"] != "heartbeat"] == ["welcome"]
        thief = FakeWorker(ctx, port, "thief", session=first.session)  # another connection, the same session
        assert thief.messages(1) == []
        first.sock.send(protocol.bye_to_wire())
        a_real_worker_finishes(master, port)
    finally:
        ctx.destroy(0)
        master.kill()
    only_true_successes(out, 4, "thief")
    assert "Got 2 worker(s)" not in master.output.split("said goodbye")[0]


@pytest.mark.slow
def test_a_forged_success_is_not_believed(lib, tmp_path):
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    ctx = zmq.Context()
    try:
        liar = FakeWorker(ctx, port, "liar")
        liar.join(["opus"])
        jobs = [m for m in liar.messages(3) if m["type"] == "job"]
        assert len(jobs) == 1  # its one slot
        for task in jobs[0]["tasks"]:
            result = {"id": task["id"], "attempt": task["attempt"], "status": "success", "message": ""}
            liar.sock.send(json.dumps({"v": protocol.VERSION, "type": "result", **result, "returncode": 0,
                                       "elapsed": 0.1, "facts": None}).encode())  # fmt: skip
        master.wait_for(r"Worker liar:1 quarantined, it gets no more jobs: claimed \d\.opus \(opus\) done, but")
        liar.beat()
        assert not [m for m in liar.messages(1) if m["type"] == "job"]  # no more work for it
        a_real_worker_finishes(master, port)
    finally:
        ctx.destroy(0)
        master.kill()
    only_true_successes(out, 4, "liar")
    assert "the master does not see the output" in master.output
    assert "1 claimed result(s) not believed" in master.output
    assert "liar: 0 done, 0 failed; quarantined: claimed" in master.output


@pytest.mark.slow
def test_credit_hoarding_is_capped_and_leases_take_the_jobs_back(lib, tmp_path):
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib, "--max-slots", "2", "--timeout", "1")
    ctx = zmq.Context()
    try:
        greedy = FakeWorker(ctx, port, "greedy", slots=1024)  # more than any hello may declare: dropped
        assert greedy.messages(1) == []
        hoarder = FakeWorker(ctx, port, "hoarder", slots=protocol.MAX_SLOTS)
        hoarder.join(["opus"], credit=protocol.MAX_SLOTS)
        got = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "lease" not in master.output:
            got += [m for m in hoarder.messages(0.5) if m["type"] == "job"]
            hoarder.beat()  # alive, but it never answers
        assert len(got) == 2  # capped at --max-slots
        master.wait_for(r"Worker hoarder:1 held a job past its lease; 1 task\(s\) requeued")
        worker = start_worker(port, 1)
        while master.proc.poll() is None:
            hoarder.beat()
            hoarder.messages(0.5)
        assert master.wait(10) == 0, master.output
        assert worker.wait(30) == 0
    finally:
        ctx.destroy(0)
        master.kill()
    only_true_successes(out, 4, "hoarder")
    assert "quarantined, it gets no more jobs: held a job past its lease of 12 s" in master.output


def welcome_and_health(fake: FakeMaster, settings: Settings, checks: Checks | None = None) -> tuple[bytes, dict]:
    identity, _ = fake.expect("hello")
    fake.send(identity, protocol.welcome_to_wire(jobs.settings_to_wire(settings), Timings(), checks or Checks()))
    return identity, fake.expect("health")[1]


def test_a_master_declaring_root_is_refused(tmp_path):
    fake = FakeMaster()
    worker = start_worker(fake.port, 1, "--retry-seconds", "5")
    target = Path("/flac2all-test-evil") / uuid.uuid4().hex
    try:
        identity, health = welcome_and_health(fake, Settings(Path("/"), Path("/"), ("opus",), copy=True))
        assert "the run's input folder / is outside what this worker allows" in health["problem"]
        assert fake.expect("ready")[1]["credit"] == 0
        job = {"source": "/etc/hostname", "action": "copy", "size": 10, "tasks": [
            {"id": 1, "attempt": 0, "mode": "opus", "output": f"{target}/hostname", "settings_hash": ""}]}  # fmt: skip
        fake.send(identity, protocol.encode("job", **job))
        _, refusal = fake.expect("result")
        assert refusal["status"] == "failed" and "refused the run" in refusal["message"]
        fake.send(identity, protocol.shutdown_to_wire())
        assert worker.wait(20) == 1
    finally:
        fake.close()
        worker.kill()
    assert not target.parent.exists()


def test_symlinks_in_the_run_never_lead_a_job_outside(tmp_path):
    src = make_flac(tmp_path / "music" / "a.flac", seconds=0.2)
    out = tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "mp3").mkdir(parents=True)
    (out / "evil").symlink_to(elsewhere)  # a folder inside OUTDIR that leads out
    victim = elsewhere / "victim.mp3"
    victim.write_bytes(b"precious")
    (out / "mp3" / "b.mp3").symlink_to(victim)  # an output that is a link
    (tmp_path / "music" / "secret.txt").symlink_to("/etc/hostname")  # a source that leads out
    fake = FakeMaster()
    worker = start_worker(fake.port, 1, "--retry-seconds", "5")
    try:
        identity, health = welcome_and_health(fake, Settings(src.parent, out, ("mp3",), copy=True))
        assert health["problem"] == ""
        jobs = [
            ("encode", str(src), str(out / "evil" / "a.mp3")),
            ("encode", str(src), str(out / "mp3" / "b.mp3")),
            ("copy", str(tmp_path / "music" / "secret.txt"), str(out / "mp3" / "secret.txt")),
        ]
        for n, (action, source, output) in enumerate(jobs):
            task = {"id": n, "attempt": 0, "mode": "mp3", "output": output, "settings_hash": ""}
            fake.send(identity, protocol.encode("job", source=source, action=action, size=1, tasks=[task]))
        messages = [fake.expect("result")[1]["message"] for _ in jobs]
        fake.send(identity, protocol.shutdown_to_wire())
        worker.wait(20)
    finally:
        fake.close()
        worker.kill()
    assert "resolves outside the run's output folder" in messages[0]
    assert "exists and is not a regular file" in messages[1]
    assert "resolves outside the run's input folder" in messages[2]
    assert [p.name for p in elsewhere.iterdir()] == ["victim.mp3"] and victim.read_bytes() == b"precious"
    assert not (out / "mp3" / "secret.txt").exists()


def answers(fake: FakeMaster, identity: bytes, worker, frames: list[bytes], count: int) -> list[dict]:
    """Send a worker these jobs, read ``count`` results, end its run."""
    for frame in frames:
        fake.send(identity, frame)
    results = [fake.expect("result")[1] for _ in range(count)]
    fake.send(identity, protocol.shutdown_to_wire())
    worker.wait(20)
    return results


def test_the_runs_folders_swapped_for_links_after_the_welcome_lead_no_job_outside(tmp_path):
    music, out, elsewhere = tmp_path / "music", tmp_path / "out", tmp_path / "elsewhere"
    src = make_flac(music / "a.flac", seconds=0.2)
    (music / "c.txt").write_text("c")
    for folder in (out, elsewhere):
        (folder / "mp3").mkdir(parents=True)
    fake = FakeMaster()
    worker = start_worker(fake.port, 1, "--retry-seconds", "5", allow=(str(music), str(out)))
    try:
        identity, health = welcome_and_health(fake, Settings(music, out, ("mp3",), copy=True))
        assert health["problem"] == ""
        out.rename(tmp_path / "out.real")  # a user who may write the folders' parent swaps them
        out.symlink_to(elsewhere)
        music.rename(tmp_path / "music.real")
        music.symlink_to(tmp_path / "music.real")
        batch = [
            (0, 0, Task(src, "mp3", out / "mp3" / "a.mp3", Action.ENCODE, 1)),
            (1, 0, Task(music / "c.txt", "mp3", out / "mp3" / "c.txt", Action.COPY, 1)),
        ]
        results = answers(fake, identity, worker, [jobs.job_to_wire([task]) for task in batch], len(batch))
    finally:
        fake.close()
        worker.kill()
    assert all(r["status"] == "failed" and "now resolves elsewhere" in r["message"] for r in results), results
    assert list(elsewhere.rglob("*")) == [elsewhere / "mp3"]


@pytest.mark.slow
@pytest.mark.parametrize("side", ["input", "output"])
def test_a_runs_folder_flipped_to_a_link_and_back_during_copies_leads_no_read_or_write_outside(tmp_path, side):
    music, out, elsewhere = tmp_path / "music", tmp_path / "out", tmp_path / "elsewhere"
    for n in range(150):  # the files of the same names elsewhere: secrets
        for folder, text in ((music, "x"), (elsewhere, "S")):
            folder.mkdir(exist_ok=True)
            (folder / f"{n}.txt").write_text(text * n)
    for folder in (out, elsewhere):
        (folder / "mp3").mkdir(parents=True)
    flipped = music if side == "input" else out
    fake = FakeMaster()
    worker = start_worker(fake.port, 1, "--retry-seconds", "5", allow=(str(music), str(out)))
    flipper = None
    try:
        identity, health = welcome_and_health(fake, Settings(music, out, ("mp3",), copy=True))
        assert health["problem"] == ""
        flipper = flip(flipped, elsewhere, 3.0)
        for n in range(150):
            task = Task(music / f"{n}.txt", "mp3", out / "mp3" / f"{n}.txt", Action.COPY, n)
            fake.send(identity, jobs.job_to_wire([(n, 0, task)]))
            fake.expect("result")
        assert int(flipper.communicate(timeout=20)[0]) > 100  # flips
        fake.send(identity, protocol.shutdown_to_wire())
        worker.wait(20)
    finally:
        fake.close()
        worker.kill()
        if flipper is not None:
            flipper.kill()
    assert sorted(p.name for p in (elsewhere / "mp3").iterdir()) == []
    assert not [p for p in (out / "mp3").iterdir() if "S" in p.read_text()]


def test_a_link_leading_out_in_a_batch_of_copies_is_refused_alone(tmp_path):
    music, out = tmp_path / "music", tmp_path / "out"
    music.mkdir()
    for name in ("a.txt", "c.txt"):
        (music / name).write_text(name)
    (music / "b.txt").symlink_to("/etc/hostname")
    fake = FakeMaster()
    worker = start_worker(fake.port, 1, "--retry-seconds", "5")
    try:
        identity, health = welcome_and_health(fake, Settings(music, out, ("mp3",), copy=True))
        assert health["problem"] == ""
        batch = [
            (n, 0, Task(music / name, "mp3", out / "mp3" / name, Action.COPY, 5))
            for n, name in enumerate(("a.txt", "b.txt", "c.txt"))
        ]
        results = answers(fake, identity, worker, [jobs.job_to_wire(batch)], len(batch))
    finally:
        fake.close()
        worker.kill()
    by_id = {r["id"]: r for r in results}
    assert sorted(by_id) == [0, 1, 2]
    assert by_id[1]["status"] == "failed" and "resolves outside the run's input folder" in by_id[1]["message"]
    assert by_id[0]["status"] == by_id[2]["status"] == "success"  # its neighbours in the batch are done
    assert sorted(p.name for p in (out / "mp3").iterdir()) == ["a.txt", "c.txt"]


@pytest.mark.parametrize(
    "family,words",
    [("ffmpeg", ["-b:a", "128k", "evil.mka"]), ("opus", ["--save-range", "evil.txt"]), ("lame", ["--ti", "x"])],
)
def test_encoder_options_that_name_files_are_refused_by_workers(tmp_path, family, words):
    fake = FakeMaster()
    worker = start_worker(fake.port, 1, "--retry-seconds", "5")
    settings = jobs.settings_to_wire(Settings(tmp_path, tmp_path / "out", ("opus",)))
    try:
        identity, _ = fake.expect("hello")
        bad = {**settings, "options": {**settings["options"], family: words}}
        fake.send(identity, protocol.welcome_to_wire(bad, Timings()))
        worker.wait_for(r"dropped a message: ", timeout=10)
        fake.send(identity, protocol.welcome_to_wire(settings, Timings()))  # the worker lives on
        assert fake.expect("health")[1]["problem"] == ""
        fake.send(identity, protocol.shutdown_to_wire())
        assert worker.wait(20) == 0
    finally:
        fake.close()
        worker.kill()
    assert not [p for p in tmp_path.rglob("evil*")]
    with pytest.raises(ProtocolError):
        protocol.option_words(family, words)


def test_the_master_refuses_file_naming_options_before_any_work(lib, tmp_path):
    run = run_flac2all("f:libopus", "-m", "--insecure", "--ffmpeg-options=-b:a 128k evil.mka", "-o", tmp_path, lib)
    assert run.returncode == 2 and "evil.mka" in run.stderr
    assert not os.path.exists(tmp_path / "evil.mka")


NESTED = b"[" * 2000 + b"]" * 2000  # deeper than the interpreter's recursion limit


def raw(**msg) -> bytes:
    """A frame as a peer may write it: lone surrogates as JSON escapes."""
    return json.dumps({"v": protocol.VERSION, **msg}).encode()


@pytest.mark.slow
def test_nested_frames_and_lone_surrogates_neither_crash_nor_reach_the_log(lib, tmp_path):
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    ctx = zmq.Context()
    try:
        nester = FakeWorker(ctx, port, "nester")
        nester.sock.send(NESTED)
        nester.sock.send(b'{"v":5,"type":"hello","session":' + NESTED + b"}")
        ghost = ctx.socket(zmq.DEALER)  # a host name no terminal or log can take
        ghost.connect(f"tcp://127.0.0.1:{port}")
        ghost.send(raw(type="hello", session=uuid.uuid4().hex, host="\ud800\x1b[2J", pid=1, slots=1))
        sick = FakeWorker(ctx, port, "sick")
        sick.sock.send(raw(type="health", problem="disk \ud800 gone", modes=["opus"]))  # refused
        sick.sock.send(raw(type="health", problem="disk \x1b[2J gone", modes=["opus"]))
        master.wait_for(r"Worker sick:1 is unhealthy and gets no work: disk \\x1b\[2J gone")
        liar = FakeWorker(ctx, port, "liar")
        liar.join(["opus"])
        [job] = [m for m in liar.messages(3) if m["type"] == "job"]
        for task in job["tasks"]:
            for message in ("bad \ud800", "bad \x1b]0;pwned\x07"):  # the first refused
                liar.sock.send(raw(type="result", id=task["id"], attempt=task["attempt"], status="failed",
                                   message=message, returncode=1, elapsed=0.1))  # fmt: skip
        liar.sock.send(protocol.bye_to_wire())
        worker = start_worker(port, 1)
        assert master.wait(60) == 1, master.output  # the liar's task failed, as it said
        assert worker.wait(30) == 0
    finally:
        ctx.destroy(0)
        master.kill()
    assert "Traceback" not in master.output
    assert "\x1b" not in master.output
    rows = read_log(out)
    assert len(rows) == 4
    [failed] = [r for r in rows if r["conversion_status"] != "SUCCESS"]
    assert "bad \\x1b]0;pwned\\x07" in failed["conversion_status"]
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".*log*"))


def test_a_rogue_masters_nested_frame_or_surrogate_path_does_not_kill_a_worker(tmp_path):
    src = make_flac(tmp_path / "music" / "a.flac", seconds=0.2)
    out = tmp_path / "out"
    fake = FakeMaster()
    worker = start_worker(fake.port, 1, "--retry-seconds", "5")
    try:
        identity, health = welcome_and_health(fake, Settings(src.parent, out, ("mp3",)))
        assert health["problem"] == ""
        fake.send(identity, NESTED)
        task = {"id": 1, "attempt": 0, "mode": "mp3", "output": f"{out}/mp3/\ud800.mp3", "settings_hash": ""}
        fake.send(identity, raw(type="job", source=f"{src.parent}/\ud800.flac", action="encode", size=1, tasks=[task]))
        fake.send(identity, raw(type="job", source=str(src), action="encode", size=1, tasks=[task]))
        worker.wait_for(r"dropped a message: .*(surrogate|truncated)", timeout=10)
        fake.send(identity, protocol.heartbeat_to_wire())
        fake.send(identity, protocol.shutdown_to_wire())
        assert worker.wait(20) in (0, 1)
    finally:
        fake.close()
        worker.kill()
    assert "Traceback" not in worker.output
    assert worker.output.count("dropped a message") == 3
    assert not (out / "mp3").exists() or not list((out / "mp3").iterdir())


def fail_for_its_environment(liar: FakeWorker, count: int) -> None:
    """Take ``count`` jobs and answer each as a worker that cannot read the
    source (which the master can: the worker's own fault)."""
    for _ in range(count):
        [job] = [m for m in liar.messages(3) if m["type"] == "job"]
        for task in job["tasks"]:
            liar.sock.send(raw(type="result", id=task["id"], attempt=task["attempt"], status="failed",
                               message="cannot read", returncode=1, elapsed=0.1, cause="source-missing"))  # fmt: skip


@pytest.mark.slow
def test_blame_and_quarantine_follow_the_key_not_the_name_in_a_hello(lib, tmp_path):
    keys, out = tmp_path / "keys", tmp_path / "out"
    for name in ("honest", "mallory"):
        assert run_flac2all("--cluster-keygen", keys, "--worker", name).returncode == 0
    master, port = start_master("opus", out, lib, "--keys", str(keys), insecure=False)
    ctx = zmq.Context()
    try:
        # Mallory says it is the honest worker's host, and fails three jobs
        # for its "environment": the blame must not land on that host.
        mallory = FakeWorker(ctx, port, socket.gethostname(), keys=keys / "workers" / "mallory")
        mallory.join(["opus"])
        fail_for_its_environment(mallory, 3)
        master.wait_for(r"quarantined, it gets no more jobs: 3 failures of its environment")
        mallory.hello()  # a new session on the same connection
        mallory.join(["opus"])
        assert not [m for m in mallory.messages(2) if m["type"] == "job"]
        mallory.sock.send(protocol.bye_to_wire())
        honest = start_worker(port, 1, "--keys", str(keys / "workers" / "honest"), insecure=False)
        assert master.wait(60) == 0, master.output
        assert honest.wait(30) == 0
    finally:
        ctx.destroy(0)
        master.kill()
    rows = read_log(out)
    assert len(rows) == 4 and all(r["conversion_status"] == "SUCCESS" for r in rows), rows
    assert len({r["host"] for r in rows}) == 1  # the honest worker's, told apart from the name mallory took


def test_an_insecure_master_warns_that_a_worker_is_known_by_its_hellos_host_name(lib, tmp_path):
    """Without keys nothing proves who a peer is: the master says so at start."""
    master, _ = start_master("opus", tmp_path / "out", lib)
    master.kill()
    assert "WARNING: --insecure: the cluster is unauthenticated and unencrypted" in master.output
    assert "a worker is known by the host name its hello gives, which any peer can claim" in master.output


def tagged_junk(output: Path, settings_hash: str, tmp_path: Path) -> None:
    """What a forger writes: a 0.1 s mp3 that carries the job's own
    provenance line, under the output's final name."""
    from mutagen.id3 import ID3, TXXX

    junk = make_flac(tmp_path / "junk" / f"{uuid.uuid4().hex}.flac", seconds=0.1)
    output.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["lame", "--silent", str(junk), str(output)], check=True, timeout=30)
    tags = ID3()
    tags.add(TXXX(desc="FLAC2ALL_SOURCE", text=[f"v1 md5= settings={settings_hash} tags= pictures="]))
    tags.save(output)  # (lame writes no ID3 tag of its own here)


@pytest.mark.slow
def test_a_tagged_junk_output_is_not_believed(tmp_path):
    lib, out = tmp_path / "music", tmp_path / "out"
    for n in range(2):
        make_flac(lib / f"{n}.flac", seconds=2.0)
    master, port = start_master("mp3", out, lib)
    ctx = zmq.Context()
    try:
        forger = FakeWorker(ctx, port, "forger")
        forger.join(["mp3"])
        [job] = [m for m in forger.messages(3) if m["type"] == "job"]
        for task in job["tasks"]:
            tagged_junk(Path(task["output"]), task["settings_hash"], tmp_path)
            forger.sock.send(raw(type="result", id=task["id"], attempt=task["attempt"], status="success",
                                 message="", returncode=0, elapsed=0.5))  # fmt: skip
        master.wait_for(r"Worker forger:1 quarantined, it gets no more jobs: claimed \d\.mp3 \(mp3\) done, but")
        forger.sock.send(protocol.bye_to_wire())
        a_real_worker_finishes(master, port)
    finally:
        ctx.destroy(0)
        master.kill()
    assert "output lasts 0.1" in master.output
    rows = read_log(out)
    assert len(rows) == 2 and all(r["conversion_status"] == "SUCCESS" and r["host"] != "forger" for r in rows)
    for row in rows:
        assert duration(Path(row["outfile"])) == pytest.approx(2.0, abs=0.1)


@pytest.mark.slow
def test_a_forged_copy_of_another_size_is_not_believed(tmp_path):
    lib, out = tmp_path / "music", tmp_path / "out"
    make_flac(lib / "a.flac", seconds=0.2)
    (lib / "cover.jpg").write_bytes(b"J" * 5000)
    master, port = start_master("opus", out, lib, "-c")
    ctx = zmq.Context()
    try:
        forger = FakeWorker(ctx, port, "forger")
        forger.join(["opus"])
        for _ in range(2):  # a job each (the run plans the encode first)
            [job] = [m for m in forger.messages(3) if m["type"] == "job"]
            for task in job["tasks"]:  # the encode "cannot run here"; the copy "done", as 4 bytes of junk
                copy = job["action"] == "copy"
                if copy:
                    Path(task["output"]).parent.mkdir(parents=True, exist_ok=True)
                    Path(task["output"]).write_bytes(b"junk")
                forger.sock.send(raw(type="result", id=task["id"], attempt=task["attempt"],
                                     status="success" if copy else "failed", message="", returncode=0,
                                     elapsed=0.1, cause="" if copy else "source-missing"))  # fmt: skip
            forger.sock.send(protocol.ready_to_wire(1))
        master.wait_for(r"Worker forger:1 quarantined, it gets no more jobs: claimed cover\.jpg \(opus\) done, but")
        forger.sock.send(protocol.bye_to_wire())
        a_real_worker_finishes(master, port)
    finally:
        ctx.destroy(0)
        master.kill()
    rows = read_log(out)
    assert len(rows) == 2 and all(r["conversion_status"].startswith("SUCCESS") for r in rows), rows
    assert "forger" not in {r["host"] for r in rows}
    assert (out / "opus" / "cover.jpg").read_bytes() == b"J" * 5000


@pytest.mark.slow
def test_a_forged_disk_quota_does_not_halt_the_run(lib, tmp_path):
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    ctx = zmq.Context()
    try:
        liar = FakeWorker(ctx, port, "liar")
        liar.join(["opus"])
        [job] = [m for m in liar.messages(3) if m["type"] == "job"]
        for task in job["tasks"]:
            liar.sock.send(raw(type="result", id=task["id"], attempt=task["attempt"], status="failed",
                               message=f"disk quota exceeded ({out})", returncode=1, elapsed=0.1,
                               cause="disk-full"))  # fmt: skip
        liar.sock.send(protocol.bye_to_wire())
        a_real_worker_finishes(master, port)
    finally:
        ctx.destroy(0)
        master.kill()
    assert "STOPPED" not in master.output
    only_true_successes(out, 4, "liar")


def resident_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_five_thousand_idle_connections_neither_exhaust_nor_fool_the_master(lib, tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 6000:
        pytest.skip("this test holds 5,000 connections: it needs a hard limit of 6,000 open files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (6000, hard))
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib, fd_limit=1024)  # the common limit, soft and hard
    flood: list[socket.socket] = []
    try:
        before = resident_kib(master.proc.pid)
        for _ in range(5000):  # from another loopback address than the worker's
            s = socket.socket()
            s.setblocking(False)
            s.bind(("127.0.0.2", 0))
            s.connect_ex(("127.0.0.1", port))
            flood.append(s)
        time.sleep(3)
        during = resident_kib(master.proc.pid)
        held = len(os.listdir(f"/proc/{master.proc.pid}/fd"))
        worker = start_worker(port, 1)
        assert master.wait(120) == 0, master.output
        assert worker.wait(30) == 0
    finally:
        for s in flood:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        master.kill()
    assert during - before < 64 * 1024, (before, during)
    assert held < 512  # the master keeps descriptors for its own files (its outputs' checks, the log)
    assert "quarantined" not in master.output
    only_true_successes(out, 4, "127.0.0.2")
    assert master.count(r"Refused a connection from 127\.0\.0\.2: more than \d+ connections at once") == 1


@pytest.mark.slow
def test_a_flood_of_junk_frames_neither_starves_honest_workers_nor_floods_the_log(lib, tmp_path):
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    ctx = zmq.Context()
    done = threading.Event()

    def flood() -> None:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{port}")
        junk = [b"junk", NESTED, b"[1,2]", raw(type="ready", credit="all")]
        while not done.is_set():
            for frame in junk:
                try:
                    sock.send(frame, zmq.NOBLOCK)
                except zmq.Again:
                    time.sleep(0.001)
        sock.close(0)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        master.wait_for(r"dropped a message from a worker")
        started = time.monotonic()
        worker = start_worker(port, 1)
        assert master.wait(40) == 0, master.output[-3000:]
        assert worker.wait(30) == 0
        took = time.monotonic() - started
    finally:
        done.set()
        flooder.join(10)
        ctx.destroy(0)
        master.kill()
    only_true_successes(out, 4, "")
    assert took < 30, took
    assert len(master.output) < 20_000  # a line per connection every 10 s, not one per frame


@pytest.mark.slow
def test_a_flood_of_hellos_on_one_connection_does_not_flood_the_log(lib, tmp_path):
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)
    ctx = zmq.Context()
    try:
        flooder = FakeWorker(ctx, port, "flooder")
        for n in range(3000):  # a new session and a new name each time, all valid
            flooder.host = f"flooder{n}"
            flooder.hello()
        master.wait_for(r"dropped a message from worker flooder\d+:1: more than \d+ hellos on one connection")
        a_real_worker_finishes(master, port)
    finally:
        ctx.destroy(0)
        master.kill()
    only_true_successes(out, 4, "flooder")
    assert len(master.output) < 20_000, master.output[-2000:]


@pytest.mark.slow
def test_a_hoarder_earns_no_more_than_it_returns_and_handing_back_counts_against_it(lib, tmp_path):
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib)  # the default --max-slots
    ctx = zmq.Context()
    try:
        hoarder = FakeWorker(ctx, port, "hoarder", slots=protocol.MAX_SLOTS)
        taken = []
        for n in range(3):  # take what it can, then a new hello (under a new name) hands it all back
            hoarder.join(["opus"], credit=protocol.MAX_SLOTS)
            taken.append(len([m for m in hoarder.messages(2) if m["type"] == "job"]))
            hoarder.host = f"hoarder{n}"
            hoarder.hello()
        hoarder.join(["opus"], credit=protocol.MAX_SLOTS)
        assert not [m for m in hoarder.messages(2) if m["type"] == "job"]
        master.wait_for(r"Worker hoarder\d?:1 quarantined, it gets no more jobs: handed back unfinished jobs 3 times")
        hoarder.sock.send(protocol.bye_to_wire())
        a_real_worker_finishes(master, port)
    finally:
        ctx.destroy(0)
        master.kill()
    assert taken == [2, 2, 2]  # a slow start, begun again after each hand-back
    only_true_successes(out, 4, "hoarder")
    assert not any(r["host"].startswith("hoarder") for r in read_log(out))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_run_with_a_hostile_peer_and_an_honest_worker_ends_with_every_output_real(tmp_path):
    lib, out = tmp_path / "music", tmp_path / "out"
    sources = [make_flac(lib / f"{n}.flac", seconds=1.0) for n in range(6)]
    master, port = start_master("mp3", out, lib)
    ctx = zmq.Context()
    worker = None
    try:
        hostile = FakeWorker(ctx, port, "hostile", slots=protocol.MAX_SLOTS)
        hostile.sock.send(NESTED)
        hostile.sock.send(raw(type="hello", session=uuid.uuid4().hex, host="\ud800", pid=1, slots=1))
        hostile.join(["mp3"], credit=protocol.MAX_SLOTS)
        deadline = time.monotonic() + 120
        while master.proc.poll() is None and time.monotonic() < deadline:
            for job in [m for m in hostile.messages(0.5) if m["type"] == "job"]:
                for task in job["tasks"]:
                    tagged_junk(Path(task["output"]), task["settings_hash"], tmp_path)
                    hostile.sock.send(raw(type="result", id=task["id"], attempt=task["attempt"], status="success",
                                          message="", returncode=0, elapsed=0.5))  # fmt: skip
                hostile.hello()  # and again, after every job
                hostile.join(["mp3"], credit=protocol.MAX_SLOTS)
            if worker is None and "quarantined" in master.output:
                worker = start_worker(port, 1)
            hostile.beat()
        assert master.wait(10) == 0, master.output
        assert worker is not None and worker.wait(30) == 0
    finally:
        ctx.destroy(0)
        master.kill()
        if worker is not None:
            worker.kill()
    assert "Traceback" not in master.output and "Traceback" not in worker.output
    rows = read_log(out)
    assert len(rows) == len(sources) and all(r["conversion_status"] == "SUCCESS" for r in rows), rows
    assert all(r["host"] != "hostile" for r in rows)
    for src in sources:
        assert duration(out / "mp3" / f"{src.stem}.mp3") == pytest.approx(1.0, abs=0.1)
