"""The plan of the input's files that are not FLAC: copies (-c), covers
scaled down (--art-max-size), lossy files copied or converted (--lossy,
--max-bitrate), playlists (--playlists). Pure, like plan.py, whose Planner
it adds its tasks to (through its seams: stat, the state's records, and
``bitrate`` for lossy files).
"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from flac2all.codecs.base import Codec
from flac2all.model import Action, Lossy, Settings, SourceFacts, Task
from flac2all.planning.discovery import Source, Tree, extension_format, is_playlist, lossy_format
from flac2all.tags.source import FOLDER_ART_NAMES, FOLDER_ART_TYPES

if TYPE_CHECKING:
    from flac2all.planning.plan import Planner


def is_cover(path: Path) -> bool:
    """A folder's cover file (cover.jpg, folder.png...), as --embed-folder-art finds them."""
    return path.stem.lower() in FOLDER_ART_NAMES and path.suffix.lower() in FOLDER_ART_TYPES


def folder_covers(tree: Tree) -> dict[Path, str]:
    """Folder -> what identifies the cover file --embed-folder-art would
    take from it (its name, size and mtime): the state records it with each
    output, so a changed cover alone is noticed."""
    by_folder: dict[Path, dict[str, Source]] = {}
    for source in tree.others:
        by_folder.setdefault(source.path.parent, {})[source.path.name.lower()] = source
    covers = {}
    for folder, names in by_folder.items():
        found = [names[s + e] for s in FOLDER_ART_NAMES for e in FOLDER_ART_TYPES if s + e in names]
        if found:
            cover = found[0]
            covers[folder] = f"{cover.path.name}:{cover.size}:{cover.mtime_ns}"
    return covers


def derived_hash(kind: str, settings: Settings, codec_hash: str = "") -> str:
    """The settings hash of an output that is not an encode of a FLAC: a
    scaled cover depends on the size asked, a converted lossy file on its
    mode's hash too."""
    shape = [kind, settings.art_max_size, codec_hash]
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


def plan_others(planner: Planner, tree: Tree) -> None:
    settings = planner.settings
    for source in tree.others:
        if settings.playlists and is_playlist(source.path):
            plan_playlist(planner, source)
        elif planner.leaves_out(source) or source.path in planner.used_cues:
            continue
        elif settings.lossy is not None and lossy_format(source.path):
            if settings.lossy is not Lossy.SKIP:
                plan_lossy(planner, source)
        elif settings.copy:
            scale = settings.art_max_size is not None and is_cover(source.path)
            plan_copies(planner, source, [c for c in planner.codecs if c.tagged], scale)


def plan_copies(planner: Planner, source: Source, codecs: list[Codec], scale: bool = False) -> None:
    """The copy of ``source`` into each mode's tree (one for all modes
    without per-mode folders); ``scale``: a cover scaled down."""
    outputs: dict[Path, Codec] = {}
    for codec in codecs:
        for output in planner.copies(source, codec):
            outputs.setdefault(output, codec)
            planner.keep_output(source, codec, output)
    wanted = derived_hash("cover", planner.settings) if scale else None
    for output, codec in outputs.items():
        if unchanged(planner, source, codec, output, wanted):
            planner.add(source, codec, output, Action.SKIP, note="skipped: up to date")
        elif scale:
            planner.add(source, codec, output, Action.CONVERT, settings_hash=wanted)
        else:
            planner.add(source, codec, output, Action.COPY)


def unchanged(planner: Planner, source: Source, codec: Codec, output: Path, wanted: str | None) -> bool:
    """Whether an output made from a file as it is (``wanted`` None: a
    copy) or from a derived one (``wanted``: its settings hash) is up to
    date, by the state or, for a copy, by its size and mtime (a copy2)."""
    if planner.settings.force:
        return False
    st = planner.stat(output)
    if st is None:
        return False
    rec = planner.records.get(output)
    if rec is not None and rec.output_is(st) and rec.source_is(source.size, source.mtime_ns):
        if wanted is None or (rec.settings_hash == wanted and rec.source == source.path):
            return True
    if wanted is None and (st.st_size, st.st_mtime_ns) == (source.size, source.mtime_ns):
        if rec is None:
            planner.record(source, codec, output, SourceFacts(source.size, source.mtime_ns, "", "", ""), st)
        return True
    return False


def plan_lossy(planner: Planner, source: Source) -> None:
    """A lossy file: converted into the modes of another format (--lossy
    convert), or all of them above --max-bitrate; copied into the others."""
    settings = planner.settings
    fmt = lossy_format(source.path)
    # Only a regular file's bitrate is read: a FIFO named like a lossy file
    # would block the open, a link to /dev/zero be read without end. Planned
    # as any other file, it is refused by the task that would open it.
    st = planner.stat(source.path) if settings.max_bitrate else None
    regular = st is not None and stat.S_ISREG(st.st_mode)
    rate = planner.bitrate(source.path) if regular else None
    over = rate is not None and rate > settings.max_bitrate * 1000  # type: ignore[operator]
    copies = []
    for codec in planner.codecs:
        if not codec.tagged or not codec.reads_pcm:
            continue  # the test mode: nothing to convert
        if over or (settings.lossy is Lossy.CONVERT and extension_format(codec.extension) != fmt):
            output = planner.output(source, codec, codec.extension)
            planner.keep_output(source, codec, output)
            wanted = derived_hash("lossy", settings, planner.hashes[codec.name])
            if unchanged(planner, source, codec, output, wanted):
                planner.add(source, codec, output, Action.SKIP, note="skipped: up to date")
            else:
                planner.add(source, codec, output, Action.CONVERT, settings_hash=wanted)
        else:
            copies.append(codec)
    if copies:
        plan_copies(planner, source, copies)


def plan_playlist(planner: Planner, source: Source) -> None:
    """A playlist, written into each mode's tree after the other tasks
    (``playlists.write``); its output is claimed now, so that it is not an
    orphan and no other source takes its name."""
    seen = set()
    for codec in planner.codecs:
        if not codec.tagged:
            continue
        output = planner.output(source, codec, None)
        if output in seen:
            continue  # one tree for all modes
        seen.add(output)
        task = Task(source.path, codec.name, output, Action.PLAYLIST, source.size, settings_hash="playlist")
        if planner.claim(task):
            planner.plan.playlists.append(task)
