"""What the master says about worker processes, said once per host: a
node's processes (one per slot) join, and pass or fail their health check,
within a moment of each other, and one line with their count
(``node1 (16 processes)``) reads better than sixteen alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

SETTLE = 0.5  # seconds without news of a host before its lines are said
LONGEST = 3.0  # seconds a host's first line waits at most


@dataclass
class Held:
    """A host's lines not said yet: kind -> (the line, given who said it;
    the pids of the processes that did; whether it tells of trouble)."""

    first: float
    last: float
    lines: dict[str, tuple[Callable[[str], str], list[int], bool]] = field(default_factory=dict)


def who(host: str, pids: list[int]) -> str:
    """``host:pid`` for one process, ``host (N processes)`` for several."""
    return f"{host}:{pids[0]}" if len(pids) == 1 else f"{host} ({len(pids)} processes)"


class Notices:
    """Lines about worker processes, held until their host has been quiet
    for SETTLE seconds, then said once for all its processes that said the
    same (``kind``), in the order their kinds first came."""

    def __init__(self, say: Callable[[str], None], warn: Callable[[str], None] | None = None) -> None:
        self.say, self.warn = say, warn or say
        self.held: dict[str, Held] = {}
        self.said = False  # a line was said (the first host's processes are counted)

    def note(
        self,
        host: str,
        pid: int,
        kind: str,
        line: Callable[[str], str],
        now: float | None = None,
        trouble: bool = False,
    ) -> None:
        """One process's news; ``line`` makes its line from who said it (the
        last one given for a kind is said: a count in it is the latest);
        ``trouble``: said as a warning."""
        now = time.monotonic() if now is None else now
        held = self.held.setdefault(host, Held(now, now))
        held.last = now
        pids = held.lines.get(kind, (line, [], trouble))[1]
        pids.append(pid)
        held.lines[kind] = (line, pids, trouble)

    def flush(self, now: float | None = None, every: bool = False) -> None:
        """Say the lines of the hosts gone quiet (all of them: ``every``)."""
        now = time.monotonic() if now is None else now
        for host, held in list(self.held.items()):
            if every or now - held.last >= SETTLE or now - held.first >= LONGEST:
                del self.held[host]
                for line, pids, trouble in held.lines.values():
                    (self.warn if trouble else self.say)(line(who(host, pids)))
                    self.said = True
