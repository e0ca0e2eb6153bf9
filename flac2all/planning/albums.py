"""Album gain: the tracks of one source folder gated together
(``loudness.album``: over all their 400 ms blocks, wherever each track was
measured), once the run has measured every FLAC source of that folder and
written all their outputs. The outputs are then retagged with it, never
re-encoded. A folder some of whose sources were not measured in this run
(skipped, failed, or with gain tags of their own under ``fill``) gets no
album gain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from flac2all.audio.loudness import Loudness, album
from flac2all.model import Action, Status, Task, TaskResult
from flac2all.planning.discovery import is_flac_name


@dataclass(frozen=True)
class AlbumRetag:
    """One folder's album measurement, and each output to retag with it
    (beside its own track's measurement)."""

    folder: Path
    album: Loudness
    outputs: tuple[tuple[Task, Loudness], ...]


@dataclass
class Folder:
    tracks: dict[Path, Loudness] = field(default_factory=dict)
    outputs: list[Task] = field(default_factory=list)
    failed: bool = False


class Albums:
    """Collects the measured results of a run by source folder."""

    def __init__(self) -> None:
        self.folders: dict[Path, Folder] = {}

    def add(self, result: TaskResult) -> None:
        task = result.task
        if task.action is not Action.ENCODE:
            return
        if result.loudness is None and result.status is Status.SUCCESS:
            return  # not measured: its folder is judged by its other tracks (and the listing)
        folder = self.folders.setdefault(task.source.parent, Folder())
        if result.status is not Status.SUCCESS:
            folder.failed = True
            return
        folder.tracks[task.source] = result.loudness
        folder.outputs.append(task)

    def complete(self) -> list[AlbumRetag]:
        """The folders whose every FLAC source was measured and encoded
        without a failure, with their album measurement."""
        done = []
        for path, folder in sorted(self.folders.items()):
            if folder.failed or set(flac_sources(path)) != set(folder.tracks):
                continue
            measured = album(folder.tracks[s] for s in sorted(folder.tracks))
            if measured.integrated is None:
                continue  # a silent album: no gain to write
            outputs = tuple((task, folder.tracks[task.source]) for task in folder.outputs)
            done.append(AlbumRetag(path, measured, outputs))
        return done


def flac_sources(folder: Path) -> list[Path]:
    """The FLAC files directly in ``folder`` (as discovery finds them)."""
    try:
        with os.scandir(folder) as entries:
            return [folder / e.name for e in entries if is_flac_name(e.name) and e.is_file(follow_symlinks=False)]
    except OSError:
        return []
