"""One clock thread for every time-out of a process.

One daemon thread per process keeps the deadlines in a heap; setting an
alarm is a push, cancelling one is a flag. A ``threading.Timer`` per task
would start and stop a thread per source, which shows on runs of
thousands of short files.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable


class Alarm:
    """A callback due at a time; ``cancel()`` before then and it never runs."""

    __slots__ = ("callback", "due")

    def __init__(self, due: float, callback: Callable[[], None]) -> None:
        self.due = due
        self.callback: Callable[[], None] | None = callback

    @property
    def cancelled(self) -> bool:
        return self.callback is None

    def cancel(self) -> None:
        # Its entry waits in the heap until due; what the callback holds
        # (a task's processes) is let go now.
        self.callback = None


class Clock:
    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, Alarm]] = []
        self._order = itertools.count()  # ties: first set, first run
        self._thread: threading.Thread | None = None

    def after(self, seconds: float, callback: Callable[[], None]) -> Alarm:
        """Run ``callback`` in the clock's thread ``seconds`` from now."""
        alarm = Alarm(time.monotonic() + seconds, callback)
        with self._wake:
            heapq.heappush(self._heap, (alarm.due, next(self._order), alarm))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="flac2all-clock", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is alarm:  # sooner than what the thread waits for
                self._wake.notify()
        return alarm

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._heap and self._heap[0][2].cancelled:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                _, _, alarm = heapq.heappop(self._heap)
            callback = alarm.callback
            if callback is not None:
                callback()


CLOCK = Clock()


def after(seconds: float, callback: Callable[[], None]) -> Alarm:
    """``callback`` in ``seconds``, on this process's one clock thread."""
    return CLOCK.after(seconds, callback)


def _after_fork_in_child() -> None:
    global CLOCK
    CLOCK = Clock()  # the parent's thread did not come along


os.register_at_fork(after_in_child=_after_fork_in_child)
