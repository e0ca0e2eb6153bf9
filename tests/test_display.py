"""The live displays on a real (pseudo-)terminal, including a tiny one, and
the plain fallback without a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.conftest import read_log, run_flac2all


def run_on_terminal(args: list[str], rows: int, cols: int, timeout: float = 60) -> tuple[int, str]:
    master_fd, slave_fd = pty.openpty()
    fcntl.ioctl(slave_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(cols), "LINES": str(rows)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flac2all", *args],
        stdin=slave_fd,
        stdout=slave_fd,
        stderr=slave_fd,
        env=env,
        close_fds=True,
    )
    os.close(slave_fd)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = os.read(master_fd, 65536)
        except OSError:  # the terminal closed: the program ended
            break
        if not data:
            break
        chunks.append(data)
    os.close(master_fd)
    return proc.wait(timeout=10), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("size", [(40, 120), (4, 20)])
def test_dashboard_on_a_terminal_of_any_size(library, tmp_path, size):
    out = tmp_path / "out"
    code, screen = run_on_terminal(["mp3,opus", "-C", "-t", "2", "-o", str(out), str(library)], *size)
    assert code == 0, screen
    assert "Summary" in screen
    assert len(read_log(out)) == 6
    if size[1] >= 80:
        assert "host" in screen and "current files" in screen  # the per-host table


def test_progress_bar_on_a_terminal(library, tmp_path):
    code, screen = run_on_terminal(["opus", "-o", str(tmp_path / "out"), str(library)], 30, 100)
    assert code == 0 and "Converting" in screen and "3/3" in screen


def test_dashboard_without_a_terminal_falls_back_to_plain_lines(library, tmp_path):
    run = run_flac2all("opus", "-C", "-o", tmp_path / "out", library)
    assert run.returncode == 0
    assert sum(line.startswith("OK ") for line in run.stdout.splitlines()) == 3
