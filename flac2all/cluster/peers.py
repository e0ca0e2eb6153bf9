"""The worker sessions the master deals with (Peer), what they hold and can
run, and what the master holds against a worker across its sessions
(Standing)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from flac2all.cluster.leases import Entry, Lease

START_SLOTS = 2  # slots a worker may fill before it has returned any result


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
