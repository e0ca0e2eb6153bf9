"""Tags and pictures: read a FLAC source, write any output's tags.

``source`` reads a source's metadata and makes the provenance tag; each tag
family (``family.TagFamily``: ``id3``, ``mp4``, ``vorbis``) writes the
source's metadata into its kind of output, mapped as MusicBrainz Picard
does, replacing whatever the encoder wrote on its own. docs/tags.md lists the
mapping (``scripts/tags_doc.py`` writes it from the tables).
"""

from __future__ import annotations

from flac2all.tags.family import NONE, TagFamily
from flac2all.tags.id3 import ID3
from flac2all.tags.mp4 import MP4_FAMILY as MP4
from flac2all.tags.source import (
    PROVENANCE_KEY,
    SourceMeta,
    pictures_hash,
    provenance,
    read_source,
    read_source_facts,
    tags_hash,
    with_folder_art,
    with_provenance,
)
from flac2all.tags.vorbis import FLAC_FAMILY as FLAC
from flac2all.tags.vorbis import OGG

__all__ = [
    "FLAC",
    "ID3",
    "MP4",
    "NONE",
    "OGG",
    "PROVENANCE_KEY",
    "SourceMeta",
    "TagFamily",
    "pictures_hash",
    "provenance",
    "read_source",
    "read_source_facts",
    "tags_hash",
    "with_folder_art",
    "with_provenance",
]
