"""The master: hands tasks to workers over ZeroMQ and keeps a ledger so that
no task is lost or silently run twice (see docs/cluster.md).

One ROUTER socket. Workers say hello, then READY with credit (their free
slots); the master sends at most that many jobs (a job is one task, or the
encodes of one source, which the worker decodes once). Heartbeats both ways every
second; a worker silent for DEAD_AFTER seconds is dead and its tasks go back
to the queue (a task whose worker died under it POISON_DEATHS times fails).
A result is accepted only from the session the task's current attempt was
given to; late duplicates are acknowledged and discarded.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from flac2all import outputs
from flac2all.cluster import keys as cluster_keys
from flac2all.cluster import protocol
from flac2all.cluster.protocol import ProtocolError
from flac2all.errors import UsageError
from flac2all.model import HostRow, Settings, Status, Task, TaskResult
from flac2all.model import Job as PlannedJob

log = logging.getLogger("flac2all.master")

# The master's timings, sent to every worker in its welcome.
TIMINGS = protocol.Timings()
HEARTBEAT = TIMINGS.heartbeat
DEAD_AFTER = TIMINGS.dead_after  # missed heartbeats before a worker is dead: detection in 4-5 s
POISON_DEATHS = 3


@dataclass
class Entry:
    """One task in the ledger."""

    id: int
    task: Task
    attempt: int = 0
    deaths: int = 0
    session: str | None = None  # the worker session holding it
    done: bool = False


@dataclass(eq=False)
class Job:
    """Tasks sent together, in one slot of a worker."""

    entries: list[Entry]

    @property
    def open(self) -> list[Entry]:
        return [e for e in self.entries if not e.done]


@dataclass
class Peer:
    """One worker process (one session of it)."""

    identity: bytes
    session: str
    host: str
    pid: int
    slots: int
    last_seen: float
    credit: int = 0
    jobs: dict[int, Job] = field(default_factory=dict)  # task id -> its job, for the tasks it holds
    finished: int = 0
    joined: float = field(default_factory=time.monotonic)
    current: dict[int, str] = field(default_factory=dict)  # task id -> file name

    def held(self) -> list[Job]:
        """The jobs it holds (each in one slot), once each."""
        return list({id(job): job for job in self.jobs.values()}.values())

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.held())


@dataclass
class Counters:
    dropped: int = 0  # malformed or hostile frames
    late: int = 0  # results for an attempt no longer current
    requeued: int = 0


class Master:
    """The cluster executor (``flac2all.executors.Executor``)."""

    needs_local_encoders = False  # it only hands out work

    def __init__(
        self,
        bind: str = "*",
        port: int = 2019,
        key_dir: Path | None = None,
        say: Callable[[str], None] = lambda line: print(line, flush=True),
    ) -> None:
        self.bind, self.port, self.say = bind, port, say
        self.keys = cluster_keys.master_keys(key_dir) if key_dir else None
        self.counters = Counters()
        self.peers: dict[bytes, Peer] = {}
        self.entries: dict[int, Entry] = {}
        self.pending: deque[Job] = deque()
        self.endpoint = ""
        self.open_tasks = 0  # entries not done
        self.littered: set[Path] = set()  # output folders of tasks whose worker died
        self.hosts_seen: dict[str, Peer] = {}  # every worker seen, for the host table at the end

    # -- socket ---------------------------------------------------------------

    def open(self) -> None:
        self.ctx = zmq.Context()
        self.auth = None
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE + 1024)
        if self.keys is not None:
            from zmq.auth.thread import ThreadAuthenticator

            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve(domain=cluster_keys.ZAP_DOMAIN, location=str(self.keys.authorized))
            sock.curve_secretkey = self.keys.secret
            sock.curve_publickey = self.keys.public
            sock.curve_server = True
            sock.zap_domain = cluster_keys.ZAP_DOMAIN.encode()
        else:
            self.say("WARNING: the cluster is unauthenticated and unencrypted (no keys: see flac2all --cluster-keygen)")
        try:
            if self.port == 0:
                bound = sock.bind_to_random_port(f"tcp://{self.bind}")
                self.endpoint = f"tcp://{self.bind}:{bound}"
            else:
                sock.bind(f"tcp://{self.bind}:{self.port}")
                self.endpoint = f"tcp://{self.bind}:{self.port}"
        except zmq.ZMQError as exc:
            sock.close()
            self.close()
            raise UsageError(f"cannot listen on {self.bind}:{self.port}: {exc}") from None
        self.sock = sock

    def close(self) -> None:
        if getattr(self, "sock", None) is not None:
            self.sock.close(0)
            self.sock = None
        if getattr(self, "auth", None) is not None:
            self.auth.stop()
        if getattr(self, "ctx", None) is not None:
            self.ctx.term()
            self.ctx = None

    def send(self, peer: Peer, frame: bytes) -> bool:
        try:
            self.sock.send_multipart([peer.identity, frame], zmq.NOBLOCK)
            return True
        except zmq.ZMQError:  # EHOSTUNREACH (gone) or EAGAIN (not reading)
            return False

    # -- ledger ---------------------------------------------------------------

    def requeue(self, peer: Peer, died: bool, on_result: Callable[[TaskResult], None]) -> None:
        for job in sorted(peer.held(), key=lambda j: j.entries[0].id, reverse=True):
            again = []
            for entry in job.open:
                entry.session = None
                entry.attempt += 1
                self.counters.requeued += 1
                if died:
                    # What its worker was writing stays behind: swept at the end.
                    self.littered.add(entry.task.output.parent)
                    entry.deaths += 1
                    if entry.deaths >= POISON_DEATHS:
                        entry.done = True
                        self.open_tasks -= 1
                        on_result(
                            TaskResult(
                                entry.task, Status.FAILED, f"the worker died under this task {entry.deaths} times", 1
                            )
                        )
                        continue
                again.append(entry)
            if again:
                self.pending.appendleft(Job(again))
        peer.jobs.clear()
        peer.current.clear()

    def drop_peer(self, peer: Peer, died: bool, why: str, on_result: Callable[[TaskResult], None]) -> None:
        self.peers.pop(peer.identity, None)
        n = len(peer.jobs)
        self.requeue(peer, died, on_result)
        self.say(f"Worker {peer.host}:{peer.pid} {why}; {n} task(s) requeued ({len(self.peers)} worker(s) left)")

    # -- messages -------------------------------------------------------------

    def handle(self, identity: bytes, frame: bytes, settings_wire: dict, on_result) -> None:
        now = time.monotonic()
        try:
            msg = protocol.decode(frame)
            kind = msg["type"]
            peer = self.peers.get(identity)
            if kind == "hello":
                hello = protocol.hello_from_wire(msg)
                if peer is not None:
                    self.drop_peer(peer, False, "started a new session", on_result)
                peer = Peer(identity, hello.session, hello.host, hello.pid, hello.slots, now)
                self.peers[identity] = peer
                self.send(peer, protocol.welcome_to_wire(settings_wire, TIMINGS))
                self.say(f"Got {len(self.peers)} worker(s) (new: {peer.host}:{peer.pid})")
                return
            if peer is None:
                # A session we do not know (we restarted, or declared it
                # dead): it must start over, and its results are not ours.
                if kind == "result":
                    self.counters.late += 1
                self.sock.send_multipart([identity, protocol.reset_to_wire()], zmq.NOBLOCK)
                return
            peer.last_seen = now
            if kind == "ready":
                peer.credit = max(0, min(protocol.ready_from_wire(msg), peer.free_slots))
            elif kind == "result":
                wire = protocol.result_from_wire(msg)
                entry = self.entries.get(wire.task_id)
                if entry is None or entry.done or entry.session != peer.session or entry.attempt != wire.attempt:
                    self.counters.late += 1  # a duplicate or a result from a worker we gave up on
                    return
                entry.done = True
                self.open_tasks -= 1
                entry.session = None
                job = peer.jobs.pop(entry.id)
                peer.current.pop(entry.id, None)
                peer.finished += 1
                if not job.open:  # the whole job is done: its slot is free
                    peer.credit = min(peer.free_slots, peer.credit + 1)
                on_result(wire.to_result(entry.task))
            elif kind == "heartbeat":
                protocol.bare_from_wire(msg)
            elif kind == "bye":
                protocol.bare_from_wire(msg)
                self.drop_peer(peer, False, "said goodbye", on_result)
            else:
                raise ProtocolError(f"unknown message type {kind!r}")
        except ProtocolError as exc:
            self.counters.dropped += 1
            log.warning("dropped a message from a worker: %s", exc)
        except zmq.ZMQError:
            pass

    # -- the run --------------------------------------------------------------

    def run(
        self,
        jobs: Sequence[PlannedJob],
        settings: Settings,
        on_start: Callable[[Task], None],
        on_result: Callable[[TaskResult], None],
        stop: threading.Event,
    ) -> None:
        """See ``executors.Executor.run``: the jobs go to the workers, at
        most MAX_JOB tasks per message."""
        ids = itertools.count()
        for planned in jobs:
            tasks = planned.tasks
            for start in range(0, len(tasks), protocol.MAX_JOB):
                job = Job([Entry(next(ids), task) for task in tasks[start : start + protocol.MAX_JOB]])
                self.entries.update((entry.id, entry) for entry in job.entries)
                self.pending.append(job)
        self.open_tasks = len(self.entries)
        if not self.open_tasks:
            return
        settings_wire = protocol.settings_to_wire(settings)
        self.open()
        try:
            self.loop(settings_wire, stop, on_start, on_result)
        finally:
            self.shutdown()
            self.close()
            # Every task is settled and the workers are gone: what a killed
            # worker was writing can go.
            outputs.remove_stale_temps(self.littered)

    def hosts(self) -> list[HostRow]:
        """Per worker host: its worker processes busy now, tasks done, rate,
        the sources in progress (paths). Every worker seen stays counted
        after it leaves, so the table still adds up when the run ends."""
        # Peers are dropped as they leave; a display keeps asking.
        seen = self.hosts_seen
        live = list(self.peers.values())
        seen.update((peer.session, peer) for peer in live)
        here = {peer.session for peer in live}
        busy = {peer.session for peer in live if peer.jobs}
        hosts: dict[str, list[Peer]] = {}
        for peer in list(seen.values()):
            hosts.setdefault(peer.host, []).append(peer)
        now = time.monotonic()
        rows = []
        for host, peers in sorted(hosts.items()):
            current = [str(job.entries[0].task.source) for p in peers if p.session in busy for job in p.held()]
            rate = sum(p.finished / max((now if p.session in here else p.last_seen) - p.joined, 1e-9) for p in peers)
            done = sum(p.finished for p in peers)
            rows.append(HostRow(host, sum(p.session in busy for p in peers), done, rate, current))
        return rows

    def loop(self, settings_wire: dict, stop, on_start, on_result) -> None:
        self.say(f"Listening on {self.endpoint}")
        self.say("Waiting for worker(s) to connect. We need at least one worker to continue")
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        commenced = False
        next_beat = time.monotonic()
        while self.open_tasks and not stop.is_set():
            if poller.poll(100):
                while True:
                    try:
                        frames = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if len(frames) != 2:
                        self.counters.dropped += 1
                        continue
                    self.handle(frames[0], frames[1], settings_wire, on_result)
            now = time.monotonic()
            if not commenced and self.peers:
                commenced = True
                self.say("Commencing run...")
            for peer in list(self.peers.values()):
                if now - peer.last_seen > DEAD_AFTER:
                    self.drop_peer(peer, True, f"silent for {DEAD_AFTER:g} s, declared dead", on_result)
            if now >= next_beat:
                next_beat = now + HEARTBEAT
                beat = protocol.heartbeat_to_wire()
                for peer in list(self.peers.values()):
                    self.send(peer, beat)
            self.dispatch(on_start, on_result)

    def dispatch(self, on_start, on_result) -> None:
        for peer in list(self.peers.values()):
            while peer.credit > 0 and self.pending:
                job = self.pending.popleft()
                entries = job.open
                if not entries:
                    continue
                try:
                    frame = protocol.job_to_wire([(e.id, e.attempt, e.task) for e in entries])
                except ProtocolError as exc:
                    if len(entries) > 1:  # too large together (very long paths): one by one
                        self.pending.extendleft(Job([e]) for e in reversed(entries))
                    else:
                        entries[0].done = True
                        self.open_tasks -= 1
                        on_result(TaskResult(entries[0].task, Status.FAILED, f"cannot be sent to a worker: {exc}", 1))
                    continue
                if not self.send(peer, frame):
                    self.pending.appendleft(job)
                    self.drop_peer(peer, True, "is unreachable", on_result)
                    break
                peer.credit -= 1
                for entry in entries:
                    entry.session = peer.session
                    peer.jobs[entry.id] = job
                    peer.current[entry.id] = entry.task.source.name
                    on_start(entry.task)

    def shutdown(self) -> None:
        """Tell every worker the run is over (they stop their encoders), and
        give them a moment to say goodbye."""
        if getattr(self, "sock", None) is None:
            return
        frame = protocol.shutdown_to_wire()
        for peer in self.peers.values():
            self.send(peer, frame)
        deadline = time.monotonic() + 1.0
        while self.peers and time.monotonic() < deadline:
            if self.sock.poll(100):
                try:
                    identity, *rest = self.sock.recv_multipart(zmq.NOBLOCK)
                except (zmq.Again, ValueError):
                    continue
                peer = self.peers.get(identity)
                if peer is not None and rest and protocol.is_bye(rest[-1]):
                    self.peers.pop(identity, None)
        if self.counters.dropped or self.counters.late:
            self.say(
                f"Cluster: {self.counters.dropped} malformed message(s) dropped, "
                f"{self.counters.late} late result(s) discarded, {self.counters.requeued} task(s) requeued"
            )
