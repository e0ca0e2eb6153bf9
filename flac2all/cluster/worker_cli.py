"""``flac2all_worker MASTER_HOST``: the command line of a worker node.

Parses the options, checks the keys and probes the encoders once, then forks
N worker processes (cluster/worker.py: one session with the master each,
one job at a time; the first says what is the host's: no master, the run
refused) and waits for them, forwarding the signals it gets.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
import socket
import sys
from pathlib import Path

from flac2all import __version__, tools
from flac2all.cluster import keys as cluster_keys
from flac2all.cluster import worker_config
from flac2all.cluster.auth import MAX_PER_ADDRESS
from flac2all.cluster.diagnose import resolves
from flac2all.cluster.paths import PathMaps
from flac2all.cluster.worker import WorkerProcess, say
from flac2all.errors import ExitStatus, Flac2allError, UsageError
from flac2all.face.values import seconds, thread_count
from flac2all.model import default_threads


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


def child(args: argparse.Namespace, key_dir: Path | None, speaker: bool) -> None:
    worker_keys = cluster_keys.worker_keys(key_dir) if key_dir else None
    # What this node can run, known before any message (main() probed it):
    # a message naming a codec must never be what starts a process.
    tools.ffmpeg_encoders()
    allowed = tuple(Path(os.path.realpath(folder)) for folder in args.allow)
    worker = WorkerProcess(
        args.master,
        args.port,
        worker_keys,
        args.retry_seconds,
        allowed,
        args.stay,
        speaker,
        args.allow_other_encoders,
        args.maps,
    )
    sys.exit(worker.run())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flac2all_worker",
        description="Run flac2all tasks for a master (flac2all MODES -m ...). Every node must see the files "
        "(NFS and the like): at the master's paths, or where --map says.",
    )
    p.add_argument(
        "master", metavar="MASTER_HOST", nargs="?", help="host name or address of the master (or 'master' in --config)"
    )
    p.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a TOML file with a [worker] table of these options (keys: the long options without dashes, "
        "'master' for MASTER_HOST); the command line overrides it, its --map and --allow add to the file's",
    )
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="MASTER_PATH=WORKER_PATH",
        help="where this node sees a folder of the master's (repeat it): jobs name the master's paths, this "
        "worker uses its own and reports back in the master's; a path no map covers is used as it is",
    )
    p.add_argument("--port", type=int, default=2019, help="the master's port (default 2019)")
    p.add_argument(
        "-t",
        "--threads",
        type=thread_count,
        default=min(default_threads(), MAX_PER_ADDRESS),  # (a master takes that many connections a host)
        metavar="N",
        help="worker processes, one job each: a file's modes run side by side from one decoder "
        "(default: the CPU count and one or two more, as flac2all -t)",
    )
    p.add_argument(
        "--keys",
        type=Path,
        metavar="DIR",
        help="this worker's key folder: worker.key_secret and master.key, as flac2all --cluster-keygen DIR "
        "--worker NAME wrote them into DIR/workers/NAME on the master (default: ~/.config/flac2all/cluster, "
        "or its workers/HOSTNAME, or the one key set in its workers/; on the master's host, as the master's user, "
        "a worker makes and authorizes its own there)",
    )
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder this worker may read and write in (repeat it: the library and OUTDIR); a run whose "
        "folders are not inside one is refused. Required with --insecure",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="talk to a master without keys (unauthenticated, unencrypted: any host that can pose as the "
        "master may send jobs, within --allow)",
    )
    p.add_argument(
        "--stay",
        action="store_true",
        help="after a run, or when the master is away, keep waiting for the next master instead of exiting "
        "(for a service: contrib/flac2all-worker.service)",
    )
    p.add_argument(
        "--allow-other-encoders",
        action="store_true",
        help="run with encoders whose versions differ from the master's (by default such a worker refuses the "
        "run: the master records its outputs as made by its own versions, and a re-run would not redo them)",
    )
    p.add_argument(
        "--retry-seconds",
        type=seconds,
        default=60.0,
        metavar="S",
        help="how long to keep trying to reach a master that is away (default 60)",
    )
    p.add_argument("--version", action="version", version=f"flac2all_worker {__version__}")
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The options: the --config file's [worker] table, then the command
    line's (a UsageError for a bad file or map, or no MASTER_HOST)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None:
        parser.set_defaults(**worker_config.load(args.config))
        args = parser.parse_args(argv)
    if args.master is None:
        raise UsageError("give MASTER_HOST (or 'master' in the --config file's [worker] table)")
    args.maps = PathMaps.parse(args.map)
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
    except Flac2allError as exc:
        print(f"flac2all_worker: error: {exc}", file=sys.stderr)
        return exc.exit_status
    if args.threads < 1 or not 0 < args.port < 65536:
        print("flac2all_worker: error: --threads must be >= 1 and --port in 1..65535", file=sys.stderr)
        return ExitStatus.USAGE
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        key_dir = worker_key_dir(args)
    except Flac2allError as exc:
        print(f"flac2all_worker: error: {exc}", file=sys.stderr)
        return exc.exit_status
    if not resolves(args.master, args.port):
        print(f"flac2all_worker: host name {args.master} does not resolve", file=sys.stderr)
        if not args.stay:
            return ExitStatus.USAGE
    # What this node can run, probed once here: the children inherit it.
    tools.ffmpeg_encoders()
    fork = multiprocessing.get_context("fork")
    children = []
    for index in range(args.threads):
        proc = fork.Process(target=child, args=(args, key_dir, index == 0))
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


def is_this_host(host: str, port: int) -> bool:
    """Whether ``host`` is this machine: one of its addresses (loopback or
    not) is one this host can bind a socket to."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    for family, kind, _, _, address in found:
        try:
            with socket.socket(family, kind) as probe:
                probe.bind((address[0], 0, *address[2:]))
        except OSError:
            continue
        return True
    return False


def worker_key_dir(args: argparse.Namespace) -> Path | None:
    """This worker's key folder (None with --insecure); a usage error when
    there is none, or --insecure lacks --allow."""
    for folder in args.allow:
        if not os.path.isabs(folder):
            raise UsageError(f"--allow {folder}: give an absolute path")
    if args.insecure:
        if not args.allow:
            raise UsageError("--insecure needs --allow DIR (the library and OUTDIR): a master without keys is anyone")
        print(
            "WARNING: --insecure: unauthenticated and unencrypted; this worker touches nothing outside --allow",
            file=sys.stderr,
        )
        return None
    key_dir = cluster_keys.worker_dir(args.keys)
    base = args.keys or cluster_keys.default_dir()
    if key_dir is None and is_this_host(args.master, args.port):
        key_dir = cluster_keys.own_worker_keys(base)
        if key_dir is not None:
            say(f"flac2all_worker: made this host's worker keys in {key_dir} and authorized them with the master here")
    if key_dir is None:
        sets = cluster_keys.worker_sets(base)
        if sets:
            names = ", ".join(folder.name for folder in sets)
            raise UsageError(
                f"no worker keys for this host in {base}, but worker key sets for {names}: pass the one to use "
                f"with --keys, as --keys {base / 'workers' / sets[0].name}"
            )
        raise UsageError(
            f"no worker keys in {base}: on the master run 'flac2all --cluster-keygen --worker NAME' and copy "
            f"the folder it names to this host as {cluster_keys.default_dir()} (or pass --keys DIR); or run "
            "with --insecure --allow DIR"
        )
    cluster_keys.worker_keys(key_dir)  # fail here, not in every child
    return key_dir


if __name__ == "__main__":
    sys.exit(main())
