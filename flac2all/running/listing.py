"""The dry run's sink: the run's own flow (``planning.flow``), listed
instead of executed, line by line (a million sources make two million
lines, never held at once). A whole plan is listed with its counts first
and each action's files costliest first (``plan_lines``); a plan made as
the walk goes, folder by folder as it is made (``folder_lines``)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, TextIO

from flac2all.errors import describe_oserror
from flac2all.lines import printable, relative
from flac2all.model import Action, Settings, Task, TaskResult
from flac2all.planning.planned import action_counts, with_skips

if TYPE_CHECKING:
    from flac2all.planning.flow import Flow, FolderPlan

PathText = os.PathLike | str

# Said under the heading of a plan listed as it is made.
AS_PLANNED = "  (listed as planned, folder by folder: each action's files in the order of the walk; counts at the end)"


class Listing:
    """What ``--dry-run`` prints of a run's flow."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow

    def describe(self, settings: Settings) -> str:
        return "\n".join(self.describe_lines(settings))

    def describe_chunks(self, settings: Settings, lines: int = 10000) -> Iterator[str]:
        """The listing in pieces of ``lines`` lines, to print as they come."""
        return chunks(self.describe_lines(settings), lines)

    def write(self, settings: Settings, out: TextIO) -> str | None:
        """Print the listing to ``out``; why it could not be, else None.
        The listing is what a dry run makes: a write that fails (a full
        disk, /dev/full) loses it and is said; a reader that quit (``|
        head``) has had what it wanted."""
        try:
            for chunk in self.describe_chunks(settings):
                print(chunk, file=out, flush=True)
        except BrokenPipeError:
            return None
        except OSError as exc:
            return f"cannot write the plan to stdout: {describe_oserror(exc)}"
        return None

    def describe_lines(self, settings: Settings) -> Iterator[str]:
        if self.flow.streaming:
            return folder_lines(self.flow, settings)
        return plan_lines(self.flow.first(), self.flow.plan.costs, settings)


def plan_lines(whole: FolderPlan, costs: Mapping[str, float], settings: Settings) -> Iterator[str]:
    """A whole plan: the heading, the counts, then each action's files
    (costliest first, as the plan has them), then the refusals."""
    yield heading(settings)
    counts = action_counts(itertools.chain(whole.tasks, whole.playlists), len(whole.skips))
    yield from count_lines(counts, len(whole.refused), len(whole.unread))
    for action in Action:
        if not counts[action]:
            continue
        yield f"{action.value}:"
        tasks = (t for t in itertools.chain(whole.tasks, whole.playlists) if t.action is action)
        if action is not Action.SKIP:
            yield from (task_line(t, settings) for t in tasks)
            continue
        # The skips kept as text among the others, costliest first as all are.
        for item in with_skips(tasks, whole.skips, costs):
            if isinstance(item, Task):
                yield task_line(item, settings)
            else:
                yield file_line(item.mode, item.source, item.output, None, settings)
    yield from map(refusal_line, whole.refused)
    yield from map(unread_line, whole.unread)


def folder_lines(flow: Flow, settings: Settings) -> Iterator[str]:
    """A plan listed as it is made: each action's files in the order of
    the walk, a folder's actions in ``Action`` order, an action's heading
    again wherever another action (or a refusal) came between, and the
    counts at the end (they are known only then)."""
    yield heading(settings)
    yield AS_PLANNED
    counts = dict.fromkeys(Action, 0)
    refused = unread = 0
    current: Action | None = None
    order = {action: n for n, action in enumerate(Action)}
    for folder in flow.folders():
        for task in sorted(folder.tasks, key=lambda t: order[t.action]):
            counts[task.action] += 1
            if task.action is not current:
                current = task.action
                yield f"{current.value}:"
            yield task_line(task, settings)
        for result in folder.refused:
            refused += 1
            current = None
            yield refusal_line(result)
        for result in folder.unread:
            unread += 1
            current = None
            yield unread_line(result)
    yield "counts:"
    yield from count_lines(counts, refused, unread)


def heading(settings: Settings) -> str:
    return f"Plan for {printable(settings.input_dir)} -> {printable(settings.outdir)} (dry run: nothing changed)"


def count_lines(counts: Mapping[Action, int], refused: int, unread: int) -> Iterator[str]:
    yield from (f"  {action.value:<7} {n}" for action, n in counts.items() if n)
    if refused:
        yield f"  refused {refused}"
    if unread:
        yield f"  unread  {unread}"


def task_line(t: Task, settings: Settings) -> str:
    return file_line(t.mode, t.source, t.output, t.previous, settings)


def file_line(mode: str, source: PathText, output: PathText, previous: PathText | None, settings: Settings) -> str:
    """A task's line: its paths below INPUTDIR and OUTDIR, which the
    heading names (whole where they lie outside)."""
    inp, out = settings.input_dir, settings.outdir
    where = f"{relative(previous, out)} -> " if previous else ""
    return f"  {mode:<8} {relative(source, inp)}: {where}{relative(output, out)}"


def refusal_line(r: TaskResult) -> str:
    return f"refused: {printable(r.task.source)} [{r.task.mode}]: {r.message}"


def unread_line(r: TaskResult) -> str:
    """A folder that could not be listed: the run fails it (exit 1), and
    plans nothing of its sources or their outputs."""
    return f"unread: {printable(r.task.source)}: {r.message}"


def chunks(lines: Iterator[str], size: int) -> Iterator[str]:
    """``lines`` joined in pieces of ``size`` lines, to print as they come."""
    while chunk := list(itertools.islice(lines, size)):
        yield "\n".join(chunk)
