"""Reading a lossy source (mp3, m4a, ogg, opus, wma) for --lossy convert:
its stream facts, its tags as Vorbis comments and its pictures, so that any
tag family writes them as it writes a FLAC's.

mutagen's "easy" interfaces (EasyID3, EasyMP4) name the common tags as
Vorbis comments do (title, artist, tracknumber "3/12"...); Ogg files have
Vorbis comments already; WMA's ASF names are mapped by a small table.
"""

from __future__ import annotations

import base64
from pathlib import Path

import mutagen
from mutagen.flac import Picture
from mutagen.id3 import ID3
from mutagen.mp4 import MP4, MP4Cover

from flac2all.errors import TaskError, describe_oserror
from flac2all.model import AudioInfo, SourceFacts
from flac2all.tags import id3_prefix
from flac2all.tags.source import PROVENANCE_KEY, SourceMeta, pictures_hash, regular_stat, tags_hash

ASF_NAMES = {
    "Title": "TITLE",
    "Author": "ARTIST",
    "WM/AlbumTitle": "ALBUM",
    "WM/AlbumArtist": "ALBUMARTIST",
    "WM/Year": "DATE",
    "WM/TrackNumber": "TRACKNUMBER",
    "WM/PartOfSet": "DISCNUMBER",
    "WM/Genre": "GENRE",
    "WM/Composer": "COMPOSER",
}
FRONT_COVER = 3


def read_bitrate(path: Path) -> int | None:
    """The bitrate of a lossy file in bit/s (None: unknown or unreadable)."""
    try:
        audio = mutagen.File(path)
    except (mutagen.MutagenError, OSError):
        return None
    rate = getattr(getattr(audio, "info", None), "bitrate", None)
    return int(rate) if rate else None


def read_lossy(path: Path) -> tuple[SourceMeta, SourceFacts]:
    """A lossy file's metadata and the facts the state records of it."""
    try:
        st = regular_stat(path)
        easy = mutagen.File(path, easy=True)
        full = mutagen.File(path)
    except OSError as exc:
        raise TaskError(f"cannot read source: {describe_oserror(exc)}") from None
    except mutagen.MutagenError as exc:
        raise TaskError(f"unreadable source: {exc}") from None
    if easy is None or full is None or not getattr(full.info, "length", 0):
        raise TaskError("not an audio file mutagen can read")
    info = full.info
    audio = AudioInfo(
        sample_rate=int(getattr(info, "sample_rate", 0) or 44100),
        channels=int(getattr(info, "channels", 0) or 2),
        bits_per_sample=16,
        length=float(info.length),
    )
    comments = tuple((k, v) for k, v in comments_of(easy) if k.upper() != PROVENANCE_KEY)
    pictures = tuple(pictures_of(full))
    meta = SourceMeta(info=audio, md5=0, comments=comments, pictures=pictures)
    facts = SourceFacts(st.st_size, st.st_mtime_ns, "", tags_hash(comments), pictures_hash(pictures))
    return meta, facts


def comments_of(easy: mutagen.FileType) -> list[tuple[str, str]]:
    tags = easy.tags
    if tags is None:
        return []
    pairs = []
    if type(easy).__name__ == "ASF":
        for name, key in ASF_NAMES.items():
            for value in tags.get(name, []):
                pairs.append((key, str(value)))
        return pairs
    for key in sorted(tags.keys()):
        for value in tags[key]:
            if isinstance(value, str):
                pairs.append((key.upper(), value))
    return pairs


def pictures_of(audio: mutagen.FileType) -> list[Picture]:
    """The file's pictures as FLAC Picture blocks (what the tag families write)."""
    out = []
    tags = audio.tags
    if isinstance(tags, ID3):
        for frame in tags.getall("APIC"):
            out.append(id3_prefix.picture(frame))
    elif isinstance(audio, MP4) and tags is not None:
        for cover in tags.get("covr", []):
            out.append(cover_picture(cover))
    elif tags is not None and hasattr(tags, "get"):
        for value in tags.get("metadata_block_picture", []) or []:
            try:
                out.append(Picture(base64.b64decode(value)))
            except (ValueError, mutagen.MutagenError):
                continue
    return out


def cover_picture(cover: MP4Cover) -> Picture:
    """An MP4 cover as a FLAC Picture block: the front cover, by its format."""
    pic = Picture()
    pic.type, pic.data = FRONT_COVER, bytes(cover)
    pic.mime = "image/png" if cover.imageformat == MP4Cover.FORMAT_PNG else "image/jpeg"
    return pic
