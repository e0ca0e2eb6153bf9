"""The planner's part for outputs whose source is new to them: a new
source whose audio is an orphan's (an output whose source is gone) is that
orphan moved; the other new outputs are encodes; the orphans left are kept
or, with --delete, deleted (``place_fresh``, called by ``Planner.build``
once every source is decided)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from flac2all import dirs
from flac2all.codecs.base import Codec
from flac2all.csvlog import LOG_NAME
from flac2all.errors import TaskError, UsageError
from flac2all.lines import SOURCE_HERE
from flac2all.model import Action, Layout, Settings, SourceFacts, Task
from flac2all.planning.discovery import Source, Tree
from flac2all.records import Record, texts
from flac2all.state import STATE_DIR

if TYPE_CHECKING:
    from flac2all.planning.plan import Planner

# --delete refuses to remove half the outputs or more (a source disk that is
# not mounted looks like a library that was deleted), or more than
# DELETE_GUARD of them when that is more than DELETE_FEW files: an album
# deleted from a small library goes, a shelf of a large one does not.
DELETE_GUARD = 0.10
DELETE_FEW = 50


def place_fresh(planner: Planner, fresh: list[tuple[Source, Codec, Path]], tree: Tree) -> None:
    """New outputs: moves where the audio is an orphan's, else encodes;
    then the remaining orphans."""
    settle(planner, fresh, orphans_after(planner, fresh, tree))


def settle(planner: Planner, fresh: list[tuple[Source, Codec, Path]], unclaimed: list[Record]) -> None:
    """``place_fresh`` with the orphans known: the ``unclaimed`` rows whose
    source is gone (or whose mode the run makes), taken by output path."""
    orphans = []
    for rec in sorted(unclaimed, key=lambda rec: os.fsencode(rec.output)):
        if not lies_in(rec.output, planner.settings.outdir):
            # The state is a map of what may be deleted or moved: a row
            # naming a file outside OUTDIR ('..') is not ours, whatever it says.
            planner.plan.warnings.append(f"the state names {rec.output}, outside {planner.settings.outdir}: ignored")
            planner.plan.forget.append(rec.output)
        elif not where_outputs_go(rec.output, planner.settings):
            planner.plan.warnings.append(f"the state names {rec.output}, where no output goes: ignored")
            planner.plan.forget.append(rec.output)
        elif not rec.output_is(planner.stat(rec.output)):
            planner.plan.forget.append(rec.output)  # gone, or not ours any more
        else:
            orphans.append(rec)
    match_moves(planner, fresh, orphans)
    # A source whose new output was refused (a tag edit onto another's path) still has its old one: kept.
    refused = {(os.fspath(r.task.source), r.task.mode) for r in planner.plan.refused}
    deleting = planner.settings.delete
    doomed = [rec for rec in orphans if (os.fspath(rec.source), rec.mode) not in refused]
    why = too_many_deletes(planner, doomed) if deleting and not planner.settings.delete_anyway else ""
    if why:
        if planner.refuse:
            raise UsageError(why + "Run with --dry-run to see the list, and add --delete-anyway if it is right")
        planner.plan.warnings.append(f"a run would refuse: {why}The list is below; add --delete-anyway if it is right")
    for rec in orphans:
        if (os.fspath(rec.source), rec.mode) in refused:
            note = "output kept: its source is here, but its new output was refused (see that row)"
            planner.plan.tasks.append(Task(rec.source, rec.mode, rec.output, Action.ORPHAN, note=note))
        else:
            # (A source still there: split by a CUE sheet, left out by the globs or --query...)
            note = SOURCE_HERE if planner.stat(rec.source) is not None else ""
            action = Action.DELETE if deleting else Action.ORPHAN
            planner.plan.tasks.append(Task(rec.source, rec.mode, rec.output, action, note=note))


def too_many_deletes(planner: Planner, orphans: list[Record]) -> str:
    """Why --delete would remove too much ("" when it would not): half the
    outputs or more, or more than DELETE_FEW of them and DELETE_GUARD; the
    sentence names the source folders (below INPUTDIR) whose outputs would go."""
    n, total = len(orphans), len(planner.records)
    if not n or (n * 2 < total and (n <= DELETE_FEW or n <= DELETE_GUARD * total)):
        return ""
    limit = "half of them or more" if n * 2 >= total else f"more than {DELETE_FEW} and more than {DELETE_GUARD:.0%}"
    return (
        f"--delete would remove {n} of the {total} outputs in {planner.settings.outdir} ({limit}), those of "
        f"{gone_folders(orphans, planner.settings.input_dir)}: is the source folder mounted and complete? "
    )


def gone_folders(orphans: list[Record], input_dir: Path, shown: int = 5) -> str:
    """The top-level source folders of ``orphans`` with their counts, the
    largest first (``'Artist A' (12), 'Artist B' (2) and 3 more folders``)."""
    counts: dict[str, int] = {}
    for rec in orphans:
        parts = rec.source.relative_to(input_dir).parts if rec.source.is_relative_to(input_dir) else ()
        top = repr(parts[0]) if len(parts) > 1 else "INPUTDIR itself"
        counts[top] = counts.get(top, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    text = ", ".join(f"{name} ({n})" for name, n in ranked[:shown])
    if len(ranked) > shown:
        text += f" and {len(ranked) - shown} more folders"
    return text


def lies_in(path: Path, top: Path) -> bool:
    """``path`` lies below ``top``, as text: no '..' climbs out of it."""
    try:
        dirs.below(path, top)
    except TaskError:
        return False
    return True


def where_outputs_go(path: Path, settings: Settings) -> bool:
    """``path`` (below OUTDIR) may be an output: reached with no '..', not
    in flac2all's state folder nor its log, and in a mode's folder when
    each mode has one (OUTDIR itself holds the user's own files)."""
    try:
        parts = path.relative_to(settings.outdir).parts
    except ValueError:
        return False
    if not parts or ".." in parts or parts[0] in (STATE_DIR, LOG_NAME, f"{LOG_NAME}.previous"):
        return False
    return len(parts) > 1 or settings.layout is not Layout.TREE


def match_moves(planner: Planner, fresh: list[tuple[Source, Codec, Path]], orphans: list[Record]) -> None:
    """Each new output whose audio (and settings) an orphan's has is that
    orphan moved; the others are encodes. Among orphans of the same
    audio (two discs alike, an album folder renamed), the one with the
    most trailing path parts in common wins, then the one with the same
    tags. What is moved is taken off ``orphans``."""
    movable: dict[tuple, list[Record]] = {}
    # A source's own outputs by their audio, whatever its size now: a tag
    # edit that changes where --path-format puts it may change its size too.
    own: dict[tuple, list[Record]] = {}
    if not planner.settings.force:
        for rec in orphans:
            if rec.facts.audio_md5:
                key = (rec.mode, rec.facts.audio_md5, rec.facts.size, rec.settings_hash)
                movable.setdefault(key, []).append(rec)
                own.setdefault((rec.source, rec.mode, rec.facts.audio_md5, rec.settings_hash), []).append(rec)
    for source, codec, output in fresh:
        facts = planner.facts(source.path) if movable else None
        key = (codec.name, facts.audio_md5, source.size, planner.hashes[codec.name]) if facts else None
        mine = own.get((source.path, codec.name, facts.audio_md5, planner.hashes[codec.name]), []) if facts else []
        candidates = mine or (movable.get(key, []) if key else [])
        if not candidates:
            planner.add(source, codec, output, Action.ENCODE)
            continue
        rec = max(candidates, key=lambda r: likeness(r, source.path, facts))  # noqa: B023 (used at once)
        for taken in (movable.get((rec.mode, rec.facts.audio_md5, rec.facts.size, rec.settings_hash), []), mine):
            if rec in taken:
                taken.remove(rec)
        orphans.remove(rec)
        planner.add(source, codec, output, Action.MOVE, previous=rec.output)


def orphans_after(planner: Planner, fresh: list[tuple[Source, Codec, Path]], tree: Tree) -> list[Record]:
    # Outputs of fresh tasks are claimed too: a row for one of them that
    # we did not decide on (its output is missing) is not an orphan.
    # (As text: a Record is made only for a row no task claimed.)
    claimed = set(planner.claimed) | texts(output for _, _, output in fresh)
    unclaimed = list(planner.records.unclaimed(claimed))
    if not unclaimed:
        return []
    present = {s.path for s in tree.flacs} | {s.path for s in tree.others}
    modes = {c.name for c in planner.codecs}
    orphans = [
        rec
        for rec in unclaimed
        if rec.mode in modes or (rec.source not in present and not left_out(planner, rec.source))
    ]
    # A source in a folder that could not be read may well be there: its
    # outputs are neither orphans (--delete would remove them) nor moved.
    unread = [folder for folder, _ in tree.errors]
    if unread:
        orphans = [rec for rec in orphans if not any(rec.source.is_relative_to(f) for f in unread)]
    return orphans


def left_out(planner: Planner, source: Path) -> bool:
    """Whether ``source`` was not walked because the globs leave it out:
    the outputs of another mode made from it (another profile's, into the
    same OUTDIR) are not orphans, as they are not in a mirror planned
    folder by folder, where such a source is found on disk."""
    selection, input_dir = planner.selection, planner.settings.input_dir
    return selection.by_path and source.is_relative_to(input_dir) and not selection.takes(source.relative_to(input_dir))


def common_tail(a: Path, b: Path) -> int:
    """How many trailing path parts two paths share (``CD1/01.flac``: 2)."""
    n = 0
    for x, y in zip(reversed(a.parts), reversed(b.parts), strict=False):
        if x != y:
            break
        n += 1
    return n


def likeness(rec: Record, source: Path, facts: SourceFacts) -> tuple[int, bool]:
    """How much an orphan looks like the new source of the same audio."""
    return common_tail(rec.source, source), rec.facts.tags_hash == facts.tags_hash
