"""The one clock thread that times every task out (alarms)."""

from __future__ import annotations

import threading

from flac2all.running import alarms


def test_alarms_run_in_order_of_due_time_and_a_cancelled_one_never():
    clock = alarms.Clock()
    fired: list[str] = []
    done = threading.Event()
    clock.after(0.3, lambda: (fired.append("late"), done.set()))
    cancelled = clock.after(0.1, lambda: fired.append("cancelled"))
    clock.after(0.2, lambda: fired.append("soon"))  # set after a later one: the thread wakes sooner
    clock.after(0.0, lambda: fired.append("now"))
    cancelled.cancel()
    assert done.wait(10)
    assert fired == ["now", "soon", "late"]
    assert cancelled.callback is None  # what it held is let go at once


def test_an_alarm_can_set_the_next_one_from_the_clock_thread():
    clock = alarms.Clock()
    done = threading.Event()
    seen: list[str] = []

    def first() -> None:
        seen.append(threading.current_thread().name)
        clock.after(0.05, done.set)

    clock.after(0.05, first)
    assert done.wait(10)
    assert seen == ["flac2all-clock"]
