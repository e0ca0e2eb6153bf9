"""One session of a worker process with its master (worker.py runs them one
after the other): runs jobs, one at a time (a job is one task, or the
encodes of one source fed by one decoder), with the very same
``runner.execute_batch`` as local mode.

Each process has one DEALER socket per session, made after the fork (a zmq
context never crosses a fork), one slot, and a thread that runs the job
while the main thread keeps talking to the master (heartbeats at the
master's interval, also during an encode). If the master falls silent for
its dead-after time the worker kills its encoders, removes their temp
files, and reconnects for a bounded time before exiting non-zero.

Stopping (rq's request_stop, then request_force_stop): the first SIGTERM
is a warm stop: no new job (no more credit), the current one finishes and
its results are sent, then goodbye and exit 0 (at once if idle). The second
is a hard stop: encoders killed, goodbye said (the master requeues at
once), exit 0. SIGINT asks for a warm stop only: a terminal's Ctrl-C
reaches every process of the group, and the parent forwards each signal it
gets as SIGTERM, so one Ctrl-C counts once and two are a hard stop.
"""

from __future__ import annotations

import os
import queue
import socket
import sys
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import replace
from enum import Enum
from typing import TYPE_CHECKING

import zmq

from flac2all import dirs
from flac2all.cluster import health, protocol
from flac2all.cluster.jobs import WireTask, is_copies, job_from_wire
from flac2all.cluster.protocol import ProtocolError
from flac2all.lines import line_for
from flac2all.model import Settings, Status, TaskResult
from flac2all.running import outputs, runner
from flac2all.running.procs import Interrupted, ProcessGroup

if TYPE_CHECKING:
    from flac2all.cluster.worker import WorkerProcess

LEAVING_LINGER_MS = 1000


def say(line: str, stream=None) -> None:
    """Print one line in one write: the worker processes share stdout and
    stderr, and print() writes the newline separately when unbuffered."""
    stream = stream or sys.stdout
    stream.write(line + "\n")
    stream.flush()


class SessionEnd(Enum):
    """How a session ended."""

    SHUTDOWN = "the master ended the run"
    SIGNALLED = "stopped by a signal"
    CONNECTED = "had a master and lost it"
    LOST = "never heard a master"


class Session:
    """One connection to the master, from hello to its end.

    The main thread runs the loop's steps and is the only one to touch the
    socket; the task thread runs the one job (only it starts encoders).
    """

    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker
        self.stop = worker.stop
        self.sock, self.watch = worker.socket()
        self.id = uuid.uuid4().hex
        self.processes = ProcessGroup()
        self.todo: queue.Queue = queue.Queue()  # jobs for the task thread; None ends it
        self.results: queue.Queue = queue.Queue()  # (job, its results or None) from it
        self.job: list[WireTask] | None = None  # the running one (one slot)
        self.settings: Settings | None = None  # from the welcome, where this worker sees the run's folders
        self.wire_settings: Settings | None = None  # as the master sent them: jobs are checked against them
        self.problem = ""  # why this node refuses the run (health before work)
        self.roots: tuple[str, str] | None = None  # the run's folders, resolved at the welcome
        self.timings = protocol.Timings()  # the defaults until the master's welcome
        self.heard = False  # a welcome came
        self.examined: queue.Queue = queue.Queue()  # the health check's finding, from its thread
        self.checked = False  # the health check is done and told
        self.last_heard = self.last_sent = time.monotonic()
        # The task thread wakes the loop through this pipe the moment it is
        # done, instead of the loop noticing at its next poll timeout.
        self.wake_r, self.wake_w = os.pipe()
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.poller.register(self.wake_r, zmq.POLLIN)
        self.handlers = {
            "welcome": self.on_welcome,
            "job": self.on_job,
            "copies": self.on_job,
            "heartbeat": self.on_heartbeat,
            "shutdown": self.on_shutdown,
            "reset": self.on_reset,
        }

    def run(self) -> SessionEnd:
        thread = threading.Thread(target=self.work, name="task", daemon=True)
        thread.start()
        self.send(protocol.hello_to_wire(self.id, socket.gethostname(), os.getpid(), slots=1))
        steps = (
            self.obey_signals,
            self.receive,
            self.send_health,
            self.send_results,
            self.watch_master,
            self.send_heartbeat,
        )
        try:
            while True:
                for step in steps:
                    if end := step():
                        return end
        finally:
            self.processes.stop()
            self.todo.put(None)
            thread.join()
            self.watch.close()
            self.sock.close()
            os.close(self.wake_r)
            os.close(self.wake_w)

    # -- the loop's steps: each returns how the session ended, or None --------

    def obey_signals(self) -> SessionEnd | None:
        """A warm stop leaves once the job is done (no credit is sent
        meanwhile); a hard one kills the job first (the results of the
        copies of a batch done by then are sent)."""
        if self.stop.hard:
            self.drop_job(report=True)
        if self.stop.warm and self.job is None:
            return self.leave(SessionEnd.SIGNALLED)
        return None

    def receive(self) -> SessionEnd | None:
        """Wait (less than a heartbeat) for a message or the task thread,
        and handle one message."""
        ready = dict(self.poller.poll(min(100, self.timings.heartbeat * 500)))
        if self.wake_r in ready:
            os.read(self.wake_r, 64)
        if self.sock not in ready:
            return None
        msg = None
        try:
            msg = protocol.decode(self.sock.recv(zmq.NOBLOCK))
            self.last_heard = time.monotonic()
            handler = self.handlers.get(msg["type"])
            if handler is None:
                raise ProtocolError(f"unknown message type {msg['type']!r}")
            return handler(msg)
        except ProtocolError as exc:
            self.refuse(msg, exc)
        except zmq.Again:
            pass
        return None

    def send_results(self) -> None:
        """The job's results, once the task thread has them. The last one
        frees the slot: no separate READY."""
        if self.job is None:
            return None
        try:
            job, done = self.results.get_nowait()
        except queue.Empty:
            return None
        self.job = None
        self.report(job, done)
        return None

    def watch_master(self) -> SessionEnd | None:
        """A master silent for its dead-after time is gone: stop the job and
        start over. (Messages waiting unread mean we were the ones stalled,
        for example stopped with SIGSTOP: read them first.)"""
        if time.monotonic() - self.last_heard <= self.timings.dead_after or self.sock.poll(0):
            return None
        self.drop_job()
        if not self.heard:
            self.worker.diagnose(self.watch)
            return SessionEnd.LOST
        self.worker.tell(
            f"flac2all_worker: master at {self.worker.endpoint} silent for {self.timings.dead_after:g} s; "
            f"encoder stopped, {'exiting' if self.stop.warm else 'reconnecting'}",
            sys.stderr,
        )
        return SessionEnd.CONNECTED

    def send_heartbeat(self) -> None:
        if time.monotonic() - self.last_sent >= self.timings.heartbeat:
            self.send(protocol.heartbeat_to_wire())
        return None

    # -- one method per message from the master -------------------------------

    def on_welcome(self, msg: dict) -> None:
        if self.heard:
            raise ProtocolError("a second welcome")
        welcome = protocol.welcome_from_wire(msg)
        self.wire_settings, self.timings = welcome.settings, welcome.timings
        self.settings = self.worker.maps.settings(welcome.settings)
        self.heard = True
        self.worker.diagnosis = ""
        self.roots = self.settings_roots()
        # The run's folders as they are now: a job finds them swapped for a
        # link since (by someone who can write their parent) and writes or
        # reads nothing through it.
        dirs.PINNED.clear()
        dirs.SOURCES_IN = self.roots[0]
        with suppress(OSError):
            st = os.stat(self.settings.outdir)
            dirs.PINNED[os.fspath(self.settings.outdir)] = (st.st_dev, st.st_ino)
        # Health before work: this node's own view of the run's folders and
        # encoders (each mode's encoder tried once), told to the master
        # before any credit; in a thread, for heartbeats to go on meanwhile.
        checks = welcome.checks
        threading.Thread(target=lambda: self.examined.put(self.examine(checks)), name="health", daemon=True).start()

    def examine(self, checks: protocol.Checks) -> health.Examined:
        """Health before work, in this worker's paths: first its maps (a
        wrong one named as the user gave it) and its ``--allow`` folders
        (named as they are here), then what the health check finds, told
        in the master's paths."""
        assert self.settings is not None and self.wire_settings is not None
        maps = self.worker.maps
        if problem := maps.wrong(self.wire_settings, checks) or health.outside_allowed(
            self.settings, self.worker.allowed
        ):
            return health.Examined(problem)
        found = health.examine(
            self.settings, maps.checks(checks), self.worker.allowed, self.id, self.worker.other_encoders
        )
        health.own_versions(found.modes)  # probed here, off the loop's thread (each program once per process)
        return replace(found, problem=maps.text_to_master(found.problem))

    def send_health(self) -> None:
        """Once the health check is done: what it found, then credit."""
        try:
            found = self.examined.get_nowait()
        except queue.Empty:
            return None
        self.problem, self.checked = found.problem, True
        about = health.own_versions(found.modes)
        self.send(protocol.health_to_wire(self.problem, found.modes, found.lacks, health.system(), about))
        if self.problem:
            self.worker.failed = True
            self.worker.tell(f"flac2all_worker: refusing this run: {self.problem}", sys.stderr)
        elif found.lacks:
            self.worker.tell(
                f"flac2all_worker: this node cannot run {'; '.join(found.lacks.values())}: "
                "it takes only the other modes' jobs"
            )
        # Credit: the free slot, if any, and none once stopping or refusing.
        self.send(protocol.ready_to_wire(0 if self.job or self.stop.warm or self.problem else 1))
        return None

    def settings_roots(self) -> tuple[str, str]:
        """The real paths of the run's folders ("" for one that a link
        swapped meanwhile leaves unresolved)."""
        assert self.settings is not None
        roots = []
        for folder in (self.settings.input_dir, self.settings.outdir):
            try:
                roots.append(os.path.realpath(folder))
            except OSError:
                roots.append("")
        return roots[0], roots[1]

    def on_job(self, msg: dict) -> None:
        if self.settings is None or self.job is not None or not self.checked:
            raise ProtocolError("a job while busy or before welcome and health")
        if self.problem:
            raise ProtocolError(f"this worker refused the run: {self.problem}")
        job = self.worker.maps.job(job_from_wire(msg, self.wire_settings), self.settings)
        # The run's folders themselves, as at the welcome (``confine`` looks
        # at the parts below them): one swapped for a link since leads out.
        if self.roots != (now := self.settings_roots()) or "" in now:
            raise ProtocolError("the run's input or output folder now resolves elsewhere (swapped for a link?)")
        if is_copies(job):
            job, refused = health.confine_each(job, self.settings, self.roots)
            for (task_id, attempt, _), why in refused:
                self.refuse(None, ProtocolError(why), [(task_id, attempt)])
            if not job:
                return
        else:
            health.confine(job, self.settings, self.roots)
        if self.stop.warm:
            return  # sent before the master knew: the bye that follows hands it back
        self.job = job
        self.todo.put(job)

    def on_heartbeat(self, msg: dict) -> None:
        protocol.bare_from_wire(msg)

    def on_shutdown(self, msg: dict) -> SessionEnd:
        protocol.bare_from_wire(msg)
        self.drop_job()
        return self.leave(SessionEnd.SHUTDOWN)

    def on_reset(self, msg: dict) -> SessionEnd:
        """The master does not know this session (it restarted, or gave up on
        us): what we were doing is no longer ours to report. Start over."""
        protocol.bare_from_wire(msg)
        self.drop_job()
        say(
            "flac2all_worker: unknown to the master (it restarted or declared this worker "
            "dead); current task dropped, starting a new session",
            sys.stderr,
        )
        return SessionEnd.CONNECTED

    # -- helpers --------------------------------------------------------------

    def work(self) -> None:
        """The task thread: runs each job it is given, to its results (a
        batch of copies one by one: a hard stop ends it between two, and
        the results of those done are still sent)."""
        with outputs.reusing():  # the temp folders of this session's encodes, kept between them
            self.run_jobs()

    def run_jobs(self) -> None:
        while (job := self.todo.get()) is not None:
            tasks = [task for _, _, task in job]
            done: list[TaskResult] = []
            try:
                if is_copies(job):
                    for task in tasks:
                        if self.processes.stopping:
                            raise Interrupted()
                        done += runner.execute_batch([task], self.settings, self.processes)
                else:
                    done = runner.execute_batch(tasks, self.settings, self.processes)
            except Interrupted:
                pass
            self.results.put((job, done))
            os.write(self.wake_w, b"x")

    def drop_job(self, report: bool = False) -> None:
        """Kill the encoders (the runner removes their temp files) and wait
        for the task thread to let go of the job: its result is no longer
        anyone's, unless ``report`` (a hard stop: the master is still
        there)."""
        self.processes.stop()
        if self.job is not None:
            job, done = self.results.get()
            self.job = None
            if report:
                self.report(job, done)

    def report(self, job: list[WireTask], done: list[TaskResult]) -> None:
        """Send the results of the tasks done (all of a job's, or the first
        of a batch of copies cut short), and print them in one write."""
        lines = []
        for (task_id, attempt, _), result in zip(job, done, strict=False):
            if result.status is Status.FAILED:
                self.worker.failed = True
                result = replace(result, cause=health.cause_of(result, self.settings))
            self.send(protocol.result_to_wire(task_id, attempt, self.worker.maps.result(result)))
            lines.append(line_for(result))
        if lines:
            say("\n".join(lines))

    def leave(self, end: SessionEnd) -> SessionEnd:
        """Say goodbye. It and the results sent before it may still be
        queued when the socket closes: they get up to a second to reach the
        master before the process exits (other sessions close with no such
        wait: a master that is gone must not hold up the exit)."""
        self.send(protocol.bye_to_wire())
        self.sock.setsockopt(zmq.LINGER, LEAVING_LINGER_MS)
        return end

    def send(self, frame: bytes) -> None:
        try:
            self.sock.send(frame, zmq.NOBLOCK)
            self.last_sent = time.monotonic()
        except zmq.Again:
            pass

    def refuse(self, msg: dict | None, why: ProtocolError, ids: list[tuple[int, int]] | None = None) -> None:
        """Drop a message (or, ``ids``, a copy of a batch); answer the tasks
        of a refused job with failed results, so that the master does not
        wait for them forever."""
        self.worker.dropped += 1
        say(f"flac2all_worker: dropped {'a copy' if ids else 'a message'}: {why}", sys.stderr)
        why_there = self.worker.maps.text_to_master(str(why))
        for frame in protocol.refusals_to_wire(msg, socket.gethostname(), why_there, ids=ids):
            self.worker.failed = True
            self.send(frame)
