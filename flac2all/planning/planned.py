"""A run's plan, as the planner leaves it: its tasks, the outputs up to
date (skips), the jobs that run the tasks, what was refused, the state rows
to write without work, and the plan as JSON (``--plan-json``).
"""

from __future__ import annotations

import heapq
import itertools
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

from flac2all.model import Action, Job, Task, TaskResult
from flac2all.records import Record
from flac2all.skips import Skip

# What the state records for an output whose folder has no cover to embed.
NO_COVER = "-"


@dataclass
class Plan:
    tasks: list[Task] = field(default_factory=list)
    # FLAC outputs up to date, costliest first: tasks too, but kept as text
    # and never a job (a no-op re-run's two million would be two million
    # Tasks, Jobs and results); the engine counts and logs them.
    skips: list[Skip] = field(default_factory=list)
    # Each mode's cost per source byte (what orders tasks and skips alike).
    costs: dict[str, float] = field(default_factory=dict)
    # The same tasks grouped into jobs, costliest first (Planner.group).
    jobs: list[Job] = field(default_factory=list)
    # Tasks refused before running (colliding outputs): already results.
    refused: list[TaskResult] = field(default_factory=list)
    # State rows to write without any work (adopted or touched outputs), and
    # rows whose output is gone.
    refresh: list[Record] = field(default_factory=list)
    forget: list[Path] = field(default_factory=list)
    # What a run would refuse, when the planner was asked not to (a dry run).
    warnings: list[str] = field(default_factory=list)
    # Playlists, written by the engine after the other tasks (--playlists).
    playlists: list[Task] = field(default_factory=list)
    # (source, mode) -> the output planned for it, for the playlists.
    outputs: dict[tuple[Path, str], Path] = field(default_factory=dict)
    # Folder -> its cover file's identity (extras.folder_covers); None
    # without --embed-folder-art.
    covers: dict[Path, str] | None = None
    # The FLACs whose tags fail a --query test: not planned, their outputs orphans.
    unselected: list[Path] = field(default_factory=list)
    # The run's --include, --exclude, --query and --path-format, when one is given (--plan-json).
    selection: dict[str, object] | None = None
    # The folders the walk could not list, and why (their sources are in no action).
    unread: list[tuple[Path, str]] = field(default_factory=list)

    def cover(self, source: Path) -> str:
        """What the state records of the folder cover an output of
        ``source`` embeds: "" when none is embedded (no --embed-folder-art),
        NO_COVER when its folder has none."""
        return "" if self.covers is None else self.covers.get(source.parent, NO_COVER)

    def counts(self) -> dict[Action, int]:
        return action_counts(itertools.chain(self.tasks, self.playlists), len(self.skips))

    def every_task(self) -> list[Task]:
        """The tasks, with a Task made for each of ``skips`` (costliest first
        among them, as the tasks are), and the playlists."""
        merged = self.with_skips(self.tasks)
        return [*(t if isinstance(t, Task) else t.task() for t in merged), *self.playlists]

    def with_skips(self, tasks: Iterable[Task]) -> Iterator[Task | Skip]:
        """``tasks`` (in the plan's order, costliest first) and the Skips
        merged in that order."""
        return with_skips(tasks, self.skips, self.costs)

    def as_json(self) -> dict:
        """The plan, machine-readable (--plan-json)."""
        actions: dict[str, list[dict]] = {a.value: [] for a in Action}
        for t in self.every_task():
            entry = {"source": os.fsdecode(t.source), "mode": t.mode, "output": os.fsdecode(t.output)}
            if t.previous is not None:
                entry["previous"] = os.fsdecode(t.previous)
            if t.track is not None:  # a CUE sheet's track: its number and samples (end excluded)
                entry["track"] = {"number": t.track.number, "start": t.track.start, "end": t.track.end}
            actions[t.action.value].append(entry)
        # The actions of device profiles only when there are some: the
        # version 1 format as it was for the others.
        for action in (Action.CONVERT, Action.PLAYLIST):
            if not actions[action.value]:
                del actions[action.value]
        refused = [
            {"source": os.fsdecode(r.task.source), "mode": r.task.mode, "error": r.message} for r in self.refused
        ]
        out = {
            "version": 1,
            "counts": {a: len(v) for a, v in actions.items()},
            "actions": actions,
            "refused": refused,
        }
        if self.selection is not None:  # (only when asked: the format as it was for the others)
            out["selection"] = {**self.selection, "unselected": [os.fsdecode(p) for p in self.unselected]}
        if self.unread:  # (only when there are some, likewise)
            out["unreadable"] = [{"folder": os.fsdecode(p), "error": why} for p, why in self.unread]
        return out


def action_counts(tasks: Iterable[Task], skips: int) -> dict[Action, int]:
    """How many tasks of each action, with ``skips`` outputs up to date."""
    out = dict.fromkeys(Action, 0)
    for task in tasks:
        out[task.action] += 1
    out[Action.SKIP] += skips
    return out


def with_skips(tasks: Iterable[Task], skips: Iterable[Skip], costs: Mapping[str, float]) -> Iterator[Task | Skip]:
    """``tasks`` and ``skips``, each costliest first, merged in that order."""
    if not skips:
        return iter(tasks)
    costed = ((t.size * costs.get(t.mode, 1.0), t) for t in tasks)
    skipped = ((s.cost, s) for s in skips)
    return (item for _, item in heapq.merge(costed, skipped, key=itemgetter(0), reverse=True))
