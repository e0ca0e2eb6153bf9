"""What a person reads of a run's tasks: a path as any terminal can show
it, and the one line of a finished task (or of an output up to date), as
the plain display, the workers' consoles and the dry run print them."""

from __future__ import annotations

import os
from pathlib import Path

from flac2all.model import Action, Status, TaskResult
from flac2all.skips import UP_TO_DATE

# Control characters (C0, DEL, C1) as \xNN: a file named with an ESC
# sequence, a carriage return or a newline would otherwise drive the
# terminal, or forge a line of its own.
CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def shown(text: str) -> str:
    """Text as a terminal shows it harmlessly: control characters escaped."""
    return text.translate(CONTROLS)


def printable(path: os.PathLike | str) -> str:
    """A path as text that any terminal can show (undecodable bytes and
    control characters escaped, as \\xNN)."""
    return shown(os.fsencode(path).decode("utf-8", "backslashreplace"))


def relative(path: os.PathLike | str, root: Path | None) -> str:
    """A path as the user knows it: relative to ``root`` (INPUTDIR: album
    folder and file; OUTDIR: mode folder, album folder, file) when it lies
    inside it, else whole. (As text: a no-op re-run prints a line for each
    of a million outputs; both are absolute and normalized.)"""
    text = os.fspath(path)
    if root is not None:
        prefix = os.fspath(root).rstrip(os.sep) + os.sep
        if text.startswith(prefix) and len(text) > len(prefix):
            text = text[len(prefix) :]
    return printable(text)


# The note (and the log's message) of an orphan whose source is still there:
# split by a CUE sheet, or left out by --include, --exclude or --query.
SOURCE_HERE = "orphan: source here but no longer makes it, output kept (--delete removes it)"

# Each action's one verb: its lines start with it and the summary counts
# it under it (summary.py).
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


def line_for(result: TaskResult, inputdir: Path | None = None, outdir: Path | None = None) -> str:
    """One line for a finished task, as the plain display and the workers
    print it: its own verb, the mode, what it names (below ``inputdir``
    and ``outdir`` when given, whole otherwise)."""
    task = result.task
    source, output = relative(task.source, inputdir), relative(task.output, outdir)
    if result.status is Status.FAILED:
        return f"FAILED   {task.mode:<8} {source}: {shown(result.message)}"
    head = f"{VERBS[task.action]:<8} {task.mode:<8}"
    if task.action is Action.CONVERT:  # a lossy file encoded, or a cover scaled: derive.py's note says which
        note = f" ({shown(result.message)})" if result.message and result.message != "converted" else ""
        return f"{head} {source} -> {output}{note}"
    if task.action in (Action.ENCODE, Action.COPY, Action.PLAYLIST):
        return f"{head} {source} -> {output}"
    if task.action is Action.MOVE:
        return f"{head} {output} (from {relative(task.previous or '', outdir)})"
    if task.action is Action.ORPHAN and task.note and task.note != SOURCE_HERE:  # kept for a reason of its own
        return f"{head} {output} ({shown(task.note)})"
    if task.action in (Action.DELETE, Action.ORPHAN):
        what = "deleted" if task.action is Action.DELETE else "kept; --delete removes it"
        why = "its source is here but no longer makes it" if task.note == SOURCE_HERE else "its source is gone"
        return f"{head} {output} (orphan: {why}, {what})"
    why = result.message.removeprefix("skipped: ")
    return f"{head} {output}" + (f" ({why})" if why else "")


def skip_line(mode: str, output: str, outdir: Path | None = None) -> str:
    """``line_for`` a Skip's result, without the result."""
    return f"{VERBS[Action.SKIP]:<8} {mode:<8} {relative(output, outdir)} ({UP_TO_DATE.removeprefix('skipped: ')})"
