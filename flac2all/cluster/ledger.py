"""The master's ledger: where every task of the run is (queued, held by a
worker session, or done), where it goes next after a result, a death or
a lease run out, and which workers get no more jobs (quarantine).

Nothing here touches a socket (``master`` does); whether to believe a
worker's result is ``belief``'s to say.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flac2all.cluster.belief import disbelief, full_here, out_of_descriptors, source_visible
from flac2all.cluster.leases import Entry, Lease
from flac2all.cluster.peers import Peer, Standing
from flac2all.cluster.protocol import ENCODER_MISSING, ENVIRONMENT, SOURCE_MISSING, WireResult
from flac2all.errors import DISK_FULL
from flac2all.model import Status, TaskResult

POISON_DEATHS = 3  # a task whose worker died under it this often fails
QUARANTINE_AFTER = 3  # environmental failures in a row (or jobs handed back) that quarantine a worker
MAX_ENV_HOSTS = 3  # a task that failed environmentally on this many hosts fails


@dataclass
class Counters:
    dropped: int = 0  # malformed or hostile frames
    late: int = 0  # results for an attempt no longer current
    requeued: int = 0
    refused: int = 0  # results the master did not believe


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
