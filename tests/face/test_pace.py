"""The ETA (pace.py) as a pure function: the work left at the pace seen,
and a slower pace moving it up gradually."""

from __future__ import annotations

from pathlib import Path

import pytest

from flac2all.face.pace import Pace
from flac2all.model import Action, Job, Status, Task, TaskResult


def simulate(weights: list[float], slots: int, slowness=lambda i: 1.0) -> tuple[float, list[tuple[float, float]]]:
    """A run of one-task jobs of ``weights`` (costliest first, as planned)
    on ``slots`` slots, a job taking its weight times ``slowness(i)``
    seconds; the true end and the ETA shown at each refresh (4 a second)."""
    jobs = [
        Job((Task(Path(f"/in/A/{i}.flac"), "opus", Path(f"/out/{i}.opus"), Action.ENCODE, size=int(w)),), w)
        for i, w in enumerate(weights)
    ]
    pace = Pace(len(jobs), Path("/in"), jobs, 0.0)
    free = [0.0] * slots
    events = []
    for i, job in enumerate(jobs):
        slot = free.index(min(free))
        start, free[slot] = free[slot], free[slot] + job.cost * slowness(i)
        events += [(start, 1, job), (free[slot], 0, job)]  # a slot's next start after its end
    events.sort(key=lambda e: (e[0], e[1]))
    shown = []
    for tick in range(int(max(free) * 4) + 2):
        now = tick / 4
        while events and events[0][0] <= now:
            at, starts, job = events.pop(0)
            if starts:
                pace.started(job.tasks[0], at)
            else:
                pace.finished(TaskResult(job.tasks[0], Status.SUCCESS, audio=job.cost), at)
        eta = pace.eta(now)
        if eta is not None:
            shown.append((now, eta))
    return max(free), shown


@pytest.mark.parametrize(
    ("weights", "slots"),
    [([8, 6, 5, 4, 3, 3, 2, 2, 1, 1], 1), ([8, 6, 5, 4, 3, 3, 2, 2, 1, 1], 2), ([20] + [1] * 19, 2), ([5] * 12, 4)],
)
def test_the_eta_is_the_work_left_at_the_pace_seen(weights, slots):
    """From the first file done, the end it predicts is within 5 % of the
    true one, and it counts down without rising: task counts would say
    54 s left after the first of ten files (6 s) on two slots, not 12 s."""
    end, shown = simulate(weights, slots)
    assert shown
    for now, eta in shown:
        assert abs(now + eta - end) <= 0.05 * end, (now, eta, end)
    assert all(b <= a for (_, a), (_, b) in zip(shown, shown[1:], strict=False))


def test_a_slower_pace_moves_the_eta_up_gradually():
    """The machine gets three times slower halfway (unforeseeable): the
    ETA rises, but by less than a refresh's worth at a time, and says
    0:00 only in the last second."""
    end, shown = simulate([2] * 20, 2, lambda i: 1 if i < 10 else 3)
    rises = [b - a for (_, a), (_, b) in zip(shown, shown[1:], strict=False)]
    assert max(rises) > 0 and max(rises) <= 0.75, max(rises)
    assert all(eta > 0 for now, eta in shown if now < end - 1)
