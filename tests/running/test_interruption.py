"""Interrupting a real run: Ctrl-C, SIGTERM and SIGKILL leave nothing partial
under a final name, and the next run completes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import decodes, duration, make_flac, read_log, run_flac2all, source_length, temp_files


@pytest.fixture
def four_files(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for i in range(4):
        make_flac(root / f"{i}.flac", seconds=0.3)
    return root


def slow_opusenc(fake_bin, markers: Path) -> Path:
    """An opusenc that writes part of its output, then stalls in a child
    process of its own (both pids are left in ``markers``)."""
    markers.mkdir()
    return fake_bin(
        "opusenc",
        f"""
echo $$ > {markers}/$$
out="${{@: -1}}"
head -c 4000 /dev/urandom > "$out"
sleep 60 &
echo $! > {markers}/$!
wait
""",
    )


def start(root: Path, out: Path, path_prefix: Path) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{path_prefix}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.Popen(
        [sys.executable, "-m", "flac2all", "opus,vorbis", "-t", "2", "-o", str(out), str(root)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def assert_nothing_partial(out: Path, root: Path) -> None:
    """Every file under a final name is whole."""
    temps = set(temp_files(out))
    for output in [*out.rglob("*.opus"), *out.rglob("*.ogg")]:
        if output in temps:
            continue
        assert decodes(output), output
        src = root / output.with_suffix(".flac").name
        assert duration(output) == pytest.approx(source_length(src), abs=0.08)


@pytest.mark.slow
@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_stops_encoders_removes_temps_writes_log(four_files, tmp_path, fake_bin, signum, status):
    markers = tmp_path / "markers"
    out = tmp_path / "out"
    proc = start(four_files, out, slow_opusenc(fake_bin, markers))
    wait_for(lambda: len(list(markers.iterdir())) >= 1 and temp_files(out))
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == status, stdout + stderr
    assert "stopping the encoders" in stderr
    assert "Interrupted" in stdout
    assert temp_files(out) == []
    rows = read_log(out)  # the log of what finished is written and parses
    assert all(r["format"] == "vorbis" and r["conversion_status"] == "SUCCESS" for r in rows)
    assert_nothing_partial(out, four_files)
    assert not list(out.rglob("*.opus"))  # every opus task was interrupted
    assert not (out / "opus").exists()  # and the folder made for them, left empty, is gone
    for marker in markers.iterdir():
        assert not alive(int(marker.name))
    # The rerun, with the real encoder, completes everything.
    rerun = run_flac2all("opus,vorbis", "-o", out, four_files)
    assert rerun.returncode == 0, rerun.stdout
    assert len(list(out.rglob("*.opus"))) == 4 and len(list(out.rglob("*.ogg"))) == 4
    assert_nothing_partial(out, four_files)


@pytest.mark.slow
def test_sigkill_leaves_no_final_partial_and_no_encoder(four_files, tmp_path, fake_bin):
    markers = tmp_path / "markers"
    out = tmp_path / "out"
    proc = start(four_files, out, slow_opusenc(fake_bin, markers))
    wait_for(lambda: len(list(markers.iterdir())) >= 1 and temp_files(out))
    proc.kill()
    proc.communicate(timeout=30)
    # Encoders die with the run, and so do their own children (reaper).
    wait_for(lambda: not any(alive(int(m.name)) for m in markers.iterdir()), timeout=10)
    assert temp_files(out)  # what the killed run was writing stays hidden...
    assert_nothing_partial(out, four_files)  # ...never under a final name
    rerun = run_flac2all("opus,vorbis", "-o", out, four_files)
    assert rerun.returncode == 0, rerun.stdout
    assert temp_files(out) == []  # ...and the next run removes it
    assert len(list(out.rglob("*.opus"))) == 4
    assert_nothing_partial(out, four_files)


def test_encoders_do_not_inherit_a_descriptor_the_caller_gave(four_files, tmp_path, fake_bin):
    """A pipe flac2all inherits (a cron wrapper's, a shell's) is not passed
    on to the encoders: one holding it would keep the caller waiting."""
    fds = tmp_path / "fds"
    folder = fake_bin("opusenc", f'ls /proc/$$/fd >> {fds}\nexec {shutil.which("opusenc")} "$@"\n')
    read_end, write_end = os.pipe()
    env = {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}
    argv = [sys.executable, "-m", "flac2all", "opus", "-o", str(tmp_path / "out"), str(four_files)]
    proc = subprocess.run(argv, env=env, pass_fds=(write_end,), capture_output=True, text=True, timeout=60)
    os.close(write_end)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list((tmp_path / "out").rglob("*.opus"))) == 4
    listed = fds.read_text().split()
    assert "0" in listed and "2" in listed  # the listing is of the encoder's descriptors
    assert str(write_end) not in listed
    assert os.read(read_end, 1) == b""  # nobody holds the write end any more
    os.close(read_end)


def test_a_temp_file_left_behind_that_cannot_be_removed_is_named(four_files, tmp_path):
    """The sweep of a killed run's temp files says which one it could not
    remove and why (here: made immutable), and the run still completes."""
    out = tmp_path / "out"
    folder = out / "opus"
    folder.mkdir(parents=True)
    stuck = folder / ".flac2all-tmp-0123456789ab.opus"
    stuck.write_bytes(b"half an opus file")
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        run = run_flac2all("opus", "-o", out, four_files)
        assert stuck.exists()
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"cannot remove the temp file {stuck} left by an earlier run: Operation not permitted" in run.stderr
    assert len(list(folder.glob("[!.]*.opus"))) == 4


@pytest.mark.slow
@pytest.mark.parametrize("closed", ["1>&-", "0<&- 1>&- 2>&-"])
def test_a_run_with_its_standard_streams_closed_converts_and_logs(four_files, tmp_path, closed):
    """As a script or cron job may start it (``1>&-``): the run does its
    work, writes its log and says how it went by its exit status."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "flac2all", "opus", "-o", str(out), str(four_files)]
    proc = subprocess.run(["sh", "-c", f'exec "$@" {closed}', "sh", *argv], timeout=60)
    assert proc.returncode == 0
    rows = read_log(out)
    assert len(rows) == 4 and {r["conversion_status"] for r in rows} == {"SUCCESS"}
    assert all(decodes(Path(r["outfile"])) for r in rows)
