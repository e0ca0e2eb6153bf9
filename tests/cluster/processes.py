"""Real cluster processes on 127.0.0.1 for the tests: a master and workers,
each a real subprocess, every wait bounded in time."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A subprocess whose output is collected by a thread, line by line."""

    def __init__(self, argv: list[str], env: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.proc.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{self.output}")

    def count(self, pattern: str) -> int:
        return sum(1 for line in list(self.lines) if re.search(pattern, line))

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=5)
        return code

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def env_with(path_prefix: Path | None) -> dict:
    env = dict(os.environ)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# What a test worker may touch: the test's temporary folders.
TEST_ROOT = os.path.realpath(tempfile.gettempdir())


def start_master(
    modes: str,
    outdir: Path,
    inputdir: Path,
    *args: str,
    port: int = 0,
    path_prefix: Path | None = None,
    insecure: bool = True,
    fd_limit: int | None = None,
) -> tuple[Proc, int]:
    """A real master; without keys (--insecure) unless ``insecure`` is False;
    ``fd_limit``: its soft and hard limits on open files."""
    limit = ["prlimit", f"--nofile={fd_limit}:{fd_limit}", "--"] if fd_limit else []
    argv = [
        *limit,
        sys.executable,
        "-m",
        "flac2all",
        modes,
        "-m",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "-o",
        str(outdir),
        *(["--insecure"] if insecure else []),
        *args,
        str(inputdir),
    ]
    master = Proc(argv, env_with(path_prefix))
    m = master.wait_for(r"Listening on tcp://127\.0\.0\.1:(\d+)")
    return master, int(m.group(1))


def start_worker(
    port: int,
    threads: int = 1,
    *args: str,
    path_prefix: Path | None = None,
    insecure: bool = True,
    allow: tuple[str, ...] = (TEST_ROOT,),
    host: str = "127.0.0.1",
) -> Proc:
    """A real flac2all_worker of the master at ``host``; without keys
    (--insecure, allowed to touch the temporary folders) unless ``insecure``
    is False."""
    plain = ["--insecure", *(word for root in allow for word in ("--allow", str(root)))] if insecure else []
    argv = [
        sys.executable,
        "-m",
        "flac2all.cluster.worker_cli",
        host,
        "--port",
        str(port),
        "-t",
        str(threads),
        *plain,
        *args,
    ]
    return Proc(argv, env_with(path_prefix))


def namespaces_work() -> bool:
    """Whether a mount and host name namespace can be made here, and a
    folder mounted in it (root, or CI)."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            run = subprocess.run(
                ["unshare", "-m", "-u", "--propagation", "private", "mount", "--bind", folder, folder],
                capture_output=True,
                timeout=10,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    return run.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not namespaces_work() and os.environ.get("CI") != "true",
    reason="cannot make a mount namespace here and mount in it (unshare -m -u, mount --bind: root needed)",
)


def worker_in_namespace(
    port: int,
    host: str,
    setup: str,
    *args: str,
    path_prefix: Path | None = None,
    allow: tuple[str, ...] = (TEST_ROOT,),
) -> Proc:
    """A real worker whose host name is ``host``, in its own mount namespace
    where ``setup`` (shell) ran first."""
    argv = [sys.executable, "-m", "flac2all.cluster.worker_cli", "127.0.0.1", "--port", str(port), "-t", "1"]
    argv += ["--insecure", *(word for root in allow for word in ("--allow", str(root))), *args]
    script = f'hostname {host} && {setup} && exec "$@"'
    return Proc(["unshare", "-m", "-u", "sh", "-c", script, "sh", *argv], env_with(path_prefix))


def node_mounts(tmp_path: Path, node: str, lib: Path, out: Path, lib_at: str = "music") -> tuple[str, Path, Path]:
    """The shell that mounts the master's folders where ``node`` sees them
    (its /mnt/storage/music, or ``lib_at``, and .../out, under ``tmp_path``)
    and hides the master's own paths (a tmpfs over the folder that holds
    both); the node's paths of the library and the output folder."""
    mnt = tmp_path / node / "mnt" / "storage"
    music, mirror = mnt / lib_at, mnt / "out"
    for folder in (mnt / "music", music):
        folder.mkdir(parents=True, exist_ok=True)
    mirror.mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    setup = (
        f"mount --bind {q(str(lib))} {q(str(mnt / 'music'))} && mount --bind {q(str(out))} {q(str(mirror))}"
        f" && mount -t tmpfs none {q(os.path.commonpath([lib, out]))}"
    )
    return setup, music, mirror


def a_real_worker_finishes(master: Proc, port: int) -> None:
    """A real worker joins and does what is left; the run and the worker
    both end well (after a test's fake peer has done its worst)."""
    worker = start_worker(port, 1)
    assert master.wait(60) == 0, master.output
    assert worker.wait(30) == 0


def worker_pids(worker: Proc, count: int) -> list[int]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pids = [int(m) for m in re.findall(r"Spawned worker process \(pid (\d+)\)", worker.output)]
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(worker.output)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def wait_for_encoders(marks: Path, count: int = 1, timeout: float = 20) -> list[int]:
    """Wait until ``count`` (fake) encoders have marked their start; their pids."""
    deadline = time.monotonic() + timeout
    while len(list(marks.iterdir())) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [int(p.name) for p in marks.iterdir()]
    assert len(pids) >= count, f"{len(pids)} encoder(s) started"
    return pids


class FakeMaster:
    """A bare ROUTER socket on 127.0.0.1 that a real worker talks to: the
    test says what the master sends, and reads what the worker says."""

    def __init__(self) -> None:
        import zmq

        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.port = self.router.bind_to_random_port("tcp://127.0.0.1")

    def recv(self, timeout: float = 20) -> tuple[bytes, dict] | None:
        """The next (identity, message) from any worker, or None."""
        from flac2all.cluster import protocol

        if not self.router.poll(max(0, int(timeout * 1000))):  # (a negative one waits forever)
            return None
        identity, frame = self.router.recv_multipart()
        return identity, protocol.decode(frame)

    def expect(self, kind: str, timeout: float = 20) -> tuple[bytes, dict]:
        """The next message of this type (others are skipped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            got = self.recv(left)
            if got is not None and got[1]["type"] == kind:
                return got
        raise AssertionError(f"no {kind} from a worker within {timeout} s")

    def send(self, identity: bytes, frame: bytes) -> None:
        self.router.send_multipart([identity, frame])

    def close(self) -> None:
        self.ctx.destroy(0)
