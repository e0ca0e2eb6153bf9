"""MP4 tags (m4a), mapped as MusicBrainz Picard maps Vorbis comments."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from mutagen.mp4 import MP4, AtomDataType, MP4Cover, MP4FreeForm, MP4Tags

from flac2all.model import Settings
from flac2all.tags import gain
from flac2all.tags.family import TagFamily
from flac2all.tags.source import (
    DISC_TOTAL_KEYS,
    NUMBER_KEYS,
    PICARD_NAMES,
    PROVENANCE_KEY,
    TRACK_TOTAL_KEYS,
    Comments,
    SourceMeta,
    number_pair,
)

MP4_TEXT_ATOMS = {
    "TITLE": "\xa9nam",
    "ARTIST": "\xa9ART",
    "ALBUM": "\xa9alb",
    "ALBUMARTIST": "aART",
    "DATE": "\xa9day",
    "GENRE": "\xa9gen",
    "COMPOSER": "\xa9wrt",
    "LYRICS": "\xa9lyr",
    "COMMENT": "\xa9cmt",
    "GROUPING": "\xa9grp",
    "DESCRIPTION": "desc",
    "COPYRIGHT": "cprt",
    "ENCODEDBY": "\xa9too",
    "TITLESORT": "sonm",
    "ARTISTSORT": "soar",
    "ALBUMSORT": "soal",
    "ALBUMARTISTSORT": "soaa",
    "COMPOSERSORT": "soco",
    "WORK": "\xa9wrk",
    "MOVEMENTNAME": "\xa9mvn",
}
MP4_FREEFORM_NAMES = {**PICARD_NAMES, **gain.MP4_NAMES, "MUSICBRAINZ_TRACKID": "MusicBrainz Track Id"}
MP4_COVER_FORMATS = {"image/jpeg": MP4Cover.FORMAT_JPEG, "image/png": MP4Cover.FORMAT_PNG}


def mp4_atoms(meta: SourceMeta) -> tuple[dict[str, list], list[str]]:
    """The MP4 atoms for a source, and warnings (pictures that cannot go)."""
    c = Comments(meta.comments)
    atoms: dict[str, list] = {}
    warnings: list[str] = []
    for key, values in c.values.items():
        if key in NUMBER_KEYS:
            continue
        if key in MP4_TEXT_ATOMS:
            atoms[MP4_TEXT_ATOMS[key]] = list(values)
        elif key == "COMPILATION":
            atoms["cpil"] = values[0].strip() not in ("", "0")
        elif key == "BPM" and values[0].strip().isdigit():
            atoms["tmpo"] = [int(values[0])]
        else:
            name = MP4_FREEFORM_NAMES.get(key, key)
            atoms["----:com.apple.iTunes:" + name] = [MP4FreeForm(v.encode("utf-8")) for v in values]
    for atom, number_key, total_keys in (
        ("trkn", "TRACKNUMBER", TRACK_TOTAL_KEYS),
        ("disk", "DISCNUMBER", DISC_TOTAL_KEYS),
    ):
        pair = number_pair(c, number_key, total_keys)
        if pair is not None:
            atoms[atom] = [pair]
        elif number_key in c.values:
            atoms["----:com.apple.iTunes:" + number_key] = [
                MP4FreeForm(v.encode("utf-8")) for v in c.values[number_key]
            ]
    covers = []
    for pic in meta.pictures:
        fmt = MP4_COVER_FORMATS.get(pic.mime.lower())
        if fmt is None:
            warnings.append(f"picture '{pic.desc}' ({pic.mime}) skipped: MP4 takes only JPEG and PNG")
        else:
            covers.append(MP4Cover(pic.data, imageformat=fmt))
    if covers:
        atoms["covr"] = covers
    return atoms, warnings


class FreeformTags(MP4Tags):
    """MP4 tags whose freeform atoms (``----``) are rendered in time
    proportional to their size: mutagen adds each value to the bytes before
    it (a source with 100,000 values of one comment took minutes)."""

    def _render(self, key: str, value: Any) -> bytes:
        if not key.startswith("----:"):
            return super()._render(key, value)
        _, mean, name = key.encode("latin-1").split(b":", 2)
        parts = [struct.pack(">I4sI", len(mean) + 12, b"mean", 0), mean]
        parts += [struct.pack(">I4sI", len(name) + 12, b"name", 0), name]
        for v in [value] if isinstance(value, bytes) else value:
            flags, version = (v.dataformat, v.version) if isinstance(v, MP4FreeForm) else (AtomDataType.UTF8, 0)
            parts += [struct.pack(">I4s2I", len(v) + 16, b"data", version << 24 | flags, 0), v]
        data = b"".join(parts)
        return struct.pack(">I4s", len(data) + 8, b"----") + data


class Mp4File(MP4):
    """An MP4 file with FreeformTags."""

    MP4Tags = FreeformTags


class Mp4Family(TagFamily):
    name = "mp4"
    types = (Mp4File,)

    def write(self, path: Path, meta: SourceMeta, settings: Settings, audio: Any = None) -> list[str]:
        atoms, warnings = mp4_atoms(meta)
        mp4 = self.opened(path, audio)
        if mp4.tags is None:
            mp4.add_tags()
        mp4.tags.clear()
        mp4.tags.update(atoms)
        mp4.save()
        return warnings

    def provenance_values(self, tags: Any) -> list[str]:
        return [bytes(v).decode("utf-8", "replace") for v in tags.get("----:com.apple.iTunes:" + PROVENANCE_KEY, [])]


MP4_FAMILY = Mp4Family()
