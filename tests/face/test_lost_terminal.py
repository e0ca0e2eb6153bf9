"""Losing the terminal or stdout never loses the work or the log:
a pseudo-terminal closed mid-run, a pipe closed after one line, cron's
quiet mode. Real processes, real signals, a slow but real encoder."""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.conftest import decodes, make_flac, read_log, run_flac2all, temp_files


@pytest.fixture
def slow_library(tmp_path: Path, fake_bin) -> tuple[Path, Path]:
    """Eight tiny sources and an opusenc that takes 0.4 s each: a run of a
    few seconds, long enough to lose its terminal in the middle."""
    root = tmp_path / "music"
    for n in range(8):
        make_flac(root / f"{n:02d} track.flac", seconds=0.1, tags={"TITLE": f"T{n}"})
    folder = fake_bin("opusenc", f'sleep 0.4\nexec {shutil.which("opusenc")} "$@"\n')
    return root, folder


def env_with(folder: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}", "TERM": "xterm-256color"}


def on_terminal(args: list, folder: Path) -> tuple[subprocess.Popen, int]:
    """flac2all in a session of its own whose controlling terminal is a new
    pty (as under ssh or tmux); returns the process and the pty's master."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flac2all", *map(str, args)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env_with(folder),
        start_new_session=True,
        # The new session takes the pty as its controlling terminal, so that
        # closing it sends SIGHUP, as a dropped ssh connection does.
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    os.close(slave)
    return proc, master


def read_until(master: int, text: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, seen
        seen += os.read(master, 4096)
    return seen


def assert_whole(out: Path, rows: list[dict[str, str]]) -> None:
    """No temp file left, and every output there is complete."""
    assert temp_files(out) == []
    for path in out.rglob("*.opus"):
        assert decodes(path), path
    assert rows, "no log"


@pytest.mark.slow
def test_a_closed_terminal_lets_the_run_finish_and_write_its_log(slow_library, tmp_path):
    root, folder = slow_library
    out = tmp_path / "out"
    proc, master = on_terminal(["opus", "-t", "2", "-o", out, root], folder)
    read_until(master, b"Converting")
    time.sleep(0.5)  # some tasks done, some running
    os.close(master)  # the terminal goes away: SIGHUP
    assert proc.wait(timeout=60) == 0
    rows = read_log(out)
    assert len(rows) == 8 and all(r["conversion_status"] == "SUCCESS" for r in rows)
    assert_whole(out, rows)
    assert "Total files on input: 8" in (out / ".flac2all" / "last-summary.txt").read_text()


@pytest.mark.slow
def test_stop_on_hangup_stops_cleanly_and_still_writes_the_log(slow_library, tmp_path):
    root, folder = slow_library
    out = tmp_path / "out"
    proc, master = on_terminal(["opus", "-t", "2", "--stop-on-hangup", "-o", out, root], folder)
    read_until(master, b"Converting")
    time.sleep(0.5)
    os.close(master)
    assert proc.wait(timeout=60) == 128 + signal.SIGHUP
    rows = read_log(out)
    assert 0 < len(rows) < 8
    assert_whole(out, rows)
    assert len(list(out.rglob("*.opus"))) == len(rows)
    assert "did not run" in (out / ".flac2all" / "last-summary.txt").read_text()


@pytest.mark.slow
def test_stdout_closed_after_one_line_does_not_stop_the_run(slow_library, tmp_path):
    root, folder = slow_library
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flac2all", "opus", "-t", "2", "-o", str(out), str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env_with(folder),
    )
    assert proc.stdout.readline().startswith(b"Converting")
    proc.stdout.close()  # as `| head -1` does
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err
    rows = read_log(out)
    assert len(rows) == 8 and all(r["conversion_status"] == "SUCCESS" for r in rows)
    assert_whole(out, rows)


def test_quiet_prints_one_line_and_failures_on_stderr_and_nothing_when_nothing_changed(tmp_path):
    root, out = tmp_path / "music", tmp_path / "out"
    make_flac(root / "good.flac", seconds=0.1)
    (root / "bad.flac").write_bytes(b"this is not FLAC at all")
    run = run_flac2all("opus", "-q", "-o", out, root)
    assert run.returncode == 1
    assert run.stdout == f"1 encoded, 1 failed (grep -v SUCCESS {out / 'conversion_results.log'})\n"
    failures = run.stderr.splitlines()
    assert len(failures) == 1 and "bad.flac" in failures[0] and "not a FLAC file" in failures[0]
    (root / "bad.flac").unlink()
    again = run_flac2all("opus", "-q", "-o", out, root)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")  # cron mails nothing
    loud = run_flac2all("opus", "-o", out, root)
    *_, nothing, log = loud.stdout.splitlines()
    assert loud.returncode == 0 and log == f"    Log written to: {out / 'conversion_results.log'}"
    assert nothing.startswith("    nothing to do: 1 output up to date (checked in ")
    assert "Converting" not in loud.stdout and "Execution rate" not in loud.stdout


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGHUP, 0), (signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_the_command_starts_is_handled_not_fatal(library, tmp_path, signum, status):
    """A signal sent as the command starts, while it imports its modules
    (before it parses its options), is kept until the run's own handlers
    take it: SIGHUP lets the run finish, SIGTERM/SIGINT stop it with their
    status and a message, and nothing is killed without a word."""
    out = tmp_path / "out"
    argv = [sys.executable, "-X", "importtime", "-m", "flac2all", "mp3", "-o", str(out), str(library)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # -X importtime prints each import as it ends: the first of the
        # package's modules means the command is loading what it runs.
        for line in proc.stderr:
            if "flac2all." in line:
                proc.send_signal(signum)
                break
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == status, stderr[-2000:]
    assert "Traceback" not in stderr
    if signum == signal.SIGHUP:
        assert len(read_log(out)) == 3
    else:
        assert f"{signal.Signals(signum).name}: stopping" in stderr
