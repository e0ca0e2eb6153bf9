"""The master's ledger: every task of the run (Entry), the jobs it hands out
(Lease: entries sent together, and how long a worker may hold them), the
worker sessions that hold them (Peer), and the checks the master makes
itself before it believes a worker: a claimed output must be there, written
since the job was handed out, and carry this task's provenance tag.

Nothing here touches a socket (``master`` does); everything here is about
whether to believe a peer and where a task goes next.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flac2all import codecs
from flac2all.audio.decoding import Expected
from flac2all.cluster.jobs import MAX_JOB
from flac2all.cluster.protocol import ENCODER_MISSING, ENVIRONMENT, SOURCE_MISSING, WireResult
from flac2all.errors import DISK_FULL, FULL_ERRNOS, TaskError, takes_no_more
from flac2all.model import Action, Job, Settings, Status, Task, TaskResult
from flac2all.running.runner import check_output, default_timeout

POISON_DEATHS = 3  # a task whose worker died under it this often fails
QUARANTINE_AFTER = 3  # environmental failures in a row (or jobs handed back) that quarantine a worker
START_SLOTS = 2  # slots a worker may fill before it has returned any result
MAX_ENV_HOSTS = 3  # a task that failed environmentally on this many hosts fails
# A job's lease: its task time-out (each encode and its check may take it),
# twice, plus some slack for tags, the commit and the network.
LEASE_FACTOR = 2.0
LEASE_SLACK = 10.0
COPY_RATE = 1e6  # bytes/s: the slowest copy a lease allows for


@dataclass(slots=True)
class Entry:
    """One task in the ledger (slots: a run holds one per task)."""

    id: int
    task: Task
    attempt: int = 0
    deaths: int = 0
    session: str | None = None  # the worker session holding it
    done: bool = False
    # Workers (Peer.who) on which it failed for their environment, and the
    # last such failure (the reason it fails with if every worker fails it).
    tried: frozenset[str] = frozenset()
    env_reason: str = ""
    # The output as the master saw it when it handed the task out.
    before: tuple | None = None


@dataclass(eq=False, slots=True)
class Lease:
    """Entries handed out together (one job message), held in one slot of a
    worker until ``deadline``; queued in ``Ledger.pending`` until then."""

    entries: list[Entry]
    deadline: float = 0.0  # monotonic time it ends, once handed out
    seconds: float = 0.0  # how long it was granted for (lease_seconds)

    @property
    def open(self) -> list[Entry]:
        return [e for e in self.entries if not e.done]

    @property
    def modes(self) -> set[str]:
        return {e.task.mode for e in self.entries if not e.done}


@dataclass
class Standing:
    """What the master holds against one worker across its sessions and
    connections: bound to its key (the CURVE public key its connection
    proved), or without keys (--insecure) to the host name it gives. A new
    hello, or a hello naming another worker's host, changes none of it."""

    quarantine: str = ""  # why it gets no more jobs ("" if it may)
    env_streak: int = 0  # environmental failures since its last success
    returned: int = 0  # results settled since it last handed jobs back (its slow start)
    handbacks: int = 0  # times in a row it left (a bye, a new hello) holding unfinished jobs


@dataclass
class Peer:
    """One worker process (one session of it)."""

    identity: bytes
    session: str
    host: str
    pid: int
    slots: int
    last_seen: float
    address: str = ""
    who: str = ""  # whom blame and quarantine follow: its key, else its host name
    standing: Standing = field(default_factory=Standing)
    credit: int = 0
    leases: dict[int, Lease] = field(default_factory=dict)  # task id -> its lease, for the tasks it holds
    finished: int = 0
    joined: float = field(default_factory=time.monotonic)
    modes: frozenset[str] | None = None  # what it can run (None: no health message yet)
    problem: str = ""  # why it gets no work: unhealthy, or quarantined
    hellos: int = 1  # sessions its connection has opened (a worker opens one per connection)

    def __post_init__(self) -> None:
        self.who = self.who or self.host

    def held(self) -> list[Lease]:
        """The leases it holds (each in one slot), once each."""
        return list({id(lease): lease for lease in self.leases.values()}.values())

    @property
    def free_slots(self) -> int:
        """Its slots not in use, of those it has earned: START_SLOTS, and
        one more for each result it returned (a slow start: a peer that
        declares 256 slots does not take every job before doing one)."""
        return min(self.slots, START_SLOTS + self.standing.returned) - len(self.held())

    @property
    def eligible(self) -> bool:
        """It said it is healthy, and neither it nor another session of its
        key has been quarantined."""
        return self.modes is not None and not self.problem and not self.standing.quarantine

    def can_run(self, entry: Entry) -> bool:
        return self.modes is not None and entry.task.mode in self.modes and self.who not in entry.tried


@dataclass
class Counters:
    dropped: int = 0  # malformed or hostile frames
    late: int = 0  # results for an attempt no longer current
    requeued: int = 0
    refused: int = 0  # results the master did not believe


# A copy at most this large is sent with others (up to MAX_JOB in a job):
# a message and a wake-up of each side per small file was most of a
# trivial task's cost.
SMALL_COPY = 1024 * 1024


def batched(jobs: Sequence[Job]) -> Iterator[tuple[Task, ...]]:
    """The planned jobs as the master hands them out: at most MAX_JOB tasks
    each, and the small copies gathered into batches of MAX_JOB."""
    copies: list[Task] = []
    for planned in jobs:
        tasks = planned.tasks
        if len(tasks) == 1 and tasks[0].action is Action.COPY and tasks[0].size <= SMALL_COPY:
            copies.append(tasks[0])
            if len(copies) == MAX_JOB:
                yield tuple(copies)
                copies.clear()
            continue
        for start in range(0, len(tasks), MAX_JOB):
            yield tasks[start : start + MAX_JOB]
    if copies:
        yield tuple(copies)


def audio_seconds(path: Path) -> float:
    """The length of a FLAC file from its STREAMINFO (the file's first 42
    bytes), 0 when it cannot be read: a cheap read at hand-out time."""
    try:
        with open(path, "rb") as f:
            head = f.read(42)
    except OSError:
        return 0.0
    if len(head) < 42 or head[:4] != b"fLaC" or head[4] & 0x7F != 0:
        return 0.0
    info = int.from_bytes(head[18:26], "big")
    rate = info >> 44
    samples = info & ((1 << 36) - 1)
    return samples / rate if rate else 0.0


def lease_seconds(lease: Lease, settings: Settings) -> float:
    """How long a worker may hold a job before the master takes it back: the
    task time-out the worker applies (derived from the audio's duration
    unless --timeout), twice, plus slack, plus the time to copy its bytes."""
    task = lease.entries[0].task
    size = task.size
    if task.action is Action.COPY:  # the bytes of a batch of small copies, all of them
        size, length = sum(e.task.size for e in lease.entries), 0.0
    else:
        length = audio_seconds(task.source)
    timeout = settings.timeout if settings.timeout is not None else default_timeout(length)
    return LEASE_FACTOR * timeout + LEASE_SLACK + size / COPY_RATE


def identity(path: Path) -> tuple | None:
    """What tells one version of a file from the next (an atomic rename
    gives it a new inode), without comparing clocks of different hosts."""
    try:
        return stat_version(os.lstat(path))
    except OSError:
        return None


def stat_version(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def disbelief(entry: Entry) -> str | None:
    """Why the master does not believe a worker's success for this task, or
    None: the output must be a regular, non-empty file under its final
    name, not the one that was there when the task was handed out, a copy
    as large as its source is now, a tagged output must carry the
    provenance tag of this task's settings, and an encode must last as long
    as its source."""
    task = entry.task
    try:
        st = os.lstat(task.output)
    except OSError as exc:
        return f"the master does not see the output ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "the output is not a regular file"
    if st.st_size == 0 and not (task.action is Action.COPY and task.size == 0):  # an empty file copied is empty
        return "the output is empty"
    if stat_version(st) == entry.before:
        return "the output was not written since the task was handed out"
    if task.action is Action.COPY:  # its bytes are the source's: as many of them, at least
        try:
            size = os.stat(task.source).st_size
        except OSError:
            size = task.size
        return None if st.st_size == size else f"the copy has {st.st_size} bytes, its source {size}"
    codec = codecs.resolve(task.mode)
    if codec.tagged and codec.tag_family.carries_tags:
        provenance = codec.tag_family.read_provenance(task.output)
        if provenance is None or provenance.get("settings") != task.settings_hash:
            return "the output lacks the provenance tag of this task's settings"
    # A tag is easily copied: the audio must also last as long as the
    # source's, as the local runner checks its own outputs.
    length = audio_seconds(task.source)
    if length and codec.checks_length:
        try:
            check_output(codec, task.output, None, Expected(length))
        except TaskError as exc:
            return f"the output fails the master's own check ({exc})"
    return None


QUOTA_PROBE = 64 * 1024  # bytes the master writes to see a quota for itself


def full_here(folder: Path, needed: int) -> bool:
    """Whether the master itself finds ``folder``'s filesystem full,
    read-only or over quota (a worker's word that it is would halt the
    run): statvfs first, then, since a quota shows only when written to, a
    small write of its own (an unnamed file, gone when closed)."""
    if takes_no_more(folder, needed):
        return True
    place = next((p for p in (folder, *folder.parents) if p.is_dir()), None)
    if place is None:
        return True
    try:
        with tempfile.TemporaryFile(dir=place) as f:
            f.write(bytes(QUOTA_PROBE))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return exc.errno in FULL_ERRNOS
    return False


# The master's own want of resources: a check that failed for one of these
# says nothing about the worker.
OWN_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)


def out_of_descriptors() -> bool:
    """Whether this process cannot open a file just now."""
    try:
        os.close(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        return exc.errno in OWN_ERRNOS
    return False


def source_visible(path: Path) -> bool:
    """Whether the master itself can read a source (a worker that cannot is
    the one at fault; when neither can, the file is)."""
    return os.access(path, os.R_OK)


class Ledger:
    """Every task of the run and where it is: queued (``pending``, as leases
    not yet granted), held by a peer (``Peer.leases``), or done. Results
    reach ``on_result``."""

    def __init__(self, say: Callable[[str], None], on_result: Callable[[TaskResult], None]) -> None:
        self.say, self.on_result = say, on_result
        self.counters = Counters()
        self.entries: dict[int, Entry] = {}
        self.pending: deque[Lease] = deque()
        self.open_tasks = 0  # entries not done
        self.littered: set[Path] = set()  # output folders of tasks whose worker died
        self.results_in = 0  # results accepted from workers
        self.standings: dict[str, Standing] = {}  # Peer.who -> its standing
        self.unchecked: list[tuple[Peer, WireResult]] = []  # results the master could not judge yet

    def standing(self, who: str) -> Standing:
        return self.standings.setdefault(who, Standing())

    def add(self, lease: Lease) -> None:
        self.entries.update((entry.id, entry) for entry in lease.entries)
        self.pending.append(lease)
        self.open_tasks += len(lease.entries)

    def settle(self, entry: Entry, result: TaskResult) -> None:
        """A task's last word: the ledger forgets it (a later result for it
        is late, as one for an old attempt), so that a run of many tasks
        does not hold them all till the end."""
        entry.done = True
        entry.session = None
        entry.before = None
        self.entries.pop(entry.id, None)
        self.open_tasks -= 1
        self.on_result(result)

    def fail(self, entry: Entry, message: str) -> None:
        self.settle(entry, TaskResult(entry.task, Status.FAILED, message, 1))

    def again(self, entries: list[Entry], died: bool) -> None:
        """Put open entries back at the front of the queue, as one lease, each
        with a new attempt; a death counts toward the poison cutoff."""
        back = []
        for entry in entries:
            entry.session = None
            entry.attempt += 1
            self.counters.requeued += 1
            if died:
                # What its worker was writing stays behind: swept at the end.
                self.littered.add(entry.task.output.parent)
                entry.deaths += 1
                if entry.deaths >= POISON_DEATHS:
                    self.fail(entry, f"the worker died under this task {entry.deaths} times")
                    continue
            back.append(entry)
        if back:
            self.pending.appendleft(Lease(back))

    @staticmethod
    def release(peer: Peer, lease: Lease) -> list[Entry]:
        """Take a lease back from a peer: its open entries."""
        entries = [e for e in lease.entries if not e.done and peer.leases.get(e.id) is lease]
        for entry in entries:
            peer.leases.pop(entry.id, None)
        return entries

    def requeue(self, peer: Peer, died: bool) -> None:
        """Everything a peer holds goes back to the queue. Jobs handed back
        unfinished (a bye, a new hello) count against the worker: its slow
        start begins again, and the third time in a row (no result between)
        it is quarantined."""
        if not died and peer.leases:
            standing = peer.standing
            standing.returned = 0
            standing.handbacks += 1
            if standing.handbacks >= QUARANTINE_AFTER:
                self.quarantine(peer, f"handed back unfinished jobs {standing.handbacks} times")
        for lease in sorted(peer.held(), key=lambda held: held.entries[0].id, reverse=True):
            self.again(self.release(peer, lease), died)

    def quarantine(self, peer: Peer, why: str) -> None:
        """No more jobs for this worker, in this session or any later one of
        its key (what it holds may still finish)."""
        if not peer.standing.quarantine:
            peer.standing.quarantine = f"quarantined: {why}"
        if not peer.problem:
            peer.problem = peer.standing.quarantine
            peer.credit = 0
            self.say(f"Worker {peer.host}:{peer.pid} quarantined, it gets no more jobs: {why}")

    def check_leases(self, peer: Peer, now: float) -> None:
        """A job held past its lease goes to another worker even if its
        worker still beats; that worker gets no more."""
        for lease in peer.held():
            if now > lease.deadline:
                entries = self.release(peer, lease)
                self.again(entries, False)
                self.say(f"Worker {peer.host}:{peer.pid} held a job past its lease; {len(entries)} task(s) requeued")
                self.quarantine(peer, f"held a job past its lease of {lease.seconds:.0f} s")

    def accept(self, peer: Peer, wire: WireResult) -> None:
        """A result from a peer: believed, requeued, or discarded as late;
        or, when the master cannot open files just now, kept to be judged
        again (``recheck``): its own trouble is never the worker's fault."""
        entry = self.entries.get(wire.task_id)
        if entry is None or entry.done or entry.session != peer.session or entry.attempt != wire.attempt:
            self.counters.late += 1  # a duplicate or a result from a worker we gave up on
            return
        task = entry.task
        doubt = disbelief(entry) if wire.status is not Status.FAILED else None
        full = wire.status is Status.FAILED and wire.cause == DISK_FULL and full_here(task.output.parent, task.size)
        if (doubt is not None or wire.cause == DISK_FULL) and out_of_descriptors():
            self.unchecked.append((peer, wire))
            return
        lease = peer.leases.pop(entry.id, None)
        if lease is not None and not any(other is lease for other in peer.leases.values()):  # its slot is free
            peer.credit = 0 if peer.problem else min(peer.free_slots, peer.credit + 1)
        if doubt is not None:
            self.counters.refused += 1
            self.again([entry], False)
            self.quarantine(peer, f"claimed {task.output.name} ({task.mode}) done, but {doubt}")
            return
        if wire.status is Status.FAILED:
            if wire.cause in ENVIRONMENT and (wire.cause != SOURCE_MISSING or source_visible(task.source)):
                self.environmental(peer, entry, wire)
                return
            if wire.cause == DISK_FULL and not full:
                # Full, read-only or over quota there, not here: that worker's
                # own mount (the run goes on without it), not the run's output.
                self.environmental(peer, entry, wire)
                return
        peer.standing.env_streak = peer.standing.handbacks = 0
        peer.standing.returned += 1
        peer.finished += 1
        self.results_in += 1
        self.settle(entry, wire.to_result(task, peer.host))

    def recheck(self, live: dict[bytes, Peer]) -> None:
        """Judge again the results kept while the master could not open
        files (those of peers still here)."""
        waiting, self.unchecked = self.unchecked, []
        for peer, wire in waiting:
            if live.get(peer.identity) is peer:
                self.accept(peer, wire)

    def environmental(self, peer: Peer, entry: Entry, wire: WireResult) -> None:
        """The worker's environment failed, not the file (the master sees
        the source): count it against the worker, give the task to another."""
        streak = peer.standing.env_streak = peer.standing.env_streak + 1
        entry.tried = entry.tried | {peer.who}
        entry.env_reason = f"{peer.host}: {wire.message}"
        if wire.cause == ENCODER_MISSING and peer.modes is not None:
            peer.modes = peer.modes - {entry.task.mode}
        if len(entry.tried) >= MAX_ENV_HOSTS:
            self.fail(entry, f"failed on {len(entry.tried)} hosts, the last {entry.env_reason}")
        else:
            self.again([entry], False)
        if streak >= QUARANTINE_AFTER:
            self.quarantine(peer, f"{streak} failures of its environment in a row, the last: {wire.message}")

    def fail_stuck(self, ready: list[Peer]) -> None:
        """Nothing runs, and these peers wait for work they cannot take: the
        tasks every one of them failed for its environment fail."""
        for lease in list(self.pending):
            for entry in lease.open:
                if all(p.who in entry.tried for p in ready):
                    self.fail(entry, f"failed on every worker, the last {entry.env_reason}")
        if not any(lease.open for lease in self.pending):
            self.pending.clear()

    def fail_pending(self, why: str) -> None:
        for lease in self.pending:
            for entry in lease.open:
                self.fail(entry, entry.env_reason or why)
        self.pending.clear()

    def take(self, peer: Peer) -> Lease | None:
        """The first pending job this peer can run: whole if it can run all of
        it, else the part it can (the rest stays queued)."""
        pending = self.pending
        i = 0
        while i < len(pending):
            lease = pending[i]
            entries = lease.open
            mine = [e for e in entries if peer.can_run(e)]
            if len(mine) == len(entries):  # all of it (or an empty one: dropped)
                del pending[i]
                if mine:
                    return lease
                continue
            if mine:
                taken = {id(e) for e in mine}
                lease.entries = [e for e in entries if id(e) not in taken]
                return Lease(mine)
            i += 1
        return None
