"""Two hosts made of network namespaces joined by a veth pair: a worker on the
other host, then that host cut off the network mid-run.

Needs root and iproute2 (as CI has); skipped where namespaces cannot be made.
The addresses are link-local ones on the test's own veth pair: no traffic
leaves the namespaces this test creates.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.cluster.processes import TEST_ROOT, Proc, env_with
from tests.conftest import decodes, make_flac, read_log

pytestmark = pytest.mark.timeout(180)

MASTER_IP, WORKER_IP = "169.254.231.1", "169.254.231.2"
PLAIN = ("--insecure", "--allow", TEST_ROOT)  # no keys: the workers touch only the test's folders


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def two_hosts():
    tag = uuid.uuid4().hex[:6]
    a, b = f"f2a-m-{tag}", f"f2a-w-{tag}"
    try:
        ip("netns", "add", a)
    except (subprocess.CalledProcessError, FileNotFoundError):
        pytest.skip("cannot create network namespaces here")
    try:
        ip("netns", "add", b)
        ip("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}")
        ip("link", "set", f"va{tag}", "netns", a)
        ip("link", "set", f"vb{tag}", "netns", b)
        ip("-n", a, "addr", "add", f"{MASTER_IP}/30", "dev", f"va{tag}")
        ip("-n", b, "addr", "add", f"{WORKER_IP}/30", "dev", f"vb{tag}")
        for ns, dev in ((a, f"va{tag}"), (b, f"vb{tag}")):
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield a, b, f"vb{tag}"
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def in_ns(ns: str, argv: list[str], path_prefix: Path | None = None) -> Proc:
    return Proc(["ip", "netns", "exec", ns, *argv], env_with(path_prefix))


@pytest.mark.slow
def test_worker_on_another_host_then_cut_off(two_hosts, tmp_path, fake_bin):
    master_ns, worker_ns, worker_dev = two_hosts
    lib = tmp_path / "music"
    for n in range(6):
        make_flac(lib / f"{n}.flac", seconds=0.2)
    out = tmp_path / "out"
    real = shutil.which("opusenc")
    slow = fake_bin("opusenc", f'sleep 0.7\nexec {real} "$@"\n')
    master = in_ns(
        master_ns,
        [
            sys.executable,
            "-m",
            "flac2all",
            "opus",
            "-m",
            "--bind",
            MASTER_IP,
            "--port",
            "2019",
            "-o",
            str(out),
            "--insecure",
            str(lib),
        ],
    )
    try:
        master.wait_for(r"Listening on", 20)
        remote = in_ns(
            worker_ns,
            [
                sys.executable,
                "-m",
                "flac2all.cluster.worker",
                MASTER_IP,
                "--port",
                "2019",
                "-t",
                "1",
                "--retry-seconds",
                "3",
                *PLAIN,
            ],
            path_prefix=slow,
        )
        master.wait_for(r"^encoded ", 30)  # the remote host did a task over the veth
        ip("-n", worker_ns, "link", "set", worker_dev, "down")  # cut it off
        master.wait_for(r"declared dead", 15)
        # A worker on the master's own host finishes the run.
        local = in_ns(
            master_ns, [sys.executable, "-m", "flac2all.cluster.worker", MASTER_IP, "--port", "2019", "-t", "2", *PLAIN]
        )
        assert master.wait(60) == 0, master.output
        assert local.wait(30) == 0
        assert remote.wait(60) != 0  # it lost its master and gave up
    finally:
        master.kill()
    rows = read_log(out)
    assert len(rows) == 6 and all(r["conversion_status"] == "SUCCESS" for r in rows)
    assert all(decodes(Path(r["outfile"])) for r in rows)
    assert "silent for 4 s; encoder stopped" in remote.output
    assert not [p for p in out.rglob(".flac2all-tmp-*")]
