"""The master when nothing runs (``Waiting``, a part of ``master.Master``):
the tasks of a mode that no worker here can run fail with why, and with no
worker that can run the rest it waits at most --wait-workers, then gives
up (``NoWorkersError`` if nothing was done yet, else the tasks left fail).

It reads the master's ``ledger``, ``peers``, ``settings``, ``lacking``
(session -> the modes it cannot run -> why), ``hosts()``, ``wait_workers``,
``start_hint`` and ``idle_since``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from flac2all.errors import Flac2allError

if TYPE_CHECKING:
    from flac2all.cluster.ledger import Ledger, Peer
    from flac2all.model import HostRow, Settings

WAIT_WORKERS = 300.0  # seconds the master waits for a worker that can run the work left
REFUSED_GRACE = 15.0  # seconds it still waits for another worker once every worker here refused the run


class NoWorkersError(Flac2allError):
    """No worker that could run the run's jobs came in time."""


class Waiting:
    """The master's steps for when nothing runs."""

    # What it reads of the master (set there).
    ledger: Ledger
    peers: dict[bytes, Peer]
    settings: Settings
    lacking: dict[str, dict[str, str]]
    hosts: Callable[[], list[HostRow]]
    wait_workers: float
    start_hint: str
    idle_since: float

    def watch_idle(self, now: float) -> None:
        """When nothing runs and nothing can be handed out: fail the tasks
        that every worker here has failed; wait at most --wait-workers for a
        worker that can run the rest."""
        ledger = self.ledger
        if not ledger.pending or any(p.leases for p in self.peers.values()):
            self.idle_since = now
            return
        self.fail_unrunnable(now)
        if not ledger.pending:
            return
        ready = [p for p in self.peers.values() if p.eligible and p.credit > 0]
        if ready:
            ledger.fail_stuck(ready)
            if not ledger.pending:
                return
        peers = list(self.peers.values())
        # Every worker here refused the run (health before work) and no other
        # came for a while: waiting longer only hides why.
        refused = bool(peers) and all(p.problem.startswith("unhealthy") for p in peers)
        refused = refused and now - max(p.joined for p in peers) >= REFUSED_GRACE
        if now - self.idle_since < self.wait_workers and not refused:
            return
        problems = "; ".join(sorted({f"{row.host}: {row.problem}" for row in self.hosts() if row.problem}))
        if refused:
            why = f"every worker refused the run ({problems})"
        else:
            why = f"no worker that could run it came within --wait-workers {self.wait_workers:g} s" + (
                f" ({problems})" if problems else ""
            )
        if not ledger.results_in:
            raise NoWorkersError(why if refused else f"{why}. {self.start_hint}".strip())
        ledger.fail_pending(why)

    def fail_unrunnable(self, now: float) -> None:
        """Nothing runs: the tasks of a mode that every worker here that
        gets work cannot run (its encoder missing, or refusing the run's
        options) fail with why, once no other worker came for a while."""
        peers = list(self.peers.values())
        working = [p for p in peers if not p.problem]
        if not working or now - max(p.joined for p in peers) < REFUSED_GRACE:
            return
        why = {}
        for mode in self.settings.modes:
            reasons = [self.lacking.get(p.session, {}).get(mode) for p in working]
            if all(reasons):
                why[mode] = reasons[-1]
        if not why:
            return
        ledger = self.ledger
        for lease in ledger.pending:
            for entry in lease.open:
                if entry.task.mode in why:
                    ledger.fail(entry, f"no worker here can run {entry.task.mode}: {why[entry.task.mode]}")
        left = [lease for lease in ledger.pending if lease.open]
        ledger.pending.clear()
        ledger.pending.extend(left)
