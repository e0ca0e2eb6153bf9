"""How far a run is and how fast it goes, for the live displays: pure
bookkeeping of started and finished tasks (no terminal, no clock of its
own: every call is given ``now``).

A file in progress is the tasks of one source started together (its modes,
one decoder). The ETA is the work left (source bytes x the codec's cost, the
plan's ``Job.cost``) at the pace observed per slot, over the slots seen
busy at once; it is smoothed so that one long file finishing does not make
it jump.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from flac2all.lines import relative
from flac2all.model import Action, Job, Status, Task, TaskResult

# The cost per source byte of a copy or a retag (I/O only), on the scale of
# the codecs' costs (``Codec.cost``, opusenc = 1).
IO_COST = 0.02
# How much of the pace measured so far each finished file keeps.
MEMORY = 0.8
# Seconds over which the ETA follows a new estimate rather than jumping to it.
SMOOTHING = 3.0
# Seconds of audio per byte of FLAC when no encode has told its length yet
# (CD audio compressed to 60 %): only to show the audio rate, marked '~'.
AUDIO_PER_BYTE = 1 / (44100 * 2 * 2 * 0.6)


def weights(jobs: Sequence[Job]) -> dict[Task, float]:
    """Each task's share of the run's work: an encode its share of its
    job's cost; a copy or retag its bytes at IO_COST; the rest (notes,
    renames and deletions, done before the executor starts) nothing."""
    shares: dict[Task, float] = {}
    for job in jobs:
        for task in job.tasks:
            if task.action is Action.ENCODE:
                shares[task] = job.cost / len(job.tasks)
            elif task.action.on_executor:
                shares[task] = task.size * IO_COST
    return shares


@dataclass
class InProgress:
    """One source's tasks started together."""

    path: str  # relative to INPUTDIR
    started: float
    labels: list[str] = field(default_factory=list)
    work: float = 0.0
    size: int = 0
    open: int = 0
    encodes: bool = False
    failed: bool = False
    audio: float = 0.0


def label(task: Task) -> str:
    return task.mode if task.action is Action.ENCODE else f"{task.action.value} {task.mode}"


class Pace:
    """Counts, rates and the ETA of one run. Thread-safe: the run's thread
    reports, a display's refresh thread reads."""

    def __init__(self, total: int, root: Path, jobs: Sequence[Job], now: float) -> None:
        self.total = total
        self.root = root
        self.weight = weights(jobs)
        self.work_left = sum(self.weight.values())
        self.lock = threading.Lock()
        self.begun = now
        self.first_start: float | None = None
        self.ended: float | None = None
        self.running: dict[Path, InProgress] = {}
        self.done = self.failed = 0
        self.files = 0  # sources whose encodes all ended
        self.audio = 0.0  # their seconds of audio
        self.audio_guessed = False
        self.known_audio = self.known_bytes = 0.0  # for AUDIO_PER_BYTE's better guess
        self.slot_work = self.slot_time = 0.0  # work done per second of a busy slot
        self.peak = 0  # most files in progress at once
        self.finish: float | None = None  # the smoothed end of the run
        self.smoothed_at = now

    def started(self, task: Task, now: float) -> None:
        with self.lock:
            if self.first_start is None:
                self.first_start = now
            entry = self.running.get(task.source)
            if entry is None:
                entry = self.running[task.source] = InProgress(relative(task.source, self.root), now)
            entry.labels.append(label(task))
            entry.work += self.weight.get(task, 0.0)
            entry.size = max(entry.size, task.size)
            entry.open += 1
            entry.encodes |= task.action is Action.ENCODE
            self.peak = max(self.peak, len(self.running))

    def finished(self, result: TaskResult, now: float) -> None:
        with self.lock:
            self.done += 1
            self.work_left -= self.weight.pop(result.task, 0.0)  # (a task finished is never weighed again)
            failed = result.status is Status.FAILED
            self.failed += failed
            entry = self.running.get(result.task.source)
            if entry is None:  # a note, a refusal, a folder that could not be read
                return
            entry.open -= 1
            entry.failed |= failed
            if result.task.action is Action.ENCODE and not failed:
                entry.audio = max(entry.audio, result.audio)
            if entry.open <= 0:
                del self.running[result.task.source]
                self.file_ended(entry, now)

    def file_ended(self, entry: InProgress, now: float) -> None:
        if not entry.failed and entry.work > 0:
            # The recent files weigh most: a pace that changes (a busier
            # machine, a slower codec's turn) shows within a few files.
            self.slot_work = self.slot_work * MEMORY + entry.work
            self.slot_time = self.slot_time * MEMORY + max(now - entry.started, 1e-3)
        if not entry.encodes:
            return  # copies and retags are not files converted
        self.files += 1
        if entry.audio > 0:
            self.audio += entry.audio
            self.known_audio += entry.audio
            self.known_bytes += entry.size
        elif not entry.failed:
            per_byte = self.known_audio / self.known_bytes if self.known_bytes else AUDIO_PER_BYTE
            self.audio += entry.size * per_byte
            self.audio_guessed = True

    def end(self, now: float) -> None:
        with self.lock:
            self.ended = now

    # -- what a display shows -------------------------------------------------

    def clock(self, now: float) -> float:
        return now if self.ended is None else self.ended

    def elapsed(self, now: float) -> float:
        """Seconds since the display began."""
        return self.clock(now) - self.begun

    def rates(self, now: float) -> tuple[float, float] | None:
        """Files converted per second and seconds of audio per second, since
        the first task started; None before."""
        with self.lock:
            if self.first_start is None:
                return None
            seconds = max(self.clock(now) - self.first_start, 1e-3)
            return self.files / seconds, self.audio / seconds

    def in_progress(self) -> list[tuple[str, str]]:
        """(modes, path) of each file in progress, oldest first."""
        with self.lock:
            return [(" ".join(e.labels), e.path) for e in self.running.values()]

    def estimate(self, now: float) -> float | None:
        """Seconds left, unsmoothed: the slot-seconds of the work not started
        and of what is left of each file in progress, at the recent pace of
        a slot, over the slots seen busy at once; never less than the file
        in progress that needs the longest. A file that has taken longer
        than its work says is given a tenth of its age more."""
        if self.slot_work <= 0:
            return None
        pace = self.slot_work / self.slot_time
        left = [max(e.work / pace - (now - e.started), 0.1 * (now - e.started)) for e in self.running.values()]
        queued = max(0.0, self.work_left - sum(e.work for e in self.running.values()))
        return max((queued / pace + sum(left)) / max(1, self.peak), max(left, default=0.0))

    def eta(self, now: float) -> float | None:
        """Seconds left, smoothed: the estimated end moves toward each new
        estimate over SMOOTHING seconds instead of jumping; None until one
        file has ended."""
        with self.lock:
            if self.ended is not None or (self.done >= self.total and not self.running):
                return 0.0
            raw = self.estimate(now)
            if raw is None:
                return None
            target = now + raw
            if self.finish is None:
                self.finish = target
            else:
                step = min(1.0, max(0.0, now - self.smoothed_at) / SMOOTHING)
                self.finish += (target - self.finish) * step
            self.smoothed_at = now
            return max(0.0, self.finish - now)
