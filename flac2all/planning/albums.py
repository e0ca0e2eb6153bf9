"""Album gain: the tracks of one source folder gated together
(``loudness.album``: over all their 400 ms blocks, wherever and whenever
each track was measured), once every FLAC source of that folder has a
measurement, from this run or recorded in the state by an earlier one. The
outputs are then retagged with it, never re-encoded: those this run wrote
or retagged, and, when the album's gain changed (a track added, removed or
changed), those of the folder's other sources too.

A folder some of whose sources have no measurement (with gain tags of their
own under ``fill``, or skipped since before measuring began) gets no album
gain; one where a task failed is left as it is until a run where none does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flac2all import codecs
from flac2all.audio.loudness import Loudness, album
from flac2all.errors import UsageError
from flac2all.model import Action, Status, Task, TaskResult
from flac2all.planning.discovery import is_flac_name
from flac2all.records import Row
from flac2all.tags import gain


@dataclass(frozen=True)
class AlbumRetag:
    """One folder's album measurement (None when some of its tracks have
    none), the tags it makes, and each output to retag with it, beside its
    own track's measurement."""

    folder: Path
    album: Loudness | None
    tags: str
    outputs: tuple[tuple[Task, Loudness], ...]


@dataclass
class Folder:
    """What a run did in one source folder."""

    tracks: dict[Path, Loudness] = field(default_factory=dict)  # measured in this run
    outputs: list[Task] = field(default_factory=list)  # written or retagged by this run
    failed: bool = False


Recorded = Callable[[Path, str], Loudness | None]  # (source, its audio MD5) -> the state's measurement


class Albums:
    """Collects the results of a run by source folder."""

    def __init__(self) -> None:
        self.folders: dict[Path, Folder] = {}

    def touch(self, folder: Path) -> None:
        """A folder whose album is to be judged though this run did nothing
        there (an earlier run measured it and stopped before its album)."""
        self.folders.setdefault(folder, Folder())

    def add(self, result: TaskResult) -> None:
        task = result.task
        if task.action in (Action.DELETE, Action.ORPHAN):  # a track gone: the album's gain changes
            self.folders.setdefault(task.source.parent, Folder())
            return
        if task.action not in (Action.ENCODE, Action.RETAG, Action.MOVE):
            return
        folder = self.folders.setdefault(task.source.parent, Folder())
        if result.status is not Status.SUCCESS:
            folder.failed = True
            return
        if result.loudness is not None:
            folder.tracks[task.source] = result.loudness
        folder.outputs.append(task)

    def retags(
        self, rows_from: Callable[[Path], Mapping[str, Row]], recorded: Recorded, written: Callable[[Path], str | None]
    ) -> list[AlbumRetag]:
        """Each folder to retag, from the state's rows of its outputs
        (``rows_from``), its measurements (``recorded``) and the album tags
        it last wrote (``written``)."""
        done = []
        for path, folder in sorted(self.folders.items()):
            if not folder.failed:
                done.append(plan_album(path, folder, rows_from(path), recorded, written(path)))
        return done


def plan_album(
    path: Path, folder: Folder, rows: Mapping[str, Row], recorded: Recorded, written: str | None
) -> AlbumRetag:
    """The retag of one folder. Without an album gain (a track not
    measured, or all silent: ``album`` None), the outputs this run retagged
    from their source get their track's gain back, and the folder's others
    lose the album gain an earlier run gave them, if it did."""
    md5s = {Path(row.source): row.audio_md5 for row in rows.values()}
    tracks: dict[Path, Loudness] = {}
    complete = True
    for source in sorted(flac_sources(path)):
        track = folder.tracks.get(source) or recorded(source, md5s.get(source, ""))
        if track is None:
            complete = False
        else:
            tracks[source] = track
    measured = album(tracks[s] for s in sorted(tracks)) if complete and tracks else None
    if measured is None or measured.integrated is None:
        measured, tags = None, ""
        outputs = {
            t.output: t
            for t in folder.outputs
            if t.action is not Action.ENCODE and t.source in tracks and tagged(t.mode)
        }
    else:
        tags = " ".join(v for _, v in gain.pairs(measured, "ALBUM"))
        outputs = {task.output: task for task in folder.outputs if task.source in tracks and tagged(task.mode)}
    if tags != (written or ""):  # the other outputs of the folder carry another album gain, or none
        for output, row in rows.items():
            source = Path(row.source)
            if Path(output) not in outputs and source in tracks and tagged(row.mode):
                task = Task(source, row.mode, Path(output), Action.RETAG, settings_hash=row.settings_hash)
                outputs[Path(output)] = task
    ordered = sorted(outputs.values(), key=lambda t: os.fsencode(t.output))
    return AlbumRetag(path, measured, tags, tuple((task, tracks[task.source]) for task in ordered))


def tagged(mode: str) -> bool:
    """Whether outputs of ``mode`` carry tags (not the test mode's analyses;
    nor a mode this flac2all no longer knows, from the state of an older one)."""
    try:
        return codecs.resolve(mode).tagged
    except UsageError:
        return False


def flac_sources(folder: Path) -> list[Path]:
    """The FLAC files directly in ``folder`` (as discovery finds them)."""
    try:
        with os.scandir(folder) as entries:
            return [folder / e.name for e in entries if is_flac_name(e.name) and e.is_file(follow_symlinks=False)]
    except OSError:
        return []
