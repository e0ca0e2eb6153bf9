"""Where a worker sees the master's folders: ``--map MASTER=WORKER``.

Jobs travel in the master's paths. A worker whose mounts differ (a FreeBSD
file server's ``/storage/music`` mounted over NFS at ``/mnt/storage/music``)
translates every path it receives (the run's folders, the checked sources
and the probe file of the welcome, each task's source and output) to its
own, and every path it sends (a result's message, a health problem) back,
so that the master's log, state and summary hold the master's paths.

A map covers a path by whole components (``/a/b`` covers ``/a/b/c``, never
``/a/bc``), the longest map first; a path no map covers is used as it is
(the same mount on both). Everything the worker checks for itself
(``--allow``, symlinks, health) looks at its own, mapped, paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from flac2all.cluster.jobs import SENT, WireTask
from flac2all.cluster.protocol import Checks, ProtocolError
from flac2all.errors import UsageError
from flac2all.model import Settings, Task, TaskResult

# Settings fields that hold a path: the wire's own declaration.
PATH_FIELDS = tuple(f.name for f, wire in SENT if wire.kind == "path")
# What may stand right before or after a path in a message: a path in free
# text is rewritten only where it starts and ends as a whole.
BEFORE = r"(?<![^\s'\"(\[=:])"
AFTER = r"(?=/|$|[\s'\")\]:,;])"


@dataclass(frozen=True)
class PathMap:
    """One ``--map``: the master's folder and where this worker sees it."""

    master: Path
    worker: Path

    def __str__(self) -> str:
        return f"--map {self.master}={self.worker}"

    @classmethod
    def parse(cls, spec: str) -> PathMap:
        """``MASTER=WORKER``, both absolute (normalized: ``/a/./b/`` is
        ``/a/b``), cut at the one '=' a '/' follows: either side may hold
        an '=' of its own (``/music/a=b=/mnt/a=b``) but for that pair."""
        cuts = [i for i, c in enumerate(spec) if c == "=" and spec.startswith("/", i + 1)]
        if len(cuts) > 1:
            raise UsageError(f"--map {spec}: more than one '=/': which '=' parts the two paths is not clear")
        master, sep, worker = (spec[: cuts[0]], "=", spec[cuts[0] + 1 :]) if cuts else spec.partition("=")
        if not sep or not master or not worker:
            raise UsageError(f"--map {spec}: give MASTER_PATH=WORKER_PATH")
        for side in (master, worker):
            if not os.path.isabs(side):
                raise UsageError(f"--map {spec}: {side} is not an absolute path")
        if os.path.normpath(worker) in ("/", "//"):
            raise UsageError(f"--map {spec}: the worker's side cannot be / (all of this host)")
        return cls(Path(os.path.normpath(master)), Path(os.path.normpath(worker)))


def swap(path: Path, pairs: Sequence[tuple[Path, Path]]) -> Path:
    """``path`` under the first pair's left side that covers it (by whole
    components), moved under its right side; else ``path`` itself."""
    for old, new in pairs:
        if path.is_relative_to(old):
            return new / path.relative_to(old) if path != old else new
    return path


class PathMaps:
    """A worker's maps, both ways, the longest (most components) first."""

    def __init__(self, maps: Iterable[PathMap] = ()) -> None:
        self.maps = tuple(maps)
        masters = [m.master for m in self.maps]
        if len(set(masters)) < len(masters):
            twice = next(m for m in masters if masters.count(m) > 1)
            raise UsageError(f"--map {twice}=...: given twice")
        workers = [m.worker for m in self.maps]
        if len(set(workers)) < len(workers):
            twice = next(w for w in workers if workers.count(w) > 1)
            raise UsageError(f"--map ...={twice}: two of the master's folders cannot be one here")
        for outer in self.maps:
            for inner in self.maps:
                if inner is outer or not inner.worker.is_relative_to(outer.worker):
                    continue
                implied = outer.master / inner.worker.relative_to(outer.worker)
                if implied != inner.master:  # a path under inner.worker would be two of the master's
                    raise UsageError(
                        f"{inner} and {outer}: {inner.worker} lies inside {outer.worker}, where {outer} puts the"
                        f" master's {implied}, not {inner.master}: what is found there cannot be told back"
                    )
        by_length = sorted(self.maps, key=lambda m: len(m.master.parts), reverse=True)
        self.inward = [(m.master, m.worker) for m in by_length]
        self.outward = sorted(((m.worker, m.master) for m in self.maps), key=lambda p: len(p[0].parts), reverse=True)
        if self.maps:
            # Longer first: /mnt/a/b before /mnt/a in an alternation.
            alternatives = sorted((os.fspath(m.worker) for m in self.maps), key=len, reverse=True)
            self.in_text = re.compile(BEFORE + "(" + "|".join(map(re.escape, alternatives)) + ")" + AFTER)
            self.back = {os.fspath(w): os.fspath(m) for w, m in self.outward}

    @classmethod
    def parse(cls, specs: Iterable[str]) -> PathMaps:
        return cls(PathMap.parse(spec) for spec in specs)

    def __bool__(self) -> bool:
        return bool(self.maps)

    def to_worker(self, path: Path) -> Path:
        return swap(path, self.inward)

    def to_master(self, path: Path) -> Path:
        return swap(path, self.outward)

    def covering(self, path: Path) -> PathMap | None:
        """The map that translates the master's ``path``, or None."""
        for m in sorted(self.maps, key=lambda m: len(m.master.parts), reverse=True):
            if path.is_relative_to(m.master):
                return m
        return None

    def text_to_master(self, text: str) -> str:
        """A message's paths of this worker written back as the master's."""
        if not self.maps or not text:
            return text
        return self.in_text.sub(self.master_of, text)

    def master_of(self, match: re.Match) -> str:
        """The master's folder for a worker's one found in a message (the
        master's '/' before a path's own '/' is none: '//a' would be another path)."""
        master = self.back[match.group(1)]
        return "" if master == "/" and match.string.startswith("/", match.end()) else master

    def settings(self, settings: Settings) -> Settings:
        """The run's settings with its folders where this worker sees them."""
        return replace(settings, **{name: self.to_worker(getattr(settings, name)) for name in PATH_FIELDS})

    def checks(self, checks: Checks) -> Checks:
        sources = tuple((self.to_worker(path), size) for path, size in checks.sources)
        probe = self.to_worker(checks.probe) if checks.probe is not None else None
        return replace(checks, sources=sources, probe=probe)

    def task(self, task: Task) -> Task:
        """A task with its paths where this worker sees them."""
        return replace(task, source=self.to_worker(task.source), output=self.to_worker(task.output))

    def job(self, job: list[WireTask], settings: Settings) -> list[WireTask]:
        """A job's tasks with their paths where this worker sees them
        (``settings``: the run's, mapped); refused (ProtocolError) if a map
        takes a source or an output out of the run's folders (a map of a
        folder below the input folder, to elsewhere)."""
        if not self.maps:
            return job
        mapped = []
        for task_id, attempt, task in job:
            here = self.task(task)
            if not here.source.is_relative_to(settings.input_dir) or not here.output.is_relative_to(settings.outdir):
                raise ProtocolError(f"{task.source}: the maps take it out of the run's folders here")
            mapped.append((task_id, attempt, here))
        return mapped

    def result(self, result: TaskResult, task: Task | None = None) -> TaskResult:
        """What a result says, in the master's paths (``task``: the task as
        the master named it, for a result that carries it back)."""
        if not self.maps:
            return result
        return replace(result, message=self.text_to_master(result.message), task=task or result.task)

    def wrong(self, settings: Settings, checks: Checks) -> str:
        """Which map is wrong, or "": the run's folders, the sources the
        master named and its probe file, each looked for where its map
        says (the master's own paths, unmapped, are checked by the health
        check as today)."""
        wanted = [getattr(settings, name) for name in PATH_FIELDS]
        wanted += [path for path, _ in checks.sources]
        if checks.probe is not None:
            wanted.append(checks.probe)
        for path in wanted:
            m = self.covering(path)
            if m is None:
                continue
            if not os.path.isdir(m.worker):
                return f"{m}: {m.worker} does not exist (or is not a folder)"
            mapped = self.to_worker(path)
            if not os.path.lexists(mapped):
                return f"{m}: {mapped} does not exist (the master's {path})"
        return ""
