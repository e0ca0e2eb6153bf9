"""Album gain: the tracks of one album gated together
(``loudness.album``: over all their 400 ms blocks, wherever and whenever
each track was measured), once every FLAC source of the album has a
measurement, from this run or recorded in the state by an earlier one. The
outputs are then retagged with it, never re-encoded: those this run wrote
or retagged, and, when the album's gain changed (a track added, removed or
changed), those of the album's other sources too.

An album is the FLACs of one source folder (``--album-by folder``), or
those sharing ALBUMARTIST (else ARTIST), ALBUM and DISCNUMBER, in whatever
folders (``--album-by tags``: ``Albums.tag_retags``; a source without ALBUM
is in its folder's album). The state keeps the sources each tag album was
judged with, so that a folder this run changed leads to the others of its
albums, and to the albums its sources left.

An album some of whose sources have no measurement (with gain tags of their
own under ``fill``, or skipped since before measuring began) gets no album
gain; one where a task failed is left as it is until a run where none does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from flac2all import codecs
from flac2all.audio.loudness import Loudness, album
from flac2all.errors import TaskError, UsageError
from flac2all.model import Action, AlbumBy, Status, Task, TaskResult
from flac2all.planning.discovery import is_flac_name
from flac2all.records import Row
from flac2all.state_gains import AlbumKey
from flac2all.tags import gain
from flac2all.tags.source import DISC_TOTAL_KEYS, Comments, number_pair, read_source_facts


@dataclass(frozen=True)
class AlbumRetag:
    """One album's measurement (None when some of its tracks have none),
    the tags it makes, and each output to retag with it, beside its own
    track's measurement; ``key`` its folder, or its tags (--album-by tags,
    then ``members`` its sources)."""

    key: AlbumKey
    album: Loudness | None
    tags: str
    outputs: tuple[tuple[Task, Loudness], ...]
    members: tuple[Path, ...] = ()


@dataclass
class Folder:
    """What a run did in one source folder."""

    tracks: dict[Path, Loudness] = field(default_factory=dict)  # measured in this run
    outputs: list[Task] = field(default_factory=list)  # written or retagged by this run
    failed: bool = False


Recorded = Callable[[Path, str], Loudness | None]  # (source, its audio MD5) -> the state's measurement


class TagState(Protocol):
    """What the album step by tags reads of the state (``state.State``)."""

    def rows_from(self, folder: Path) -> Mapping[str, Row]: ...
    def loudness(self, source: Path, audio_md5: str) -> Loudness | None: ...
    def album_tags(self, album: AlbumKey) -> str | None: ...
    def members_of(self, album: AlbumKey) -> list[Path]: ...
    def albums_in(self, folder: Path) -> dict[Path, AlbumKey]: ...


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
                sources = sorted(flac_sources(path))
                done.append(plan_album(path, sources, folder, rows_from(path), recorded, written(path)))
        return done

    def tag_retags(self, state: TagState, written: Callable[[AlbumKey], str | None]) -> list[AlbumRetag]:
        """--album-by tags: each album to retag that a source of a folder
        of this run is in, or was in (one gone, or whose tags changed), with
        all its sources, in whatever folders."""
        index = TagIndex(state)
        wanted: set[AlbumKey] = set()
        for path in sorted(self.folders):
            wanted |= index.read(path)
            wanted.update(state.albums_in(path).values())
        failed = {path for path, folder in self.folders.items() if folder.failed}
        done = []
        for key in sorted(wanted, key=order):
            folders = {key} if isinstance(key, Path) else {s.parent for s in state.members_of(key)}
            folders |= {s.parent for s in index.sources.get(key, ())}
            if folders & failed:
                continue
            for path in sorted(folders):
                index.read(path)
            sources = sorted(index.sources.get(key, ()))
            now = Folder()
            rows: dict[str, Row] = {}
            for path in sorted({s.parent for s in sources}):
                rows.update(index.rows(path))
                if path in self.folders:
                    now.tracks.update(self.folders[path].tracks)
                    now.outputs += self.folders[path].outputs
            members = set(sources)
            rows = {out: row for out, row in rows.items() if Path(row.source) in members}
            planned = plan_album(key, sources, now, rows, state.loudness, written(key))
            done.append(replace(planned, members=tuple(sources)))
        return done


class TagIndex:
    """The album (--album-by tags) of each source of the folders read so
    far, both ways, and the state's rows of their outputs."""

    def __init__(self, state: TagState) -> None:
        self.state = state
        self.sources: dict[AlbumKey, set[Path]] = {}
        self.folders: dict[Path, dict[str, Row] | None] = {}  # read: its rows, once asked for

    def read(self, folder: Path) -> set[AlbumKey]:
        """The albums of the FLACs in ``folder`` (none if read before)."""
        if folder in self.folders:
            return set()
        self.folders[folder] = None
        found = album_keys(folder)
        for source, key in found.items():
            self.sources.setdefault(key, set()).add(source)
        return set(found.values())

    def rows(self, folder: Path) -> dict[str, Row]:
        rows = self.folders.get(folder)
        if rows is None:
            rows = self.folders[folder] = dict(self.state.rows_from(folder))
        return rows


def plan_album(
    key: AlbumKey,
    sources: list[Path],
    folder: Folder,
    rows: Mapping[str, Row],
    recorded: Recorded,
    written: str | None,
) -> AlbumRetag:
    """The retag of one album (``sources``; ``folder``: what this run did
    to them). Without an album gain (a track not measured, or all silent:
    ``album`` None), the outputs this run retagged from their source get
    their track's gain back, and the album's others lose the album gain an
    earlier run gave them, if it did."""
    md5s = {Path(row.source): row.audio_md5 for row in rows.values()}
    split = {Path(row.source) for row in rows.values() if split_track(row.settings_hash)}
    split.update(task.source for task in folder.outputs if task.track is not None)
    tracks: dict[Path, Loudness] = {}
    complete = True
    for source in (s for s in sources if s not in split):  # (a CUE sheet's tracks are an album of their own)
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
    if tags != (written or ""):  # the album's other outputs carry another album gain, or none
        for output, row in rows.items():
            source = Path(row.source)
            if Path(output) not in outputs and source in tracks and tagged(row.mode):
                task = Task(source, row.mode, Path(output), Action.RETAG, settings_hash=row.settings_hash)
                outputs[Path(output)] = task
    ordered = sorted(outputs.values(), key=lambda t: os.fsencode(t.output))
    return AlbumRetag(key, measured, tags, tuple((task, tracks[task.source]) for task in ordered))


def split_track(settings_hash: str) -> bool:
    """Whether an output is a track of a FLAC a CUE sheet splits, by its
    settings hash (planning.hashes: the mode's, then its bounds' and tags')."""
    return settings_hash.count(":") == 2


# The album artist under the names taggers write it: Picard's, foobar2000's, others'.
ALBUM_ARTIST_KEYS = ("ALBUMARTIST", "ALBUM ARTIST", "ALBUM_ARTIST")


def album_key(comments: Comments, folder: Path) -> AlbumKey:
    """The album of a source with ``comments`` in ``folder`` (--album-by
    tags): its album artist (else ARTIST), ALBUM and DISCNUMBER, as beets
    groups a library by its tags; without ALBUM, its folder's, and so for a
    compilation (COMPILATION=1) without an album artist, whose tracks'
    artists differ (two such albums of one title are not one)."""
    title = comments.first("ALBUM")
    if not title:
        return folder
    artist = next((a for key in ALBUM_ARTIST_KEYS if (a := (comments.first(key) or "").strip())), "")
    if not artist:
        if (comments.first("COMPILATION") or "").strip() == "1":
            return folder
        artist = comments.first("ARTIST") or ""
    disc = number_pair(comments, "DISCNUMBER", DISC_TOTAL_KEYS)
    return (artist, title, str(disc[0]) if disc else (comments.first("DISCNUMBER") or "").strip())


def grouping(album_by: AlbumBy) -> str:
    """What the state records of the grouping its albums were judged by
    (``execution.ALBUM_BY_KEY``): --album-by, and for tags the version of
    ``album_key``, so that a change of either judges every album again."""
    return "tags 2" if album_by is AlbumBy.TAGS else album_by.value


def album_keys(folder: Path) -> dict[Path, AlbumKey]:
    """The album of each FLAC directly in ``folder`` (one whose tags cannot
    be read: its folder's)."""
    found: dict[Path, AlbumKey] = {}
    for source in flac_sources(folder):
        try:
            meta, _ = read_source_facts(source)
        except TaskError:
            found[source] = folder
            continue
        found[source] = album_key(Comments(meta.comments), folder)
    return found


def order(key: AlbumKey) -> tuple:
    """Albums in a fixed order: folders (by their bytes), then tag albums."""
    return (0, os.fsencode(key), ()) if isinstance(key, Path) else (1, b"", key)


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
