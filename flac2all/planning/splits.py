"""The planner's part for a FLAC a CUE sheet splits (``--cue split``): one
output per track and mode, named by the split layout or ``--path-format``
with the track's tags, each track's settings hash its bounds and tags (an
edit of the sheet's tags alone is a retag); a sheet that does not fit its
file fails the album with the reason.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from flac2all.codecs.base import Codec
from flac2all.model import Action, Status, Task, TaskResult
from flac2all.planning import cue, decisions, template
from flac2all.planning.discovery import Source
from flac2all.planning.hashes import short_hash
from flac2all.planning.names import output_folder, output_name
from flac2all.tags.source import track_comments

if TYPE_CHECKING:
    from flac2all.planning.plan import Planner

# Where the tracks of a FLAC a CUE sheet splits go, in its output folder
# (without --path-format): a folder named after it, a file per track.
SPLIT_LAYOUT = "{filename}/{track:02} {title}"
NAMES = template.parse(SPLIT_LAYOUT)


def split(planner: Planner, source: Source, codecs: list[Codec]) -> bool:
    """With ``--cue split``, the tasks of a FLAC a CUE sheet splits: one
    output per track and mode (SPLIT_LAYOUT, or --path-format with the
    track's tags); a sheet that does not fit it fails its album, in
    every mode, with the reason. False: not split (no sheet)."""
    if planner.settings.cue != "split":
        return False
    found, sheet_ns = sheet_beside(planner, os.fspath(source.path))
    sheet_file = Path(found) if found else None
    if not planner.settings.force and any(converted_whole(planner, source, codec, sheet_ns) for codec in codecs):
        return False
    try:
        tracks = planner.tracks(source.path, sheet_file, planner.settings.cue_encoding)
    except cue.CueError as exc:
        for codec in codecs:
            task = Task(source.path, codec.name, planner.output(source, codec, codec.extension), Action.ENCODE)
            why = f"{exc.message} (--cue ignore converts it whole)"
            planner.plan.refused.append(TaskResult(task, Status.FAILED, why, 1))
        if sheet_file is not None:
            planner.used_cues.add(sheet_file)
        return True
    if tracks is None:
        return False
    if sheet_file is not None:
        planner.used_cues.add(sheet_file)
    superseded(planner, source, codecs)
    comments = planner.comments(source.path) or ()
    for track in tracks:
        merged = track_comments(comments, track)
        # The track's own part of its settings hash: its bounds, then its
        # tags (an edit of the sheet's tags alone is a retag).
        wanted = f"{short_hash((track.start, track.end))}:{short_hash(track.tags)}"
        for codec in codecs:
            if planner.layout is not None:
                below = output_folder(Path(), codec, planner.settings)
                path = below / planner.layout.render(merged, source.rel, codec.extension)
            else:
                path = planner.folder(source, codec)[1] / NAMES.render(merged, source.rel, codec.extension)
            output = planner.namer.output(source.path, path)
            own = f"{planner.hashes[codec.name]}:{wanted}"
            decided = decisions.decide(planner, source, codec, output, own) or (Action.ENCODE, "")
            if decided[0] is Action.RETAG and planner.settings.replaygain.measures:
                # A track's measured gains come from its cut of the decode, which a retag does not make.
                decided = (Action.ENCODE, decided[1])
            planner.add(source, codec, output, decided[0], note=decided[1], settings_hash=own, track=track)
    return True


def sheet_beside(planner: Planner, source: str) -> tuple[str, int]:
    """The sheet beside the FLAC ``source`` (its path as text), as the walk
    listed it (``planner.sheets``), and its mtime; ("", 0): none."""
    for path in cue.beside_text(source):
        if (mtime := planner.sheets.get(path)) is not None:
            return path, mtime
    return "", 0


def sheet_since(planner: Planner, key: str, changed_ns: int) -> bool:
    """Whether a sheet beside a FLAC (its mtime ``changed_ns``, 0: none)
    changed since the whole output recorded under ``key`` was written: put
    there after the FLAC was converted whole, it splits it. One that was
    there already (a sheet of one track, or ``--cue ignore`` then) leaves
    the whole output be, and the FLAC unopened."""
    if not changed_ns:
        return False
    row = planner.records.row(key)
    return row is not None and changed_ns > row.out_mtime_ns


def whole_output(planner: Planner, source: Source, codec: Codec) -> str | None:
    """The output (as text) the state has of ``source``, as it is now,
    converted whole in ``codec``'s mode; None if none."""
    if planner.layout is not None:
        known = planner.known_output(source, codec)
        return None if known is None else os.fspath(known)
    key = planner.folder(source, codec)[2] + output_name(source.rel, codec.extension)
    row = planner.records.row(key)
    same = row is not None and row.source == os.fspath(source.path)
    return key if same and (row.src_size, row.src_mtime_ns) == (source.size, source.mtime_ns) else None


def converted_whole(planner: Planner, source: Source, codec: Codec, sheet_ns: int = 0) -> bool:
    """Whether the state has ``source``, as it is now, converted whole in
    ``codec``'s mode, with no sheet beside it newer than that output (its
    mtime ``sheet_ns``, 0: none): then it holds no CUE sheet of its own (one
    put in it changes it), and an unchanged library is not opened for one."""
    key = whole_output(planner, source, codec)
    return key is not None and not sheet_since(planner, key, sheet_ns)


def superseded(planner: Planner, source: Source, codecs: list[Codec]) -> None:
    """A FLAC split now that was converted whole: its whole output's row
    no longer says it is up to date (its source's time forgotten), so that
    it stays an orphan, whatever the sheet's time, rather than be taken
    again for the FLAC and its tracks be the orphans."""
    for codec in codecs:
        key = whole_output(planner, source, codec)
        if key is not None:
            record = planner.records[Path(key)]
            planner.plan.refresh.append(replace(record, facts=replace(record.facts, mtime_ns=0)))
