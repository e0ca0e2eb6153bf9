"""What a dry run prints: the plan's counts and files per action, line by
line (a million sources make two million lines, never held at once). A
whole plan's listing (``plan_lines``) and the pieces of one made as the
walk goes (``stream.DryRun``)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from flac2all.model import Action, Settings, Task, TaskResult
from flac2all.report import printable

if TYPE_CHECKING:
    from flac2all.planning.plan import Plan

PathText = os.PathLike | str


def plan_lines(the_plan: Plan, settings: Settings) -> Iterator[str]:
    """A whole plan: the heading, the counts, then each action's files
    (costliest first, as the plan has them), then the refusals."""
    yield heading(settings)
    counts = the_plan.counts()
    yield from count_lines(counts, len(the_plan.refused))
    for action in Action:
        if not counts[action]:
            continue
        yield f"{action.value}:"
        tasks = (t for t in itertools.chain(the_plan.tasks, the_plan.playlists) if t.action is action)
        if action is not Action.SKIP:
            yield from map(task_line, tasks)
            continue
        # The skips kept as text among the others, costliest first as all are.
        for item in the_plan.with_skips(tasks):
            yield task_line(item) if isinstance(item, Task) else file_line(item.mode, item.source, item.output)
    yield from map(refusal_line, the_plan.refused)


def heading(settings: Settings) -> str:
    return f"Plan for {printable(settings.input_dir)} -> {printable(settings.outdir)} (dry run: nothing changed)"


def count_lines(counts: Mapping[Action, int], refused: int) -> Iterator[str]:
    yield from (f"  {action.value:<7} {n}" for action, n in counts.items() if n)
    if refused:
        yield f"  refused {refused}"


def task_line(t: Task) -> str:
    return file_line(t.mode, t.source, t.output, t.previous)


def file_line(mode: str, source: PathText, output: PathText, previous: PathText | None = None) -> str:
    where = f"{printable(previous)} -> " if previous else ""
    return f"  {mode:<8} {printable(source)}: {where}{printable(output)}"


def refusal_line(r: TaskResult) -> str:
    return f"refused: {printable(r.task.source)} [{r.task.mode}]: {r.message}"


def chunks(lines: Iterator[str], size: int) -> Iterator[str]:
    """``lines`` joined in pieces of ``size`` lines, to print as they come."""
    while chunk := list(itertools.islice(lines, size)):
        yield "\n".join(chunk)
