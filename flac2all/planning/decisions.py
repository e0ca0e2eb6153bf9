"""What a planned output needs, decided from the state's row, a stat of the
output and, when the source changed, its facts (metadata only): nothing, a
retag, a re-encode, or "new" (maybe a move, once the orphans are known). An
output the state does not vouch for is adopted by its provenance tags. Pure,
like plan.py, whose Planner it asks (through its seams: stat, facts,
provenance, the state's records).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from flac2all.codecs.base import Codec
from flac2all.model import Action, SourceFacts
from flac2all.planning.discovery import Source
from flac2all.planning.hashes import retag_or_encode
from flac2all.skips import UP_TO_DATE

if TYPE_CHECKING:
    from flac2all.planning.plan import Planner


def decide(
    planner: Planner, source: Source, codec: Codec, output: Path, wanted: str | None = None
) -> tuple[Action, str] | None:
    """The action for one encoded output; None means "new" (maybe a move).
    ``wanted``: the settings hash it must have, when not the mode's."""
    if planner.settings.force:
        return Action.ENCODE, ""
    ost = planner.stat(output)
    if ost is None:
        return None
    wanted = wanted or planner.hashes[codec.name]
    # The row as loaded (no Record made): a no-op run decides every
    # output from it and the two stats.
    row = planner.records.row(output)
    if (
        row is not None
        and (row.out_size, row.out_mtime_ns) == (ost.st_size, ost.st_mtime_ns)
        and row.source == os.fspath(source.path)
    ):
        if row.settings_hash != wanted:
            return retag_or_encode(row.settings_hash, wanted), ""
        if (row.src_size, row.src_mtime_ns) == (source.size, source.mtime_ns):
            art = planner.plan.cover(source.path)
            if row.art and row.art != art:
                return Action.RETAG, ""  # its folder's cover changed (--embed-folder-art)
            if row.art != art:  # not known (a state of schema 1): as it is now
                planner.plan.refresh.append(replace(planner.records[output], art=art))
            return Action.SKIP, UP_TO_DATE
        recorded = SourceFacts(row.src_size, row.src_mtime_ns, row.audio_md5, row.tags_hash, row.pictures_hash)
        return compare(planner, source, codec, output, ost, recorded)
    # An output the state does not vouch for: adopt it by its provenance.
    prov = planner.provenance(codec.tag_family, output) if codec.tagged else None
    if prov is not None:
        if prov.get("settings") != wanted:
            return Action.ENCODE, ""
        recorded = SourceFacts(0, 0, prov.get("md5", ""), prov.get("tags", ""), prov.get("pictures", ""))
        return compare(planner, source, codec, output, ost, recorded)
    # No provenance (an output of the original flac2all, say): trust an
    # output newer than its source for its audio, and rewrite its tags.
    if ost.st_mtime_ns >= source.mtime_ns:
        if not codec.tag_family.carries_tags or not codec.tagged:
            facts = planner.facts(source.path)
            if facts is not None:
                planner.record(source, codec, output, facts, ost)
            return Action.SKIP, "skipped: output exists"
        return Action.RETAG, ""
    return Action.ENCODE, ""


def compare(
    planner: Planner, source: Source, codec: Codec, output: Path, ost: os.stat_result, recorded: SourceFacts
) -> tuple[Action, str]:
    """Same output, source maybe changed: read it to know how."""
    facts = planner.facts(source.path)
    if facts is None or not facts.audio_md5 or facts.audio_md5 != recorded.audio_md5:
        return Action.ENCODE, ""
    if (facts.tags_hash, facts.pictures_hash) != (recorded.tags_hash, recorded.pictures_hash):
        return Action.RETAG, ""
    planner.record(source, codec, output, facts, ost)  # touched, not changed
    return Action.SKIP, "skipped: unchanged"


def up_to_date(planner: Planner, source: Source, text: str, codec: Codec, key: str) -> bool:
    """``decide``'s "up to date" from the row and one stat of the output
    (``key``, its text), no Path made: False leaves it to ``decide``."""
    row = planner.records.row(key)
    if row is None or row.source != text or row.settings_hash != planner.hashes[codec.name]:
        return False
    if row.src_size != source.size or row.src_mtime_ns != source.mtime_ns:
        return False
    if row.art != planner.plan.cover(source.path):
        return False  # a retag, or a row to refresh: decide says which
    ost = planner.stat(key)
    return ost is not None and row.out_size == ost.st_size and row.out_mtime_ns == ost.st_mtime_ns
