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

import os
import queue
import signal
import socket
import sys
import threading
import time
import uuid

from flac2all import runner
from flac2all.cluster import keys as cluster_keys
from flac2all.cluster import protocol
from flac2all.cluster.protocol import ProtocolError
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


if __name__ == "__main__":  # python -m flac2all.cluster.worker, as before the CLI had its own module
    from flac2all.cluster.worker_cli import main

    sys.exit(main())
