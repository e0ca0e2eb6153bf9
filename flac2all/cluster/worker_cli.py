"""``flac2all_worker MASTER_HOST``: the command line of a worker node.

Parses the options, checks the keys and probes the encoders once, then forks
N worker processes (cluster/worker.py: one session with the master each,
one job at a time) and waits for them, forwarding the signals it gets.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import sys
from pathlib import Path

from flac2all import __version__, tools
from flac2all.cluster import keys as cluster_keys
from flac2all.cluster.worker import WorkerProcess, say
from flac2all.errors import ExitStatus, Flac2allError


class Forward:
    """The parent's handler of SIGINT and SIGTERM: each one it gets goes to
    every child as SIGTERM (the first is a warm stop, the second a hard one;
    a terminal's Ctrl-C also reaches the children as SIGINT, which they
    count as a warm stop only)."""

    def __init__(self, children: list[multiprocessing.Process]) -> None:
        self.children = children
        self.count = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count == 1:
            say(
                "flac2all_worker: finishing the current job, then exiting; a second Ctrl-C or SIGTERM stops at once",
                sys.stderr,
            )
        elif self.count == 2:
            say("flac2all_worker: stopping at once", sys.stderr)
        for proc in self.children:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)


def child(endpoint: str, key_dir: Path | None, retry_seconds: float) -> None:
    worker_keys = cluster_keys.worker_keys(key_dir) if key_dir else None
    # What this node can run, known before any message (main() probed it):
    # a message naming a codec must never be what starts a process.
    tools.ffmpeg_encoders()
    sys.exit(WorkerProcess(endpoint, worker_keys, retry_seconds).run())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flac2all_worker",
        description="Run flac2all tasks for a master (flac2all MODES -m ...). Every node must see the files "
        "at the same paths as the master (NFS and the like).",
    )
    p.add_argument("master", metavar="MASTER_HOST", help="host name or address of the master")
    p.add_argument("--port", type=int, default=2019, help="the master's port (default 2019)")
    p.add_argument(
        "-t",
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="worker processes, one job each: a file's modes run side by side from one decoder "
        "(default: the CPU count)",
    )
    p.add_argument(
        "--keys",
        type=Path,
        metavar="DIR",
        help="CurveZMQ key folder (default: ~/.config/flac2all/cluster if it exists)",
    )
    p.add_argument(
        "--retry-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="how long to keep trying to reach a master that is away (default 60)",
    )
    p.add_argument("--version", action="version", version=f"flac2all_worker {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1 or not 0 < args.port < 65536:
        print("flac2all_worker: error: --threads must be >= 1 and --port in 1..65535", file=sys.stderr)
        return ExitStatus.USAGE
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        key_dir = cluster_keys.find(args.keys)
        if key_dir is not None:
            cluster_keys.worker_keys(key_dir)  # fail here, not in every child
        else:
            print("WARNING: the cluster is unauthenticated and unencrypted (no keys)", file=sys.stderr)
    except Flac2allError as exc:
        print(f"flac2all_worker: error: {exc}", file=sys.stderr)
        return exc.exit_status
    # What this node can run, probed once here: the children inherit it.
    tools.ffmpeg_encoders()
    host = f"[{args.master}]" if ":" in args.master else args.master
    endpoint = f"tcp://{host}:{args.port}"
    fork = multiprocessing.get_context("fork")
    children = []
    for _ in range(args.threads):
        proc = fork.Process(target=child, args=(endpoint, key_dir, args.retry_seconds))
        proc.start()
        children.append(proc)
        say(f"Spawned worker process (pid {proc.pid})")

    forward = Forward(children)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in children:
        while proc.is_alive():
            proc.join(0.5)
    failed = [proc.exitcode for proc in children if proc.exitcode != 0]
    if not failed:
        return 0
    return failed[0] if failed[0] > 0 else 1  # a child killed by a signal


if __name__ == "__main__":
    sys.exit(main())
