"""CurveZMQ keys: who may join, which master a worker trusts, and how a
missing or clashing key file is told."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from flac2all.cluster.keys import host_name
from tests.cluster.outputs import check_outputs
from tests.cluster.processes import (
    free_port,
    start_master,
    start_worker,
)
from tests.conftest import run_flac2all

pytestmark = pytest.mark.timeout(180)

ELSEWHERE = "192.0.2.1"  # an address of no host here (TEST-NET-1)


def keygen(folder: Path, *args: str):
    return run_flac2all("--cluster-keygen", folder, *args)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_the_first_master_makes_the_keys_and_a_keyless_worker_is_told_why(lib, tmp_path):
    config = tmp_path / ".config" / "flac2all" / "cluster"  # XDG_CONFIG_HOME of the test
    master, port = start_master("opus", tmp_path / "out", lib, "--wait-workers", "3", insecure=False)
    assert master.wait(30) == 2
    assert f"Made the cluster's keys in {config}" in master.output
    assert (config / "master.key_secret").is_file() and (config / "authorized").is_dir()
    assert "flac2all --cluster-keygen" in master.output  # how to give a worker keys
    assert "on this host, as this user, flac2all_worker needs no copying" in master.output
    worker = start_worker(port, 1, insecure=False, host=ELSEWHERE)  # a worker host that is not this one
    assert worker.wait(30) == 2
    assert "no worker keys in" in worker.output
    assert not list((config / "authorized").iterdir())  # it made no keys: a remote node is given them
    lax = start_worker(port, 1, allow=())
    assert lax.wait(30) == 2 and "--insecure needs --allow" in lax.output


def test_keys_are_private_from_their_first_byte_whatever_the_umask(tmp_path):
    """Under umask 000 a secret key is still created 0600 and every folder
    made for keys 0700 (the missing parents too); no key file is writable by
    others."""
    keys = tmp_path / "a" / "b" / "keys"
    argv = [sys.executable, "-m", "flac2all", "--cluster-keygen", str(keys), "--worker", "w"]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=60, umask=0, check=False)
    assert run.returncode == 0, run.stderr
    made = [tmp_path / "a", tmp_path / "a" / "b", *(p for p in keys.rglob("*") if p.is_dir()), keys]
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in made} == dict.fromkeys(
        ("a", "b", "keys", "authorized", "workers", "w"), "0o700"
    )
    files = {p.relative_to(keys).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in keys.rglob("*") if p.is_file()}
    private = {name for name, mode in files.items() if mode == 0o600}
    assert private == {"master.key_secret", "workers/w/worker.key_secret"}
    assert all(mode & 0o022 == 0 for mode in files.values()), files
    assert len(files) == 6


@pytest.mark.slow
def test_a_worker_on_the_masters_host_makes_and_authorizes_its_own_keys(lib, tmp_path):
    """The file server runs the master and a worker as the same user: the
    worker finds the master's keys and needs no keygen, no copying."""
    config = tmp_path / ".config" / "flac2all" / "cluster"
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib, insecure=False)
    try:
        master.wait_for("Made the cluster's keys")
        worker = start_worker(port, 2, insecure=False)
        assert master.wait(60) == 0, master.output
        assert worker.wait(30) == 0, worker.output
    finally:
        master.kill()
    check_outputs(out, lib, {"opus": ".opus"})
    mine = config / "workers" / host_name()
    assert worker.count(rf"made this host's worker keys in {re.escape(str(mine))} and authorized them") == 1
    assert (config / "authorized" / f"{host_name()}.key").is_file()
    assert (mine / "master.key").read_bytes().count(b"public-key") == 1
    again = start_worker(free_port(), 1, "--retry-seconds", "1", insecure=False)  # the keys are there now
    assert again.wait(30) == 3 and "made this host" not in again.output


@pytest.mark.slow
def test_a_one_machine_trial_finds_the_one_worker_key_set_there_is(lib, tmp_path):
    """--cluster-keygen --worker node1, then flac2all_worker localhost: the
    worker takes workers/node1; the master's hint, with a worker
    authorized, says to start one (not to run keygen again)."""
    assert keygen("", "--worker", "node1").returncode == 0
    config = tmp_path / ".config" / "flac2all" / "cluster"
    out = tmp_path / "out"
    master, port = start_master("opus", out, lib, insecure=False)
    try:
        master.wait_for(r"authorized: node1")
        assert "first give it keys" not in master.output
        worker = start_worker(port, 1, insecure=False, host="localhost")
        assert master.wait(60) == 0, master.output
        assert worker.wait(30) == 0, worker.output
    finally:
        master.kill()
    check_outputs(out, lib, {"opus": ".opus"})
    assert sorted(p.name for p in (config / "workers").iterdir()) == ["node1"]


def test_a_worker_with_several_key_sets_to_choose_from_names_them(tmp_path):
    for name in ("node1", "node2"):
        assert keygen("", "--worker", name).returncode == 0
    config = tmp_path / ".config" / "flac2all" / "cluster"
    worker = start_worker(free_port(), 1, insecure=False, host=ELSEWHERE)
    assert worker.wait(30) == 2
    assert "worker key sets for node1, node2" in worker.output
    assert f"--keys {config / 'workers' / 'node1'}" in worker.output


def test_a_local_worker_with_half_its_own_keys_says_what_to_remove(tmp_path):
    assert keygen("").returncode == 0
    mine = tmp_path / ".config" / "flac2all" / "cluster" / "workers" / host_name()
    mine.mkdir(parents=True)  # its folder, but no keys in it
    worker = start_worker(free_port(), 1, insecure=False)
    assert worker.wait(30) == 2
    assert f"this host's worker keys in {mine} are incomplete: remove that folder" in worker.output
    assert not (mine.parent.parent / "authorized" / f"{host_name()}.key").exists()
