"""The cluster's job and settings messages: what a worker is asked to run,
checked against this node's own codec table and, on a worker, the run's
folders before anything starts."""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from flac2all import codecs
from flac2all.cluster.wire import (
    ProtocolError,
    bounded_int,
    check_path,
    encode,
    fields,
    inside,
    option_words,
    path_to_wire,
    seconds,
)
from flac2all.errors import Flac2allError
from flac2all.model import Action, Settings, Task, Track, Wire

# Actions a worker may be asked to run: the master does the rest itself.
WORKER_ACTIONS = tuple(a for a in Action if a.on_executor)
# The families a settings message may carry options for: this node's own.
OPTION_FAMILIES = tuple(codecs.OPTION_FAMILIES)
MAX_MODES = 64
# An f: mode this node cannot resolve (no ffmpeg, or not that encoder) may
# still be in a run's settings: the worker says it cannot run it.
FOREIGN_MODE = re.compile(r"f:[A-Za-z0-9_]{1,64}")


# --- jobs: one task, the encodes of one source sharing its decoder, or a ----
# --- batch of small copies ----------------------------------------------------

# A job holds at most this many tasks (the modes of one source, or copies).
MAX_JOB = 32
WireTask = tuple[int, int, Task]  # (task id, attempt, task)


def is_copies(job: list[WireTask]) -> bool:
    """Whether a job is a batch of copies (a ``copies`` message: each its
    own source, run one after the other), not one source's tasks."""
    return len(job) > 1 and job[0][2].action is Action.COPY


def track_to_wire(track: Track | None) -> dict:
    """A task's ``track`` field: its CUE track (number, sample bounds, tags;
    no path), only when it has one, which masters before it never sent."""
    if track is None:
        return {}
    return {"track": {"number": track.number, "start": track.start, "end": track.end, "tags": track.tags}}


def track_from_wire(body: dict, action: Action, settings: Settings | None) -> Track | None:
    """The CUE track of a decoded task (``decode`` bounded its fields): an
    encode's or a retag's, of at least one sample, in a run that splits."""
    track = body.get("track")
    if track is None:
        return None
    if action not in (Action.ENCODE, Action.RETAG):
        raise ProtocolError(f"a track in a {action.value}")
    if track["end"] <= track["start"]:
        raise ProtocolError("a track that ends before it starts")
    if settings is not None and settings.cue != "split":
        raise ProtocolError("a track in a run that does not split CUE sheets")
    return Track(track["number"], track["start"], track["end"], tuple((k, v) for k, v in track["tags"]))


def job_to_wire(job: list[WireTask]) -> bytes:
    """One job message: the source, action and size once, then per task its
    id, attempt, mode, output, settings hash and CUE track if any; several
    copies (each its own source) are a ``copies`` message."""
    if is_copies(job):
        return copies_to_wire(job)
    first = job[0][2]
    return encode(
        "job",
        source=path_to_wire(first.source),
        action=first.action.value,
        size=first.size,
        tasks=[
            {
                "id": task_id,
                "attempt": attempt,
                "mode": task.mode,
                "output": path_to_wire(task.output),
                "settings_hash": task.settings_hash,
                **track_to_wire(task.track),
            }
            for task_id, attempt, task in job
        ],
    )


def job_ids(msg: dict) -> list[tuple[int, int]]:
    """The (id, attempt) pairs a decoded job or copies message names (to
    refuse them)."""
    if msg.get("type") not in ("job", "copies"):
        return []
    return [(t["id"], t["attempt"]) for t in msg["tasks"]]


def job_from_wire(msg: dict, settings: Settings | None = None) -> list[WireTask]:
    """Validate a decoded job message (a worker's action, 1 to MAX_JOB
    tasks: ``decode`` checked them) against this node's own codec table
    and, on a worker, the session's folders: a source inside the input
    folder, outputs inside the output folder, nothing else. A job of
    several tasks must be encodes of modes that share a decoder, to
    distinct outputs. A ``copies`` message is read by ``copies_from_wire``."""
    if msg["type"] == "copies":
        return copies_from_wire(msg, settings)
    action = Action(msg["action"])
    source = check_path(msg["source"], "source")
    source_text = os.fspath(source)
    outdir = None
    if settings is not None:
        if not inside(source_text, os.fspath(settings.input_dir)):
            raise ProtocolError("a source outside the run's input folder")
        outdir = os.fspath(settings.outdir)
    if len(msg["tasks"]) > 1 and action is not Action.ENCODE:
        raise ProtocolError("only encodes share a job")
    job = [
        task_from_wire(body, source, source_text, action, msg["size"], outdir, track_from_wire(body, action, settings))
        for body in msg["tasks"]
    ]
    if len(job) > 1:
        distinct(job)
        if not all(codecs.resolve(task.mode).reads_pcm for _, _, task in job):
            raise ProtocolError("a mode that cannot share the decoder in a job of several")
    return job


def distinct(job: list[WireTask]) -> None:
    if len({task.output for _, _, task in job}) < len(job) or len({i for i, _, _ in job}) < len(job):
        raise ProtocolError("a job names an output or a task id twice")


def copies_to_wire(job: list[WireTask]) -> bytes:
    """Small copies sent together (one message, one slot, run one after the
    other): per task its id, attempt, mode, source, size, output and
    settings hash."""
    return encode(
        "copies",
        tasks=[
            {
                "id": task_id,
                "attempt": attempt,
                "mode": task.mode,
                "source": path_to_wire(task.source),
                "size": task.size,
                "output": path_to_wire(task.output),
                "settings_hash": task.settings_hash,
            }
            for task_id, attempt, task in job
        ],
    )


def copies_from_wire(msg: dict, settings: Settings | None = None) -> list[WireTask]:
    """Validate a ``copies`` message as a job of its tasks: each a copy of
    a source inside the input folder to an output of the same name inside
    the output folder, distinct outputs and task ids."""
    input_dir = outdir = None
    if settings is not None:
        input_dir, outdir = os.fspath(settings.input_dir), os.fspath(settings.outdir)
    job = []
    for body in msg["tasks"]:
        source = check_path(body["source"], "source")
        text = os.fspath(source)
        if input_dir is not None and not inside(text, input_dir):
            raise ProtocolError("a source outside the run's input folder")
        job.append(task_from_wire(body, source, text, Action.COPY, body["size"], outdir))
    distinct(job)
    return job


def task_from_wire(
    body: dict,
    source: Path,
    source_text: str,
    action: Action,
    size: int,
    outdir: str | None,
    track: Track | None = None,
) -> WireTask:
    """One decoded task of a job (``outdir``: the run's output folder, on a
    worker; ``track``: its CUE track, checked)."""
    try:
        codec = codecs.resolve(body["mode"])
    except Flac2allError:
        raise ProtocolError(f"unknown codec {body['mode']!r}") from None
    output = check_path(body["output"], "output")
    text = os.fspath(output)
    if text == source_text:
        raise ProtocolError("output is the source")
    if outdir is not None and not inside(text, outdir):
        raise ProtocolError("an output outside the run's output folder")
    if action is Action.COPY:
        if output.name != source.name:
            raise ProtocolError("a copy keeps its name")
    elif output.suffix != codec.extension or source.suffix.lower() != ".flac":
        raise ProtocolError(f"output extension does not match codec {codec.name}")
    task = Task(source, codec.name, output, action, size, settings_hash=body["settings_hash"], track=track)
    return body["id"], body["attempt"], task


# --- settings (sent once per worker session) ---------------------------------
# What travels is model.Settings' ``sent`` fields, each as its Wire kind says:
# one converter per kind, so that a new option of a known kind is one change
# (its field in model.Settings).


def modes_from_wire(value: list, what: str, wire: Wire, hint: Any) -> tuple[str, ...]:
    """Modes this node resolves, or f: modes it cannot (the worker then says
    it cannot run them)."""
    if not 1 <= len(value) <= MAX_MODES:
        raise ProtocolError(f"{what}: not a short list")
    modes = []
    for mode in value:
        if not isinstance(mode, str) or len(mode) > 100:
            raise ProtocolError(f"{what}: not strings")
        try:
            modes.append(codecs.resolve(mode).name)
        except Flac2allError:
            if not FOREIGN_MODE.fullmatch(mode):
                raise ProtocolError(f"unknown codec {mode!r}") from None
            modes.append(mode)
    return tuple(modes)


def options_from_wire(value: dict, what: str, wire: Wire, hint: Any) -> dict[str, tuple[str, ...]]:
    """Encoder options of this node's own families, as a worker accepts them."""
    options = {}
    for family, words in value.items():
        if family not in OPTION_FAMILIES:
            raise ProtocolError(f"unknown option family {family!r}")
        options[family] = option_words(family, words)
    return options


def word_from_wire(value: str, what: str, wire: Wire, hint: Any) -> str:
    """One of the words the field's Wire lists."""
    if value not in wire.words:
        raise ProtocolError(f"bad {what}")
    return value


def choice_from_wire(value: str, what: str, wire: Wire, hint: Any) -> Enum:
    """An enum member by its value (the field's type names the enum)."""
    (enum,) = [t for t in (hint, *typing.get_args(hint)) if isinstance(t, type) and issubclass(t, Enum)]
    try:
        return enum(value)
    except ValueError:
        raise ProtocolError(f"bad {what}") from None


@dataclass(frozen=True)
class Kind:
    """How one Wire kind travels: its JSON type, to the wire, and back
    (checked) from it."""

    json: type | tuple
    to_wire: Callable[[Any], Any]
    from_wire: Callable[[Any, str, Wire, Any], Any]


KINDS = {
    "path": Kind(str, path_to_wire, lambda value, what, wire, hint: check_path(value, what)),
    "modes": Kind(list, list, modes_from_wire),
    "options": Kind(dict, lambda options: {k: list(v) for k, v in options.items()}, options_from_wire),
    "flag": Kind(bool, bool, lambda value, what, wire, hint: value),
    "choice": Kind(str, lambda member: member.value, choice_from_wire),
    "word": Kind(str, str, word_from_wire),
    # Numbers compared before any conversion: math.isfinite(10**400) raised
    # OverflowError, which ended the worker process.
    "seconds": Kind((int, float), float, lambda value, what, wire, hint: seconds(value, what, wire.low, wire.high)),
    "whole": Kind(int, int, lambda value, what, wire, hint: bounded_int(value, what, int(wire.low), int(wire.high))),
}
SENT = Settings.sent_fields()
HINTS = typing.get_type_hints(Settings)


def settings_to_wire(settings: Settings) -> dict:
    """The run's settings a worker needs: model.Settings' sent fields."""
    body = {}
    for f, wire in SENT:
        value = getattr(settings, f.name)
        body[f.name] = None if value is None else KINDS[wire.kind].to_wire(value)
    return body


def settings_from_wire(body: Any) -> Settings:
    """The settings of a welcome, every sent field checked as its kind says
    (a field whose default is None may be missing or null); the fields not
    sent keep their defaults, and a worker process runs one job at a time."""
    if not isinstance(body, dict):
        raise ProtocolError("settings: not an object")
    required: dict[str, type | tuple] = {}
    optional: dict[str, type | tuple] = {}
    for f, wire in SENT:
        json_type = KINDS[wire.kind].json
        if f.default is None or wire.later:
            optional[f.name] = (*(json_type if isinstance(json_type, tuple) else (json_type,)), type(None))
        else:
            required[f.name] = json_type
    fields(body, required, optional, envelope=frozenset())
    values = {}
    for f, wire in SENT:
        value = body.get(f.name)
        if value is None and wire.later:
            continue  # from a master that predates the field: its default
        values[f.name] = None if value is None else KINDS[wire.kind].from_wire(value, f.name, wire, HINTS[f.name])
    return Settings(**values, threads=1)
