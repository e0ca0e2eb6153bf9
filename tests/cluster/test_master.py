"""The master's own refusals, with a real master process on 127.0.0.1."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import run_flac2all


@pytest.mark.parametrize(
    ("bind", "cause", "hint"),
    [
        ("127.0.0.1", "Address already in use", "pick a free --port"),
        ("nosuch.invalid", "No such device", "--bind takes an address of this host"),
    ],
    ids=["port-taken", "unknown-bind"],
)
def test_a_master_that_cannot_listen_says_why_and_what_to_change(library, tmp_path, bind, cause, hint):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_flac2all(
            "mp3", "-m", "-q", "--insecure", "--bind", bind, "--port", port, "-o", tmp_path / "out", library
        )
    assert run.returncode == 2, run.stdout + run.stderr
    [line] = [line for line in run.stderr.splitlines() if not line.startswith(("WARNING", " "))]  # --insecure's
    assert line.startswith(f"flac2all: error: cannot listen on {bind}:{port}: {cause} (") and hint in line
    assert "addr=" not in line
