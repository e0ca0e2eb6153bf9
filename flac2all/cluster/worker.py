"""``flac2all_worker MASTER_HOST``: run jobs for a master, one at a time per
process (a job is one task, or the encodes of one source fed by one
decoder), with the very same ``runner.execute_batch`` as local mode.

The parent starts N worker processes (default: CPU count) and waits. Each
has one DEALER socket, made after the fork (a zmq context never crosses a
fork), one slot, and a thread that runs the task while the main thread keeps
talking to the master (heartbeats every second, also during an encode). If
the master falls silent for its dead-after time (in its welcome) the worker kills its
encoder, removes its temp file, and reconnects for a bounded time before
exiting non-zero. SIGINT/SIGTERM: encoder killed, goodbye said (the master
requeues at once), exit 0.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import queue
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from flac2all import __version__, runner
from flac2all.cluster import keys as cluster_keys
from flac2all.cluster import protocol
from flac2all.cluster.protocol import ProtocolError
from flac2all.codecs.ffmpeg import audio_encoders
from flac2all.errors import ExitStatus, Flac2allError
from flac2all.report import line_for

LOST_MASTER = 3  # exit status when the master stayed away too long


def say(line: str, stream=None) -> None:
    """Print one line in one write: the worker processes share stdout and
    stderr, and print() writes the newline separately when unbuffered."""
    stream = stream or sys.stdout
    stream.write(line + "\n")
    stream.flush()


class WorkerProcess:
    def __init__(self, endpoint: str, worker_keys: cluster_keys.WorkerKeys | None, retry_seconds: float) -> None:
        self.endpoint = endpoint
        self.keys = worker_keys
        self.retry_seconds = retry_seconds
        self.signalled = threading.Event()
        self.dropped = 0

    def run(self) -> int:
        import zmq

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.signalled.set())
        self.ctx = zmq.Context()
        lost_since = time.monotonic()
        try:
            while True:
                outcome = self.session()
                if outcome == "shutdown" or outcome == "signalled":
                    return 0
                if outcome == "connected":
                    lost_since = time.monotonic()  # it was up: the bounded wait starts now
                if time.monotonic() - lost_since > self.retry_seconds:
                    say(
                        f"flac2all_worker: no master answered at {self.endpoint} for {self.retry_seconds:g} s "
                        "(is it running and reachable, with the same keys and flac2all version?), giving up",
                        sys.stderr,
                    )
                    return LOST_MASTER
                time.sleep(min(2.0, 0.2 + (time.monotonic() - lost_since) / 10))
        finally:
            self.ctx.term()

    def socket(self):
        import zmq

        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE + 1024)
        sock.setsockopt(zmq.SNDHWM, 100)
        if self.keys is not None:
            sock.curve_secretkey = self.keys.secret
            sock.curve_publickey = self.keys.public
            sock.curve_serverkey = self.keys.master_public
        sock.connect(self.endpoint)
        return sock

    def session(self) -> str:
        """One connection to the master, until it ends: 'shutdown' (run
        over), 'signalled', 'connected' (had a master, lost it) or 'lost'
        (never heard one)."""
        import zmq

        sock = self.socket()
        processes = runner.ProcessGroup()
        session = uuid.uuid4().hex
        results: queue.Queue = queue.Queue()
        todo: queue.Queue = queue.Queue()
        busy = False  # a task is running (one slot)
        settings = None
        timings = protocol.Timings()  # the defaults until the master's welcome
        heard = False
        last_heard = last_sent = time.monotonic()

        def send(frame: bytes) -> None:
            nonlocal last_sent
            try:
                sock.send(frame, zmq.NOBLOCK)
                last_sent = time.monotonic()
            except zmq.Again:
                pass

        # The task thread wakes the main loop through this pipe the moment
        # it is done, instead of the loop noticing at its next poll timeout.
        wake_r, wake_w = os.pipe()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(wake_r, zmq.POLLIN)

        def work() -> None:
            """The one task thread of this session (only it runs encoders;
            only the main thread touches the socket)."""
            while (job := todo.get()) is not None:
                try:
                    done = runner.execute_batch([task for _, _, task in job], settings, processes)
                except runner.Interrupted:
                    done = None
                results.put((job, done))
                os.write(wake_w, b"x")

        thread = threading.Thread(target=work, name="task", daemon=True)
        thread.start()

        def finish_running() -> None:
            """Kill the encoder (the runner removes its temp file) and wait
            for the task thread to let go of it."""
            nonlocal busy
            processes.stop()
            if busy:
                results.get()  # its result is no longer anyone's
                busy = False

        send(protocol.hello_to_wire(session, socket.gethostname(), os.getpid(), slots=1))
        try:
            while True:
                if self.signalled.is_set():
                    finish_running()
                    send(protocol.bye_to_wire())
                    return "signalled"
                ready = dict(poller.poll(100))
                if wake_r in ready:
                    os.read(wake_r, 64)
                if sock in ready:
                    msg = None
                    try:
                        msg = protocol.decode(sock.recv(zmq.NOBLOCK))
                        kind = msg["type"]
                        last_heard = time.monotonic()
                        if kind == "welcome":
                            welcome = protocol.welcome_from_wire(msg)
                            settings, timings = welcome.settings, welcome.timings
                            heard = True
                            send(protocol.ready_to_wire(0 if busy else 1))
                        elif kind == "job":
                            if settings is None or busy:
                                raise ProtocolError("a job while busy or before welcome")
                            todo.put(protocol.job_from_wire(msg, settings))
                            busy = True
                        elif kind == "heartbeat":
                            protocol.bare_from_wire(msg)
                        elif kind == "shutdown":
                            protocol.bare_from_wire(msg)
                            finish_running()
                            send(protocol.bye_to_wire())
                            return "shutdown"
                        elif kind == "reset":
                            protocol.bare_from_wire(msg)
                            # The master does not know this session (it
                            # restarted, or gave up on us): whatever we were
                            # doing is no longer ours to report. Start over.
                            finish_running()
                            say(
                                "flac2all_worker: unknown to the master (it restarted or declared this worker "
                                "dead); current task dropped, starting a new session",
                                sys.stderr,
                            )
                            return "connected"
                        else:
                            raise ProtocolError(f"unknown message type {kind!r}")
                    except ProtocolError as exc:
                        self.dropped += 1
                        say(f"flac2all_worker: dropped a message: {exc}", sys.stderr)
                        for refused in protocol.refusals_to_wire(msg, socket.gethostname(), str(exc)):
                            send(refused)  # so the master does not wait for it forever
                    except zmq.Again:
                        pass
                if busy:
                    try:
                        job, done = results.get_nowait()
                    except queue.Empty:
                        pass
                    else:
                        busy = False
                        # The job's last result frees the slot: no separate READY.
                        for (task_id, attempt, _), result in zip(job, done or [], strict=False):
                            send(protocol.result_to_wire(task_id, attempt, result))
                            say(line_for(result))
                now = time.monotonic()
                # (Messages waiting unread mean we were the ones stalled,
                # for example stopped with SIGSTOP: read them first.)
                if now - last_heard > timings.dead_after and not sock.poll(0):
                    finish_running()
                    say(
                        f"flac2all_worker: master at {self.endpoint} silent for {timings.dead_after:g} s; "
                        "encoder stopped, reconnecting",
                        sys.stderr,
                    )
                    return "connected" if heard else "lost"
                if now - last_sent >= timings.heartbeat:
                    send(protocol.heartbeat_to_wire())
        finally:
            processes.stop()
            todo.put(None)
            thread.join()
            sock.close(0)
            os.close(wake_r)
            os.close(wake_w)


def child(endpoint: str, key_dir: Path | None, retry_seconds: float) -> None:
    worker_keys = cluster_keys.worker_keys(key_dir) if key_dir else None
    # What this node can run, known before any message (main() probed it):
    # a message naming a codec must never be what starts a process.
    audio_encoders()
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
    audio_encoders()
    host = f"[{args.master}]" if ":" in args.master else args.master
    endpoint = f"tcp://{host}:{args.port}"
    fork = multiprocessing.get_context("fork")
    children = []
    for _ in range(args.threads):
        proc = fork.Process(target=child, args=(endpoint, key_dir, args.retry_seconds))
        proc.start()
        children.append(proc)
        say(f"Spawned worker process (pid {proc.pid})")

    def forward(signum: int, frame: object) -> None:
        for proc in children:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)

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
