"""An ID3v2 tag some rippers put before a FLAC stream, read as the Vorbis
comments and pictures it would be: the mapping of ``tags.id3`` backwards.

The FLAC's own comments win: an ID3 field only fills in a key the FLAC's
comments lack, and its pictures are taken only when the FLAC has none.
"""

from __future__ import annotations

from pathlib import Path

import mutagen
from mutagen import id3
from mutagen.flac import Picture

from flac2all.tags.id3 import ID3_DATE_FRAMES, ID3_TEXT_FRAMES, ID3_TXXX_NAMES, MUSICBRAINZ_UFID_OWNER

VORBIS_OF_FRAME = {frame: key for key, frame in {**ID3_TEXT_FRAMES, **ID3_DATE_FRAMES}.items()}
VORBIS_OF_TXXX = {name.upper(): key for key, name in ID3_TXXX_NAMES.items()}
NUMBER_FRAMES = {"TRCK": ("TRACKNUMBER", "TRACKTOTAL"), "TPOS": ("DISCNUMBER", "DISCTOTAL")}


def frame_comments(frame: id3.Frame) -> list[tuple[str, str]]:
    """The Vorbis comments one ID3 frame stands for (none if it maps to none)."""
    fid = frame.FrameID
    if fid in NUMBER_FRAMES:
        number, total = NUMBER_FRAMES[fid]
        n, _, of = str(frame.text[0]).partition("/")
        return [(number, n.strip())] + ([(total, of.strip())] if of.strip() else [])
    if fid == "TCON":
        return [("GENRE", genre) for genre in frame.genres]
    if fid in VORBIS_OF_FRAME:
        return [(VORBIS_OF_FRAME[fid], str(text)) for text in frame.text]
    if fid == "TXXX":
        key = VORBIS_OF_TXXX.get(frame.desc.upper(), frame.desc.upper())
        return [(key, str(text)) for text in frame.text]
    if fid == "COMM" and not frame.desc:
        return [("COMMENT", str(text)) for text in frame.text]
    if fid == "USLT":
        return [("LYRICS" if not frame.desc else frame.desc.upper(), frame.text)]
    if fid == "UFID" and frame.owner == MUSICBRAINZ_UFID_OWNER:
        return [("MUSICBRAINZ_TRACKID", frame.data.decode("utf-8", "replace"))]
    if fid == "WOAR":
        return [("WEBSITE", frame.url)]
    return []


def picture(frame: id3.APIC) -> Picture:
    """An ID3 picture frame as a FLAC Picture block (what the tag families write)."""
    pic = Picture()
    pic.type, pic.mime, pic.desc, pic.data = int(frame.type), frame.mime, frame.desc, frame.data
    return pic


def id3_metadata(path: Path) -> tuple[list[tuple[str, str]], list[Picture]]:
    """The comments and pictures of the ID3v2 tag at the start of ``path``
    (nothing when mutagen cannot read it: the audio is what matters)."""
    try:
        tag = id3.ID3(path)
    except (mutagen.MutagenError, OSError, ValueError):
        return [], []
    comments = [pair for frame in tag.values() for pair in frame_comments(frame) if pair[1]]
    return comments, [picture(frame) for frame in tag.getall("APIC")]


def merged(
    comments: tuple[tuple[str, str], ...], pictures: tuple[Picture, ...], path: Path
) -> tuple[tuple[tuple[str, str], ...], tuple[Picture, ...]]:
    """The FLAC's comments and pictures, completed from its ID3v2 prefix."""
    extra, extra_pictures = id3_metadata(path)
    have = {key.upper() for key, _ in comments}
    added = tuple((key, value) for key, value in extra if key not in have)
    return (*comments, *added), pictures or tuple(extra_pictures)
