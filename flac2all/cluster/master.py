"""The master: hands tasks to workers over ZeroMQ and keeps a ledger so that
no task is lost or silently run twice, and no peer is believed beyond what
the master can check (see docs/cluster.md).

One ROUTER socket. Workers say hello (a session bound to that connection),
check the run's folders and their encoders (health before work), then say
READY with credit (their free slots, at most the slots they declared); the
master sends at most that many jobs, each only to a worker that can run its
modes, each with a lease. Heartbeats both ways every second; a worker silent
for DEAD_AFTER seconds is dead and its tasks go back to the queue. A result
is accepted only from the session the task's current attempt was given to,
and a success only once the master sees its output (``belief.disbelief``).
A worker whose failures are its environment's is quarantined and its tasks
go elsewhere; one that holds a job past its lease gets no more.
"""

from __future__ import annotations

import errno
import itertools
import logging
import resource
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import zmq

from flac2all.cluster import auth, protocol
from flac2all.cluster import keys as cluster_keys
from flac2all.cluster.belief import identity
from flac2all.cluster.checks import make_checks
from flac2all.cluster.jobs import job_to_wire, settings_to_wire
from flac2all.cluster.leases import SMALL_COPY as SMALL_COPY
from flac2all.cluster.leases import Entry, Lease, batched, lease_seconds
from flac2all.cluster.ledger import POISON_DEATHS as POISON_DEATHS
from flac2all.cluster.ledger import Ledger
from flac2all.cluster.notices import Notices
from flac2all.cluster.peers import Peer
from flac2all.cluster.protocol import ProtocolError
from flac2all.cluster.view import about, host_rows
from flac2all.cluster.waiting import REFUSED_GRACE as REFUSED_GRACE
from flac2all.cluster.waiting import WAIT_WORKERS, Waiting
from flac2all.cluster.waiting import NoWorkersError as NoWorkersError
from flac2all.errors import UsageError
from flac2all.executors import Posted
from flac2all.model import HostRow, Job, Settings, Task, TaskResult
from flac2all.running import outputs

log = logging.getLogger("flac2all.master")

# The master's timings, sent to every worker in its welcome.
TIMINGS = protocol.Timings()
HEARTBEAT = TIMINGS.heartbeat
DEAD_AFTER = TIMINGS.dead_after  # missed heartbeats before a worker is dead: detection in 4-5 s


HANDSHAKE_MS = 5000
# What one turn of the loop reads (see Master.receive), and how often a
# connection's malformed messages are said.
MAX_FRAMES_PER_TURN = 512
MAX_FRAMES_PER_PEER = 64
COMPLAINT_EVERY = 10.0
MAX_COMPLAINTS = 10_000
# Sessions one connection may open: a worker opens one per connection (a
# new socket for each); a peer saying hello on and on is refused (and said
# as a malformed message is), not announced each time.
MAX_HELLOS = 8


def raise_descriptor_limit() -> None:
    """The soft limit on open files raised to the hard one: every worker
    (and every stranger) holds a descriptor of the master's, and at the
    common 1024 the master could not open the outputs it must check."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):  # an infinite hard limit some kernels refuse as soft: keep ours
            pass


class Master(Waiting, Posted):
    """The cluster executor (``flac2all.executors.Executor``)."""

    needs_local_encoders = False  # it only hands out work

    def __init__(
        self,
        bind: str = "*",
        port: int = 2019,
        key_dir: Path | None = None,
        say: Callable[[str], None] = lambda line: print(line, flush=True),
        warn: Callable[[str], None] | None = None,
        max_slots: int = protocol.MAX_SLOTS,
        wait_workers: float = WAIT_WORKERS,
        start_hint: str = "",
    ) -> None:
        super().__init__()
        # ``say``: how the run goes (listening, workers joining); ``warn``:
        # what went wrong (-q keeps these, on stderr).
        self.bind, self.port, self.say, self.warn = bind, port, say, warn or say
        self.keys = cluster_keys.master_keys(key_dir) if key_dir else None
        self.max_slots, self.wait_workers, self.start_hint = max_slots, wait_workers, start_hint
        self.refusals = auth.Refusals(self.warn)
        self.notices = Notices(say, self.warn)  # lines about worker processes, once per host
        self.peers: dict[bytes, Peer] = {}
        self.sessions: dict[str, bytes] = {}  # session -> the connection that opened it
        self.endpoint = ""
        self.hosts_seen: dict[str, Peer] = {}  # every worker seen, for the host table at the end
        self.names: dict[str, str] = {}  # a worker key -> the host name it is shown under
        self.complaints: dict[bytes, tuple[float, int]] = {}  # connection -> (last said, dropped since)
        self.results_in = 0  # results accepted
        self.idle_since = time.monotonic()
        self.probe: Path | None = None
        self.lacking: dict[str, dict[str, str]] = {}  # session -> the modes it cannot run -> why
        self.abouts: dict[str, str] = {}  # host -> what it runs on and its encoders' versions
        self.written: set[Path] = set()  # every folder a job was sent to write into

    # -- socket ---------------------------------------------------------------

    def open(self) -> None:
        raise_descriptor_limit()
        self.ctx = zmq.Context()
        self.auth = None
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MESSAGE + 1024)
        # A connection that has not finished its handshake by then is closed:
        # an open TCP connection alone holds no descriptor for long.
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
        if self.keys is not None:
            self.auth = auth.secure(sock, self.ctx, self.keys, self.refusals)
        else:
            self.warn("WARNING: --insecure: the cluster is unauthenticated and unencrypted; any host that reaches")
            self.warn("         this port can take jobs and send results (keys are the default: drop --insecure)")
            self.warn("         and a worker is known by the host name its hello gives, which any peer can claim")
        self.watch = auth.HandshakeWatch(sock, self.refusals, self.keys is not None)
        try:
            if self.port == 0:
                bound = sock.bind_to_random_port(f"tcp://{self.bind}")
                self.endpoint = f"tcp://{self.bind}:{bound}"
            else:
                sock.bind(f"tcp://{self.bind}:{self.port}")
                self.endpoint = f"tcp://{self.bind}:{self.port}"
        except zmq.ZMQError as exc:
            self.sock = sock
            self.close()
            why = zmq.strerror(exc.errno)  # str(exc) ends with the address again
            if exc.errno == errno.EADDRINUSE:
                why += " (another master? pick a free --port, and give the workers the same)"
            elif exc.errno in (errno.EADDRNOTAVAIL, errno.ENODEV):
                why += " (--bind takes an address of this host)"
            raise UsageError(f"cannot listen on {self.bind}:{self.port}: {why}") from None
        self.sock = sock

    def close(self) -> None:
        if getattr(self, "watch", None) is not None:
            self.sock.disable_monitor()
            self.watch.close()
            self.watch = None
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

    def drop_peer(self, peer: Peer, died: bool, why: str) -> None:
        self.peers.pop(peer.identity, None)
        self.sessions.pop(peer.session, None)
        n = len(peer.leases)
        self.ledger.requeue(peer, died)
        self.warn(f"Worker {peer.host}:{peer.pid} {why}; {n} task(s) requeued ({len(self.peers)} worker(s) left)")

    # -- messages -------------------------------------------------------------

    def receive(self) -> None:
        """Handle the frames waiting, at most MAX_FRAMES_PER_TURN of them and
        MAX_FRAMES_PER_PEER from one connection (its others this turn are
        dropped unread): heartbeats, leases and the dispatch come between
        two turns, and the socket hands out frames from each connection in
        turn, so a peer sending junk as fast as it can takes its share of
        the master and no more."""
        counts: dict[bytes, int] = {}
        for _ in range(MAX_FRAMES_PER_TURN):
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            identity = frames[0].bytes
            count = counts[identity] = counts.get(identity, 0) + 1
            if len(frames) != 2 or count > MAX_FRAMES_PER_PEER:
                self.ledger.counters.dropped += 1
                continue
            self.handle(identity, frames[1])

    def complain(self, identity: bytes, exc: ProtocolError) -> None:
        """Say why a message was dropped: at most once per COMPLAINT_EVERY
        seconds for each connection, with how many were dropped unsaid."""
        now = time.monotonic()
        last, unsaid = self.complaints.get(identity, (-COMPLAINT_EVERY, 0))
        if now - last < COMPLAINT_EVERY:
            self.complaints[identity] = (last, unsaid + 1)
            return
        if len(self.complaints) >= MAX_COMPLAINTS:  # a stranger on ever new connections: start over
            self.complaints.clear()
        self.complaints[identity] = (now, 0)
        more = f" (and {unsaid} more since the last said)" if unsaid else ""
        peer = self.peers.get(identity)
        sender = f"worker {peer.host}:{peer.pid}" if peer is not None else "a worker"
        log.warning("dropped a message from %s%s: %s", sender, more, exc)

    def handle(self, identity: bytes, frame: zmq.Frame) -> None:
        now = time.monotonic()
        try:
            msg = protocol.decode(frame.bytes)
            kind = msg["type"]
            peer = self.peers.get(identity)
            if kind == "hello":
                self.on_hello(identity, frame, protocol.hello_from_wire(msg), peer, now)
                return
            if peer is None:
                # A session we do not know (we restarted, or declared it
                # dead): it must start over, and its results are not ours.
                if kind == "result":
                    self.ledger.counters.late += 1
                self.sock.send_multipart([identity, protocol.reset_to_wire()], zmq.NOBLOCK)
                return
            peer.last_seen = now
            if kind == "health":
                self.on_health(peer, protocol.health_from_wire(msg, self.settings.modes))
            elif kind == "ready":
                peer.credit = 0 if peer.problem else max(0, min(protocol.ready_from_wire(msg), peer.free_slots))
            elif kind == "result":
                self.ledger.accept(peer, protocol.result_from_wire(msg))
            elif kind in ("heartbeat", "bye"):
                protocol.bare_from_wire(msg)
                if kind == "bye":
                    self.drop_peer(peer, False, "said goodbye")
            else:
                raise ProtocolError(f"unknown message type {kind!r}")
        except ProtocolError as exc:
            self.ledger.counters.dropped += 1
            if "another version" in str(exc):
                self.refusals.refuse(auth.address_of(frame), f"version mismatch ({exc})")
            else:
                self.complain(identity, exc)
        except zmq.ZMQError:
            pass

    def on_hello(self, identity: bytes, frame, hello: protocol.Hello, peer: Peer | None, now: float) -> None:
        owner = self.sessions.get(hello.session)
        if owner is not None and owner != identity:
            raise ProtocolError(f"a hello for session {hello.session}, which another connection holds")
        hellos = peer.hellos + 1 if peer is not None else 1
        if hellos > MAX_HELLOS:
            raise ProtocolError(f"more than {MAX_HELLOS} hellos on one connection")
        key = auth.key_of(frame)
        who = key or hello.host
        if peer is not None:
            self.drop_peer(peer, False, "started a new session")
            # The same connection is the same worker, whatever its new hello
            # calls itself: it keeps what its last session earned.
            who = peer.who
        standing = self.ledger.standing(who)
        slots = min(hello.slots, self.max_slots)
        host = self.name_for(key, hello.host)
        peer = Peer(identity, hello.session, host, hello.pid, slots, now, auth.address_of(frame), who, standing)
        peer.problem = standing.quarantine
        peer.hellos = hellos
        self.peers[identity] = peer
        self.sessions[hello.session] = identity
        self.send(peer, protocol.welcome_to_wire(self.settings_wire, TIMINGS, self.checks))
        count = len(self.peers)
        self.notices.note(peer.host, peer.pid, "joined", lambda who: f"Got {count} worker(s) (new: {who})")

    def name_for(self, key: str, host: str) -> str:
        """The host name a key's workers are shown under: the first it gave
        (a later hello cannot rename it), told apart from another key's
        that gave the same one. Without keys, what the hello says."""
        if not key:
            return host
        if key not in self.names:
            taken = host in self.names.values()
            self.names[key] = f"{host} [{key[:8]}]" if taken else host
        return self.names[key]

    def on_health(self, peer: Peer, health: protocol.Health) -> None:
        if peer.modes is not None:
            raise ProtocolError("a second health message")
        peer.modes = frozenset(health.modes)
        self.lacking[peer.session] = {mode: f"{peer.host}: {why}" for mode, why in health.lacks}
        self.abouts[peer.host] = about(health)
        if health.problem:
            peer.problem = peer.problem or f"unhealthy: {health.problem}"
            peer.credit = 0
            line = f"is unhealthy and gets no work: {health.problem}"
            self.notices.note(peer.host, peer.pid, line, lambda who: f"Worker {who} {line}", trouble=True)
        elif missing := [m for m in self.settings.modes if m not in peer.modes]:
            line = f"cannot run {', '.join(missing)}: it gets the other modes' jobs"
            self.notices.note(peer.host, peer.pid, line, lambda who: f"Worker {who} {line}", trouble=True)

    # -- the run --------------------------------------------------------------

    def run(
        self,
        jobs: Iterable[Job],
        settings: Settings,
        on_start: Callable[[Task], None],
        on_result: Callable[[TaskResult], None],
        stop: threading.Event,
    ) -> None:
        """See ``executors.Executor.run``: the jobs go to the workers, at
        most MAX_JOB tasks per message."""
        self.ledger = ledger = Ledger(self.warn, on_result)
        ids = itertools.count()
        for tasks in batched(jobs):
            ledger.add(Lease([Entry(next(ids), task) for task in tasks]))
        if not ledger.open_tasks:
            return
        self.settings = settings
        self.settings_wire = settings_to_wire(settings)
        self.checks = make_checks(list(ledger.entries.values()), settings)
        self.probe = self.checks.probe
        self.open()
        try:
            self.loop(stop, on_start)
        finally:
            self.notices.flush(every=True)
            self.shutdown()
            self.close()
            if self.probe is not None:
                self.probe.unlink(missing_ok=True)
            outputs.remove_stale_temps(self.left_to_sweep(), settings.outdir)

    def left_to_sweep(self) -> set[Path]:
        """The folders to sweep for temp files at the end: every one a job
        was sent to write into, whoever ran it (a worker killed, or whose
        mount turned read-only, cannot remove its own), but those a worker
        still here (it did not say goodbye) may still be writing in."""
        busy = {
            entry.task.output.parent for peer in self.peers.values() for lease in peer.held() for entry in lease.open
        }
        return (self.written | self.ledger.littered) - busy

    def hosts(self) -> list[HostRow]:
        """Per worker host: its worker processes busy now, tasks done, rate,
        the sources in progress, why it gets no work. Every worker seen
        stays counted after it leaves, so the table still adds up."""
        return host_rows(self.hosts_seen, list(self.peers.values()), self.abouts)

    def loop(self, stop: threading.Event, on_start: Callable[[Task], None]) -> None:
        self.say(f"Listening on {self.endpoint}")
        self.say("Waiting for worker(s) to connect. We need at least one worker to continue")
        self.start_hint = self.start_hint.replace("{port}", self.endpoint.rsplit(":", 1)[1])
        if self.start_hint:
            self.say(self.start_hint)
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.watch.monitor, zmq.POLLIN)
        commenced = False
        next_beat = time.monotonic()
        self.idle_since = time.monotonic()
        ledger = self.ledger
        while ledger.open_tasks and not stop.is_set():
            if poller.poll(100):
                self.watch.read()
                self.receive()
            now = time.monotonic()
            self.notices.flush(now)
            # The run commences once the first host's processes are counted
            # (SETTLE seconds after they stop coming, at most LONGEST).
            if not commenced and self.peers and self.notices.said:
                commenced = True
                self.say("Commencing run...")
            for peer in list(self.peers.values()):
                if now - peer.last_seen > DEAD_AFTER:
                    self.drop_peer(peer, True, f"silent for {DEAD_AFTER:g} s, declared dead")
            if now >= next_beat:
                next_beat = now + HEARTBEAT
                beat = protocol.heartbeat_to_wire()
                ledger.recheck(self.peers)
                for peer in list(self.peers.values()):
                    self.send(peer, beat)
                    ledger.check_leases(peer, now)  # a lease is minutes: checked once a heartbeat
            self.drain()  # a planning thread's folders, counted before their jobs go out
            if commenced:
                self.dispatch(on_start)
            self.watch_idle(now)

    def dispatch(self, on_start: Callable[[Task], None]) -> None:
        ledger = self.ledger
        for peer in list(self.peers.values()):
            while peer.credit > 0 and peer.eligible and ledger.pending:
                lease = ledger.take(peer)
                if lease is None:
                    break
                entries = lease.open
                try:
                    frame = job_to_wire([(e.id, e.attempt, e.task) for e in entries])
                except ProtocolError as exc:
                    if len(entries) > 1:  # too large together (very long paths): one by one
                        ledger.pending.extendleft(Lease([e]) for e in reversed(entries))
                    else:
                        ledger.fail(entries[0], f"cannot be sent to a worker: {exc}")
                    continue
                for entry in entries:  # as it is before the worker can touch it
                    entry.before = identity(entry.task.output)
                    self.written.add(entry.task.output.parent)
                if not self.send(peer, frame):
                    ledger.pending.appendleft(lease)
                    self.drop_peer(peer, True, "is unreachable")
                    break
                peer.credit -= 1
                lease.seconds = lease_seconds(lease, self.settings)
                lease.deadline = time.monotonic() + lease.seconds
                for entry in entries:
                    entry.session = peer.session
                    peer.leases[entry.id] = lease
                    on_start(entry.task)

    def shutdown(self) -> None:
        """Tell every worker the run is over (they stop their encoders), and
        give them a moment to say goodbye."""
        if getattr(self, "sock", None) is None:
            return
        self.hosts()  # every peer seen, in the table for the summary
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
        c = self.ledger.counters
        if c.dropped or c.late or c.refused:
            self.warn(
                f"Cluster: {c.dropped} malformed message(s) dropped, {c.late} late result(s) discarded, "
                f"{c.refused} claimed result(s) not believed, {c.requeued} task(s) requeued"
            )
