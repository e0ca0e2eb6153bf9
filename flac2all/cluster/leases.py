"""What the master hands out: every task of the run as an entry (Entry), the
jobs made of them (Lease: entries sent together), and how long a worker
may hold one before the master takes it back."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from flac2all.cluster.jobs import MAX_JOB
from flac2all.model import Action, Job, Settings, Task
from flac2all.running.runner import default_timeout

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
