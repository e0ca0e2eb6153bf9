"""The ``flac2all_worker`` command: where it lives and what it says when no
master answers."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from tests.cluster.processes import (
    free_port,
    start_worker,
)

pytestmark = pytest.mark.timeout(180)


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


@pytest.mark.slow
def test_the_worker_tells_why_no_master_answers(tmp_path):
    """Nothing listens: connection refused; a name that does not resolve."""
    port = free_port()
    refused = start_worker(port, 1, "--retry-seconds", "2")
    assert refused.wait(30) == 3
    assert "connection refused: nothing listens on 127.0.0.1" in refused.output
    argv = [sys.executable, "-m", "flac2all.cluster.worker_cli", "no-such-host.invalid", "--insecure", "--allow", "/x"]
    unknown = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert unknown.returncode == 2 and "host name no-such-host.invalid does not resolve" in unknown.stderr


@pytest.mark.slow
def test_the_worker_processes_of_one_host_say_why_no_master_answers_once():
    worker = start_worker(free_port(), 3, "--retry-seconds", "2")
    assert worker.wait(30) == 3
    assert worker.count(r"Spawned worker process") == 3
    assert worker.count(r"no master at .*: connection refused") == 1, worker.output
    assert worker.count(r"no master answered at .* giving up") == 1, worker.output
