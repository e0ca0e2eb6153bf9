"""A worker's word about itself, checked before work: its encoders are the
master's versions and take the run's options; what it leaves behind is
swept; the master speaks of a host once, not once per process. Real
processes on 127.0.0.1, a tiny fake ``lame`` first on a worker's PATH that
execs the real one but for what it fakes."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster.processes import a_real_worker_finishes, start_master, start_worker
from tests.cluster.test_node_health import all_succeeded, needs_namespaces, worker_in_namespace
from tests.conftest import read_log

pytestmark = pytest.mark.timeout(180)

REAL_LAME = shutil.which("lame")


def fake_lame(tmp_path: Path, name: str, body: str) -> Path:
    """A folder with a ``lame`` that runs ``body`` (bash) first, then the real one."""
    folder = tmp_path / name
    folder.mkdir()
    exe = folder / "lame"
    exe.write_text(f'#!/bin/bash\n{body}\nexec {REAL_LAME} "$@"\n')
    exe.chmod(0o755)
    return folder


def other_version(tmp_path: Path) -> Path:
    return fake_lame(tmp_path, "lame-9", 'case "$1" in --version) echo "LAME 64bits version 9.99"; exit 0;; esac')


def rows_by_mode(out: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for row in read_log(out):
        rows.setdefault(Path(row["outfile"]).suffix, []).append(row)
    return rows


@pytest.mark.slow
def test_a_worker_with_another_encoder_version_refuses_the_run_unless_allowed(lib, tmp_path):
    out = tmp_path / "out"
    drifted = other_version(tmp_path)
    master, port = start_master("mp3", out, lib)
    try:
        refusing = start_worker(port, 1, path_prefix=drifted)
        line = master.wait_for(r"is unhealthy and gets no work: (.*)").group(1)
        allowed = start_worker(port, 1, "--allow-other-encoders", path_prefix=drifted)
        assert master.wait(120) == 0, master.output
        assert allowed.wait(30) == 0
        assert refusing.wait(30) == 1
    finally:
        master.kill()
    real = subprocess.run([REAL_LAME, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    assert "lame" in line and "LAME 64bits version 9.99" in line and real in line, line
    assert "--allow-other-encoders" in line, line
    assert "refusing this run: lame here is" in refusing.output
    assert refusing.count(r"^encoded ") == 0
    all_succeeded(out, 8)


def rejecting(tmp_path: Path) -> Path:
    """A lame that refuses ``-q 2`` (as an older build might an option)."""
    refuse = 'case " $* " in *" -q 2 "*) echo "lame: unknown option q" >&2; exit 1;; esac'
    return fake_lame(tmp_path, "lame-picky", refuse)


@pytest.fixture
def picky_run(lib, tmp_path):
    """A master of mp3 and opus with lame options that the one worker's
    lame refuses: (its output folder, the master, its port, the worker)."""
    out = tmp_path / "out"
    master, port = start_master("mp3,opus", out, lib, "--lame-options", "-preset standard:q 2")
    try:
        yield out, master, port, start_worker(port, 1, path_prefix=rejecting(tmp_path))
    finally:
        master.kill()


@pytest.mark.slow
def test_an_option_a_worker_encoder_rejects_sends_that_mode_elsewhere(picky_run):
    out, master, port, picky = picky_run
    master.wait_for(r"cannot run mp3: it gets the other modes' jobs")
    picky.wait_for(r"^encoded +opus ", timeout=30)
    full = start_worker(port, 1)
    assert master.wait(120) == 0, master.output
    assert picky.wait(30) == 0 and full.wait(30) == 0
    assert "this node cannot run mode mp3: lame refuses the options" in picky.output
    assert picky.count(r"^encoded +mp3 ") == 0 and picky.count(r"^FAILED") == 0
    all_succeeded(out, 16)


@pytest.mark.slow
def test_a_mode_no_worker_can_run_fails_with_the_encoder_message(picky_run):
    out, master, _, picky = picky_run
    assert master.wait(120) == 1, master.output
    assert picky.wait(30) == 0
    rows = rows_by_mode(out)
    assert len(rows[".opus"]) == 8 and all(r["conversion_status"] == "SUCCESS" for r in rows[".opus"])
    assert len(rows[".mp3"]) == 8
    for row in rows[".mp3"]:
        assert row["conversion_status"] != "SUCCESS"
        assert re.search(r"no worker here can run mp3: .*lame: unknown option q", str(row)), row


def temps(out: Path) -> list[Path]:
    return list(out.rglob(".flac2all-tmp-*"))


@pytest.mark.slow
@needs_namespaces
def test_the_temp_file_a_worker_could_not_remove_is_swept_at_the_end(lib, tmp_path):
    """A worker's output turns read-only under it mid-encode (its mount, not
    the output): its encoder's temp file stays where it cannot remove it.
    Another worker converts the file; the master sweeps the folder at the
    end, whoever ran its jobs."""
    out, marks = tmp_path / "out", tmp_path / "marks"
    out.mkdir()
    marks.mkdir()
    real = shutil.which("opusenc")
    stalling = tmp_path / "stalling"
    stalling.mkdir()
    (stalling / "opusenc").write_text(f"""#!/bin/bash
case "$*" in --version|*flac2all-probe-*) exec {real} "$@";; esac
if mkdir {marks}/first 2>/dev/null; then
  for last; do :; done
  echo part > "$last"
  touch {marks}/written
  sleep 2
  exit 1
fi
exec {real} "$@"
""")
    (stalling / "opusenc").chmod(0o755)
    master, port = start_master("opus", out, lib)
    try:
        bad = worker_in_namespace(port, "ro-later", f"mount --bind {out} {out}", path_prefix=stalling)
        deadline = time.monotonic() + 30
        while not (marks / "written").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert temps(out), master.output + bad.output
        readonly = ["nsenter", "-t", str(bad.proc.pid), "-m", "mount", "-o", "remount,bind,ro", str(out)]
        subprocess.run(readonly, check=True)
        master.wait_for(r"Worker ro-later:\d+ quarantined, .*read-only file system", 30)
        a_real_worker_finishes(master, port)
        bad.wait(30)
    finally:
        master.kill()
    all_succeeded(out, 8)
    assert temps(out) == []


@pytest.mark.slow
def test_the_master_speaks_of_a_host_once_with_its_count_of_processes(lib, tmp_path):
    out = tmp_path / "out"
    master, port = start_master("mp3", out, lib)
    try:
        refusing = start_worker(port, 3, path_prefix=other_version(tmp_path))
        master.wait_for(r"is unhealthy and gets no work")
        a_real_worker_finishes(master, port)
        assert refusing.wait(30) == 1
    finally:
        master.kill()
    host = re.escape(socket.gethostname())
    assert master.count(r"^Got \d+ worker") == 2, master.output
    assert master.count(rf"^Got 3 worker\(s\) \(new: {host} \(3 processes\)\)$") == 1, master.output
    assert master.count(rf"^Got 4 worker\(s\) \(new: {host}:\d+\)$") == 1, master.output
    assert master.count(r"is unhealthy") == 1, master.output
    assert master.count(rf"^Worker {host} \(3 processes\) is unhealthy and gets no work: lame here is ") == 1
    all_succeeded(out, 8)
