"""What a person reads of a run's tasks: a path as any terminal can show
it, and the one line of a finished task (or of an output up to date), as
the plain display, the workers' consoles and the dry run print them."""

from __future__ import annotations

import os
import re

from flac2all.model import Action, Status, TaskResult
from flac2all.skips import UP_TO_DATE

CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(path: os.PathLike | str) -> str:
    """A path as text that any terminal can show: undecodable bytes and
    control characters (a newline, an ESC: a file name may hold them)
    escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return text if text.isprintable() else CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)


# Each action's one verb: its lines start with it and the summary counts
# it under it (report.ACTION_WORDS).
VERBS = {
    Action.ENCODE: "encoded",
    Action.RETAG: "retagged",
    Action.MOVE: "moved",
    Action.COPY: "copied",
    Action.DELETE: "deleted",
    Action.SKIP: "skipped",
    Action.ORPHAN: "kept",
    Action.CONVERT: "converted",
    Action.PLAYLIST: "written",
}


def line_for(result: TaskResult) -> str:
    """One line for a finished task, as the plain display and the workers
    print it: its own verb, the mode, what it names."""
    task = result.task
    if result.status is Status.FAILED:
        return f"FAILED   {task.mode:<8} {printable(task.source)}: {result.message}"
    head = f"{VERBS[task.action]:<8} {task.mode:<8}"
    if task.action is Action.CONVERT:  # a lossy file encoded, or a cover scaled: derive.py's note says which
        note = f" ({result.message})" if result.message and result.message != "converted" else ""
        return f"{head} {printable(task.source)} -> {printable(task.output)}{note}"
    if task.action in (Action.ENCODE, Action.COPY, Action.PLAYLIST):
        return f"{head} {printable(task.source)} -> {printable(task.output)}"
    if task.action is Action.MOVE:
        return f"{head} {printable(task.output)} (from {printable(task.previous or '')})"
    if task.action in (Action.DELETE, Action.ORPHAN):
        what = "deleted" if task.action is Action.DELETE else "kept; --delete removes it"
        return f"{head} {printable(task.output)} (orphan: its source is gone, {what})"
    why = result.message.removeprefix("skipped: ")
    return f"{head} {printable(task.output)}" + (f" ({why})" if why else "")


def skip_line(mode: str, output: str) -> str:
    """``line_for`` a Skip's result, without the result."""
    return f"{VERBS[Action.SKIP]:<8} {mode:<8} {printable(output)} ({UP_TO_DATE.removeprefix('skipped: ')})"
