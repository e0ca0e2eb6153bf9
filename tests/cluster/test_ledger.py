"""The master's ledger without sockets: where a task goes after an
environmental failure, when a file fails for every worker, how a job is
split by mode, how long a lease is, and what the master believes."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import pytest

from flac2all.cluster import protocol
from flac2all.cluster.belief import disbelief, identity
from flac2all.cluster.leases import Entry, Lease, audio_seconds, lease_seconds
from flac2all.cluster.ledger import Ledger
from flac2all.cluster.peers import Peer
from flac2all.model import Action, Settings, Status, Task
from tests.conftest import make_flac


def peer(host: str, modes: tuple[str, ...] = ("mp3", "opus")) -> Peer:
    p = Peer(host.encode(), host * 8, host, 1, 1, time.monotonic(), credit=1)
    p.modes = frozenset(modes)
    return p


def failed(entry: Entry, cause: str, message: str = "cannot read source: No such file or directory"):
    return protocol.WireResult(entry.id, entry.attempt, Status.FAILED, message, 1, 0.1, None, cause)


def hand(ledger: Ledger, to: Peer) -> Lease:
    lease = ledger.take(to)
    assert lease is not None
    for entry in lease.open:
        entry.session = to.session
        to.leases[entry.id] = lease
    return lease


def test_a_file_every_worker_fails_for_its_environment_fails_with_its_reason(tmp_path):
    source = make_flac(tmp_path / "a.flac")  # the master sees it
    results = []
    ledger = Ledger(lambda line: None, results.append)
    ledger.add(Lease([Entry(0, Task(source, "opus", tmp_path / "a.opus", Action.ENCODE))]))
    a, b = peer("a"), peer("b")
    (entry,) = hand(ledger, a).entries
    ledger.accept(a, failed(entry, protocol.SOURCE_MISSING))
    assert not results and entry.attempt == 1 and entry.tried == {"a"}  # back in the queue, an attempt more
    assert ledger.take(a) is None  # not to the worker that failed it
    ledger.fail_stuck([a, b])  # b has not tried it
    assert not results
    (entry,) = hand(ledger, b).entries
    ledger.accept(b, failed(entry, protocol.SOURCE_MISSING, "cannot read source: Permission denied"))
    ledger.fail_stuck([a, b])  # every worker here failed it: it fails, with its reason
    assert [r.message for r in results] == ["failed on every worker, the last b: cannot read source: Permission denied"]


def test_a_workers_own_failures_go_elsewhere_and_quarantine_it(tmp_path):
    results, said = [], []
    ledger = Ledger(said.append, results.append)
    for n in range(4):
        source = make_flac(tmp_path / f"{n}.flac")
        ledger.add(Lease([Entry(n, Task(source, "opus", tmp_path / f"{n}.opus", Action.ENCODE))]))
    bad, good = peer("bad"), peer("good")
    for _ in range(3):
        (entry,) = hand(ledger, bad).entries
        ledger.accept(bad, failed(entry, protocol.SOURCE_MISSING))
    assert not results and bad.problem.startswith("quarantined: 3 failures of its environment in a row")
    assert not bad.eligible and good.can_run(ledger.pending[0].entries[0])
    # A source the master cannot read either is the file's failure, not the worker's.
    (entry,) = hand(ledger, good).entries
    os.unlink(entry.task.source)
    ledger.accept(good, failed(entry, protocol.SOURCE_MISSING))
    assert [r.status for r in results] == [Status.FAILED] and results[0].host == "good"


def test_a_job_is_split_for_a_worker_without_one_of_its_modes(tmp_path):
    ledger = Ledger(lambda line: None, lambda r: None)
    source = tmp_path / "a.flac"
    tasks = [Task(source, mode, tmp_path / f"a.{mode}", Action.ENCODE) for mode in ("mp3", "opus")]
    ledger.add(Lease([Entry(0, tasks[0]), Entry(1, tasks[1])]))
    lease = ledger.take(peer("no-lame", ("opus",)))
    assert [e.task.mode for e in lease.entries] == ["opus"]
    assert [e.task.mode for e in ledger.pending[0].open] == ["mp3"]
    assert ledger.take(peer("no-lame", ("opus",))) is None


def test_a_lease_follows_the_audio_duration_and_the_timeout(tmp_path):
    source = make_flac(tmp_path / "a.flac", seconds=3)
    assert audio_seconds(source) == pytest.approx(3, abs=0.01)
    assert audio_seconds(tmp_path / "missing.flac") == 0.0
    lease = Lease([Entry(0, Task(source, "opus", tmp_path / "a.opus", Action.ENCODE, size=0))])
    settings = Settings(tmp_path, tmp_path / "out", ("opus",))
    assert lease_seconds(lease, settings) == pytest.approx(2 * (120 + 4 * 3) + 10, abs=0.1)
    assert lease_seconds(lease, Settings(tmp_path, tmp_path, ("opus",), timeout=1)) == pytest.approx(12)


def test_the_master_believes_only_what_it_sees(tmp_path):
    out = tmp_path / "a.txt"
    entry = Entry(0, Task(tmp_path / "src.txt", "opus", out, Action.COPY, size=5))
    assert "does not see the output" in disbelief(entry)
    out.write_text("hello")
    entry.before = identity(out)
    assert disbelief(entry) == "the output was not written since the task was handed out"
    os.replace(out, out.with_suffix(".old"))
    out.write_text("hello")  # a new file under the final name
    assert disbelief(entry) is None
    out.unlink()
    out.symlink_to(out.with_suffix(".old"))
    assert disbelief(entry) == "the output is not a regular file"
    encoded = Entry(1, Task(tmp_path / "a.flac", "opus", tmp_path / "a.opus", Action.ENCODE, settings_hash="ab"))
    Path(encoded.task.output).write_bytes(b"OggS not really")
    assert "provenance tag" in disbelief(encoded)
    empty = Entry(2, Task(tmp_path / "e", "opus", tmp_path / "e.out", Action.COPY, size=0))
    empty.task.output.write_bytes(b"")
    assert disbelief(empty) is None  # an empty file copied


def test_a_refused_peer_is_said_once_even_when_its_address_came_too_late():
    from flac2all.cluster.auth import Refusals

    said: list[str] = []
    refusals = Refusals(said.append)
    bad_key = "bad handshake: the worker pins another master's public key (master.key)"
    refusals.refuse("127.0.0.1", bad_key)
    refusals.refuse("", bad_key)  # its retry, closed before the monitor read its address
    refusals.refuse("127.0.0.1", bad_key)
    refusals.refuse("10.0.0.7", bad_key)  # another peer with the same fault is news
    refusals.refuse("", "unknown key (not in the master's authorized/ folder)")  # another fault too
    assert said == [
        f"Refused a connection from 127.0.0.1: {bad_key}",
        f"Refused a connection from 10.0.0.7: {bad_key}",
        "Refused a connection from an unknown address: unknown key (not in the master's authorized/ folder)",
    ]
    assert refusals.count == 5


def test_the_masters_own_want_of_descriptors_is_not_held_against_a_worker(tmp_path):
    source = make_flac(tmp_path / "a.flac")
    output = tmp_path / "a.opus"
    results, said = [], []
    ledger = Ledger(said.append, results.append)
    ledger.add(Lease([Entry(0, Task(source, "opus", output, Action.ENCODE, settings_hash="ab"))]))
    worker = peer("w")
    (entry,) = hand(ledger, worker).entries
    output.write_bytes(b"not an opus file")  # what the master cannot judge while it cannot open files
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        while True:
            try:
                held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        ledger.accept(worker, protocol.WireResult(0, 0, Status.SUCCESS, "", 0, 0.1, None))
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not worker.problem and not said and not results  # kept, not judged
    ledger.recheck({worker.identity: worker})  # descriptors again: judged now
    assert worker.problem.startswith("quarantined: claimed a.opus (opus) done, but")
