"""Decide the tasks of a run: pure, apart from asking what exists.

(sources, codecs, settings) -> Tasks, each with its output path and action,
largest sources first so a run does not end with one long file on one core.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flac2all.codecs import Codec
from flac2all.discovery import Source, Tree
from flac2all.model import Action, Layout, Settings, Status, Task, TaskResult


def output_path(rel: Path, codec: Codec | None, settings: Settings, suffix: str | None) -> Path:
    """Where the output for a source at ``rel`` goes.

    ``codec`` None means a mode-less path; ``suffix`` None keeps the name as
    it is (copied files).
    """
    name = rel.name if suffix is None else rel.with_suffix(suffix).name
    if settings.layout is Layout.FLAT:
        return settings.outdir / name
    base = (
        settings.outdir if settings.layout is Layout.NO_MODE_DIRS or codec is None else settings.outdir / codec.folder
    )
    return base / rel.parent / name


def stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except OSError:
        return None


@dataclass
class Plan:
    tasks: list[Task] = field(default_factory=list)
    # Tasks refused before running (colliding outputs): already results.
    refused: list[TaskResult] = field(default_factory=list)

    def counts(self) -> dict[Action, int]:
        out = {a: 0 for a in Action}
        for task in self.tasks:
            out[task.action] += 1
        return out


def build(
    tree: Tree,
    codecs: tuple[Codec, ...],
    settings: Settings,
    stat: Callable[[Path], os.stat_result | None] = stat_or_none,
) -> Plan:
    """One task per (FLAC source, mode), plus copy tasks with ``-c``."""
    plan = Plan()
    claimed: dict[Path, Path] = {}

    def add(source: Source, codec: Codec, output: Path, action: Action) -> None:
        other = claimed.get(output)
        if output == source.path or other is not None:
            why = "it is the source itself" if output == source.path else f"{other} has the same output"
            task = Task(source.path, codec.name, output, action, source.size)
            plan.refused.append(TaskResult(task, Status.FAILED, f"output {output} not written: {why}", 1, 0.0))
            return
        claimed[output] = source.path
        plan.tasks.append(Task(source.path, codec.name, output, action, source.size))

    for source in tree.flacs:
        for codec in codecs:
            output = output_path(source.rel, codec, settings, codec.extension)
            exists = not settings.force and stat(output) is not None
            add(source, codec, output, Action.SKIP if exists else Action.ENCODE)
    if settings.copy:
        for source in tree.others:
            # Without per-mode folders all modes share one copy.
            outputs = {}
            for codec in codecs:
                if codec.tagged:  # nothing to copy beside test mode's analysis files
                    outputs.setdefault(output_path(source.rel, codec, settings, None), codec)
            for output, codec in outputs.items():
                st = stat(output)
                same = st is not None and st.st_size == source.size and st.st_mtime_ns == source.mtime_ns
                add(source, codec, output, Action.SKIP if same and not settings.force else Action.COPY)
    plan.tasks.sort(key=lambda t: t.size, reverse=True)
    return plan
