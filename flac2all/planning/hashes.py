"""What shaped an output, as the hashes the state and each output's
provenance tag record: a mode's settings (``settings_hash``; a change
re-encodes), a split track's bounds and tags (``short_hash``), and which of
the two an edit touched (``retag_or_encode``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

from flac2all.codecs.base import Codec
from flac2all.model import Action, ReplayGain, Settings

# Bumped when flac2all changes how it makes outputs, so that they are redone.
OUTPUT_FORMAT_VERSION = 1


def settings_hash(codec: Codec, settings: Settings, versions: Mapping[str, str]) -> str:
    """A hash of everything that shaped an output of this mode (``versions``:
    each program's version line, probed by ``tools``): a change makes every
    output of the mode be re-encoded."""
    options = codec.options_in(settings)
    shape = [
        OUTPUT_FORMAT_VERSION,
        codec.name,
        codec.extension,
        list(options),
        [versions.get(p, "") for p in codec.programs],
        codec.max_channels,
        codec.max_rate,
        codec.tag_family.shaped_by(settings),
        settings.embed_folder_art,
    ]
    if settings.art_max_size is not None:  # (appended: the hashes of mirrors made without it stay)
        shape.append(["art", settings.art_max_size])
    if settings.replaygain is not ReplayGain.KEEP:  # measured gains (or none) in place of the source's
        shape.append(["replaygain", settings.replaygain.value])
    return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


def short_hash(value: object) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


def retag_or_encode(recorded: str, wanted: str) -> Action:
    """What an output made with settings hash ``recorded`` needs to have
    ``wanted``: a retag where only the tags' part differs (a split track
    whose CUE sheet's tags were edited), else an encode."""
    same_audio = recorded.count(":") == 2 and recorded.rpartition(":")[0] == wanted.rpartition(":")[0]
    return Action.RETAG if same_audio else Action.ENCODE
