"""ID3v2 tags (mp3), mapped as MusicBrainz Picard maps Vorbis comments."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mutagen import id3
from mutagen.flac import Picture
from mutagen.mp3 import MP3

from flac2all.model import Settings
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

# Vorbis comment -> ID3v2.4 text frame (Picard's tag mapping).
ID3_TEXT_FRAMES = {
    "TITLE": "TIT2",
    "SUBTITLE": "TIT3",
    "GROUPING": "TIT1",
    "ARTIST": "TPE1",
    "ALBUMARTIST": "TPE2",
    "CONDUCTOR": "TPE3",
    "REMIXER": "TPE4",
    "ALBUM": "TALB",
    "DISCSUBTITLE": "TSST",
    "ORIGINALALBUM": "TOAL",
    "ORIGINALARTIST": "TOPE",
    "GENRE": "TCON",
    "COMPOSER": "TCOM",
    "LYRICIST": "TEXT",
    "LABEL": "TPUB",
    "ISRC": "TSRC",
    "BPM": "TBPM",
    "COPYRIGHT": "TCOP",
    "ENCODEDBY": "TENC",
    "ENCODERSETTINGS": "TSSE",
    "MOOD": "TMOO",
    "MEDIA": "TMED",
    "LANGUAGE": "TLAN",
    "KEY": "TKEY",
    "COMPILATION": "TCMP",
    "ARTISTSORT": "TSOP",
    "ALBUMSORT": "TSOA",
    "TITLESORT": "TSOT",
    "ALBUMARTISTSORT": "TSO2",
    "COMPOSERSORT": "TSOC",
}
# Frames holding a timestamp; a value that is not one goes to TXXX instead
# of being dropped by the frame's parser.
ID3_DATE_FRAMES = {"DATE": "TDRC", "ORIGINALDATE": "TDOR"}
ID3_TXXX_NAMES = PICARD_NAMES  # the recording id goes to UFID instead
MUSICBRAINZ_UFID_OWNER = "http://musicbrainz.org"
ID3_TIMESTAMP = re.compile(r"\d{4}(-\d{2}(-\d{2}(T\d{2}(:\d{2}(:\d{2})?)?)?)?)?")


def id3_frames(meta: SourceMeta) -> list[id3.Frame]:
    """The ID3v2.4 frames for a source: every comment mapped, nothing added."""
    c = Comments(meta.comments)
    frames: list[id3.Frame] = []
    utf8 = id3.Encoding.UTF8
    for key, values in c.values.items():
        if key in NUMBER_KEYS:
            continue
        if key in ID3_TEXT_FRAMES:
            frames.append(getattr(id3, ID3_TEXT_FRAMES[key])(encoding=utf8, text=values))
        elif key in ID3_DATE_FRAMES and all(ID3_TIMESTAMP.fullmatch(v.strip()) for v in values):
            frames.append(getattr(id3, ID3_DATE_FRAMES[key])(encoding=utf8, text=[v.strip() for v in values]))
        elif key == "COMMENT" or (key == "DESCRIPTION" and "COMMENT" not in c.values):
            frames.append(id3.COMM(encoding=utf8, lang="eng", desc="", text=values))
        elif key in ("LYRICS", "UNSYNCEDLYRICS"):
            frames.append(
                id3.USLT(encoding=utf8, lang="eng", desc="" if key == "LYRICS" else key, text="\n".join(values))
            )
        elif key == "MUSICBRAINZ_TRACKID":
            frames.append(id3.UFID(owner=MUSICBRAINZ_UFID_OWNER, data=values[0].encode("utf-8")))
        elif key == "WEBSITE":
            frames.extend(id3.WOAR(url=v) for v in values)
        else:
            desc = ID3_TXXX_NAMES.get(key, key)
            frames.append(id3.TXXX(encoding=utf8, desc=desc, text=values))
    for frame_id, number_key, total_keys in (
        ("TRCK", "TRACKNUMBER", TRACK_TOTAL_KEYS),
        ("TPOS", "DISCNUMBER", DISC_TOTAL_KEYS),
    ):
        pair = number_pair(c, number_key, total_keys)
        if pair is not None:
            text = f"{pair[0]}/{pair[1]}" if pair[1] else str(pair[0])
            frames.append(getattr(id3, frame_id)(encoding=utf8, text=[text]))
        elif number_key in c.values:
            # Not a number: keep it rather than lose it.
            frames.append(id3.TXXX(encoding=utf8, desc=number_key, text=c.values[number_key]))
    frames.extend(apic_frames(meta.pictures))
    return frames


def apic_frames(pictures: Iterable[Picture]) -> list[id3.APIC]:
    """One APIC per picture; descriptions made unique, as ID3 requires."""
    seen: set[str] = set()
    frames = []
    for pic in pictures:
        desc = pic.desc
        n = 2
        while desc in seen:
            desc = f"{pic.desc} ({n})"
            n += 1
        seen.add(desc)
        frames.append(id3.APIC(encoding=id3.Encoding.UTF8, mime=pic.mime, type=pic.type, desc=desc, data=pic.data))
    return frames


# ID3v2.4-only frames: in a v2.3 tag the sort names stay (off-spec, but read
# by every player that reads them in v2.4, as Picard does); the others go to
# TXXX under their Vorbis name instead of being dropped.
ID3_V24_KEPT_IN_V23 = ("TSOP", "TSOA", "TSOT")
ID3_V24_TO_TXXX = {"TMOO": "MOOD", "TSST": "DISCSUBTITLE"}


def id3_tag(meta: SourceMeta, v23: bool = False) -> id3.ID3:
    """The ID3 tag to write: v2.4, or v2.3 (multi-values joined with '/'
    when saved, dates as TYER/TDAT)."""
    tag = id3.ID3()
    for frame in id3_frames(meta):
        tag.add(frame)
    if v23:
        kept = [tag.pop(fid) for fid in ID3_V24_KEPT_IN_V23 if fid in tag]
        # v2.3's TORY holds only the year: keep a fuller original date too.
        original = [str(t) for t in tag["TDOR"].text] if "TDOR" in tag else []
        if any(len(d) > 4 for d in original):
            kept.append(id3.TXXX(encoding=id3.Encoding.UTF8, desc="ORIGINALDATE", text=original))
        for fid, name in ID3_V24_TO_TXXX.items():
            if fid in tag:
                frame = tag.pop(fid)
                tag.add(id3.TXXX(encoding=id3.Encoding.UTF8, desc=name, text=[str(t) for t in frame.text]))
        tag.update_to_v23()
        for frame in kept:
            tag.add(frame)
    return tag


class Id3Family(TagFamily):
    name = "id3"
    types = (MP3,)

    def shaped_by(self, settings: Settings) -> bool:
        return settings.id3v23

    def write(self, path: Path, meta: SourceMeta, settings: Settings, audio: Any = None) -> list[str]:
        tag = id3_tag(meta, settings.id3v23)
        # Replaces any ID3 the encoder wrote; ID3v1 is never written.
        if isinstance(audio, id3.ID3FileType):
            audio.delete()
        else:
            id3.ID3FileType(path).delete()
        tag.save(path, v2_version=3 if settings.id3v23 else 4, v23_sep="/", v1=0)
        return []

    def provenance_values(self, tags: Any) -> list[str]:
        return [t for f in tags.getall("TXXX:" + PROVENANCE_KEY) for t in f.text]


ID3 = Id3Family()
