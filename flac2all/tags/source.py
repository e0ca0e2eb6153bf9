"""Reading a FLAC source's metadata, and the provenance tag.

The source's Vorbis comments (every one, multi-valued, in order) and pictures
are read with mutagen into a SourceMeta, which every tag family writes in its
own way (``flac2all.tags.family`` and the modules beside it). The provenance
tag (``FLAC2ALL_SOURCE``) records in each output what it was made from, so
that the mirror's state can be rebuilt from the outputs.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import mutagen
from mutagen.flac import FLAC, FLACNoHeaderError, Picture

from flac2all.audio import flacstream
from flac2all.errors import TaskError, describe_oserror
from flac2all.model import AudioInfo, SourceFacts, Track

PROVENANCE_KEY = "FLAC2ALL_SOURCE"


@dataclass(frozen=True)
class SourceMeta:
    """What one FLAC source carries besides its audio."""

    info: AudioInfo
    md5: int  # STREAMINFO audio MD5 (0 when the encoder did not set it)
    comments: tuple[tuple[str, str], ...]  # (key as written, value), in file order
    pictures: tuple[Picture, ...]
    # Where the FLAC stream starts: past an ID3v2 tag or junk, or at a
    # frame (no STREAMINFO); flacstream.locate.
    start: flacstream.Start = flacstream.Start(0, 0)


# What a track of a split source does not take of its source's comments,
# besides the keys its CUE sheet sets: the whole's numbering and sheet.
WHOLE_ONLY = frozenset({"TRACKNUMBER", "TRACKTOTAL", "TOTALTRACKS", "CUESHEET"})


def track_comments(comments: Iterable[tuple[str, str]], track: Track) -> tuple[tuple[str, str], ...]:
    """A split source's comments for one of its tracks: the CUE sheet's
    tags over the source's own (a key the sheet sets loses the source's
    values), without the whole's numbering and sheet."""
    replaced = WHOLE_ONLY | {key.upper() for key, _ in track.tags}
    return tuple((k, v) for k, v in comments if k.upper() not in replaced) + track.tags


def for_track(meta: SourceMeta, track: Track, md5: int = 0) -> SourceMeta:
    """The metadata of one track of a split source: its comments
    (``track_comments``; the pictures carried), its length, and the MD5 of
    its samples (0: not known)."""
    comments = track_comments(meta.comments, track)
    info = replace(meta.info, length=track.samples / meta.info.sample_rate)
    return replace(meta, info=info, md5=md5, comments=comments)


def tags_hash(comments: Iterable[tuple[str, str]]) -> str:
    h = hashlib.sha256()
    for key, value in comments:
        h.update(f"{key}={value}".encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:32]


def pictures_hash(pictures: Iterable[Picture]) -> str:
    h = hashlib.sha256()
    for pic in pictures:
        h.update(f"{pic.type}\0{pic.mime}\0{pic.desc}\0{len(pic.data)}\0".encode("utf-8", "surrogatepass"))
        h.update(pic.data)
    return h.hexdigest()[:32]


def facts_of(meta: SourceMeta, st: os.stat_result) -> SourceFacts:
    """What the state records of a source (``st`` taken before reading it)."""
    return SourceFacts(
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        audio_md5=f"{meta.md5:032x}" if meta.md5 else "",
        tags_hash=tags_hash(meta.comments),
        pictures_hash=pictures_hash(meta.pictures),
    )


def provenance(facts: SourceFacts, settings_hash: str) -> str:
    """The FLAC2ALL_SOURCE tag written into each output: enough to adopt the
    output again if the state database is lost."""
    return f"v1 md5={facts.audio_md5} settings={settings_hash} tags={facts.tags_hash} pictures={facts.pictures_hash}"


def with_provenance(meta: SourceMeta, facts: SourceFacts, settings_hash: str) -> SourceMeta:
    """``meta`` with the provenance tag of an output made with these settings."""
    return replace(meta, comments=(*meta.comments, (PROVENANCE_KEY, provenance(facts, settings_hash))))


def read_source_facts(path: Path) -> tuple[SourceMeta, SourceFacts]:
    """A source's metadata and the facts the state records of it; the stat
    comes first, so a source changed while we work looks changed next run."""
    try:
        st = regular_stat(path)  # a FIFO or a link to /dev/zero named x.flac: said as such
    except OSError as exc:
        raise TaskError(f"cannot read source: {describe_oserror(exc)}") from None
    meta = read_source(path, st)
    return meta, facts_of(meta, st)


# What is never read as a source: reading a FIFO blocks until a writer comes.
UNREAD_TYPES = {stat.S_IFIFO: "FIFO", stat.S_IFSOCK: "socket", stat.S_IFDIR: "folder"}


def read_source(path: Path, st: os.stat_result | None = None) -> SourceMeta:
    """Read STREAMINFO, comments and pictures of a FLAC file (``st``: its
    stat if already taken).

    The stream may start after an ID3v2 tag (whose fields fill in missing
    comments) or other bytes, or at a frame without any metadata
    (``flacstream.locate``). Raises TaskError naming the cause for a file
    that is missing, unreadable or not FLAC.
    """
    try:
        st = path.stat() if st is None else st
        kind = stat.S_IFMT(st.st_mode)
        if kind in UNREAD_TYPES:
            raise TaskError(f"not a regular file ({UNREAD_TYPES[kind]})")
        # (A device has no size: what it gives is read, as far as locate reads.)
        if stat.S_ISREG(st.st_mode) and st.st_size == 0:
            raise TaskError("not a FLAC file (empty, 0 bytes)")
        start = flacstream.locate(path)
        if start is None:
            raise TaskError("not a FLAC file (no fLaC header)")
        meta = headerless(start) if start.headerless else read_flac(path, start)
    except OSError as exc:
        raise TaskError(f"cannot read source: {describe_oserror(exc)}") from None
    if start.id3_size:
        from flac2all.tags.id3_prefix import merged  # tags.id3 imports this module

        comments, pictures = merged(meta.comments, meta.pictures, path)
        meta = replace(meta, comments=comments, pictures=pictures)
    return meta


def read_flac(path: Path, start: flacstream.Start) -> SourceMeta:
    """The metadata blocks of a stream that starts with ``fLaC``, by mutagen."""
    try:
        if start.offset:
            with flacstream.Window(path, start.offset) as window:
                flac = FLAC(window)
        else:
            flac = FLAC(path)
    except FLACNoHeaderError:
        raise TaskError("not a FLAC file (no fLaC header)") from None
    except mutagen.MutagenError as exc:
        cause = exc.args[0] if exc.args else exc
        if isinstance(cause, OSError):
            raise TaskError(f"cannot read source: {describe_oserror(cause)}") from None
        raise TaskError(f"unreadable FLAC metadata: {cause}") from None
    si = flac.info
    if si.sample_rate <= 0 or si.channels <= 0:
        raise TaskError("not a valid FLAC file (bad STREAMINFO)")
    info = AudioInfo(
        sample_rate=si.sample_rate,
        channels=si.channels,
        bits_per_sample=si.bits_per_sample,
        length=si.length,
    )
    # A provenance tag is ours to write, never carried over from a source.
    comments = tuple((k, v) for k, v in (flac.tags or ()) if k.upper() != PROVENANCE_KEY)
    return SourceMeta(info, si.md5_signature, comments, tuple(flac.pictures), start)


def headerless(start: flacstream.Start) -> SourceMeta:
    """A stream that starts with a frame: its format from the frame header,
    its length unknown (0) until decoded, no MD5, no comments."""
    if start.frame is None:
        raise TaskError("not a FLAC file it can decode (no STREAMINFO, and its frames refer to one)")
    fmt = start.frame
    return SourceMeta(AudioInfo(fmt.sample_rate, fmt.channels, fmt.bits_per_sample, 0.0), 0, (), (), start)


class Comments:
    """The source's comments grouped by upper-cased key, order kept.

    Vorbis comment names are case-insensitive; the upper-case form is the
    one written into TXXX frames and freeform atoms (as Picard does).
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.values: dict[str, list[str]] = {}
        for key, value in pairs:
            self.values.setdefault(key.upper(), []).append(value)

    def first(self, *keys: str) -> str | None:
        for key in keys:
            if self.values.get(key):
                return self.values[key][0]
        return None


def number_pair(comments: Comments, number_key: str, total_keys: tuple[str, ...]) -> tuple[int, int] | None:
    """(n, N) from e.g. TRACKNUMBER=3 and TRACKTOTAL=12, or TRACKNUMBER=3/12.

    N is 0 when unknown; None when there is no usable number at all.
    """
    raw = comments.first(number_key)
    if raw is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*(?:/\s*(\d+)\s*)?", raw)
    if not m:
        return None
    total = m.group(2) or comments.first(*total_keys) or "0"
    total = total.strip()
    return int(m.group(1)), int(total) if total.isdigit() else 0


TRACK_TOTAL_KEYS = ("TRACKTOTAL", "TOTALTRACKS")
DISC_TOTAL_KEYS = ("DISCTOTAL", "TOTALDISCS")
# Keys consumed by a combined number (TRCK/TPOS, trkn/disk) rather than mapped alone.
NUMBER_KEYS = {"TRACKNUMBER", "DISCNUMBER", *TRACK_TOTAL_KEYS, *DISC_TOTAL_KEYS}


FOLDER_ART_NAMES = ("cover", "folder", "front")
FOLDER_ART_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
FRONT_COVER = 3


# A FLAC metadata block holds less than 16 MiB: larger art fits no output.
MAX_ART = 16 * 1024 * 1024 - 1024


FILE_TYPES = {
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "FIFO",
    stat.S_IFSOCK: "socket",
    stat.S_IFDIR: "folder",
}


def not_regular(st: os.stat_result) -> TaskError | None:
    """Why a file is not read (None: it is a regular file)."""
    if stat.S_ISREG(st.st_mode):
        return None
    kind = FILE_TYPES.get(stat.S_IFMT(st.st_mode), "special file")
    return TaskError(f"not a regular file ({kind})")


def open_regular(path: os.PathLike | str) -> BinaryIO:
    """``path`` opened for reading, if it is a regular file: OSError when it
    cannot be opened, TaskError when it is something else. O_NONBLOCK: a
    FIFO cannot block the open; fstat: a device (a link to /dev/zero) is
    never read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if (problem := not_regular(os.fstat(fd))) is not None:
            raise problem
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return open(fd, "rb")


def regular_stat(path: os.PathLike | str) -> os.stat_result:
    """The stat of ``path`` if it is a regular file (errors as
    ``open_regular``), taken before a reader (mutagen, flac) opens it by
    name: no open more per source."""
    st = os.stat(path)
    if (problem := not_regular(st)) is not None:
        raise problem
    return st


def read_regular(path: Path, limit: int = MAX_ART) -> bytes | None:
    """The content of a regular file of at most ``limit`` bytes, else None
    (a link to /dev/zero or a FIFO named cover.jpg is never read)."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            return f.read(size) if size <= limit else None
    except (OSError, TaskError):
        return None


def with_folder_art(meta: SourceMeta, folder: Path) -> SourceMeta:
    """The source's metadata plus cover.jpg/folder.jpg/front.jpg (or .png)
    from its folder as front cover, when it has no embedded front cover."""
    if any(p.type == FRONT_COVER for p in meta.pictures):
        return meta
    try:
        names = {p.name.lower(): p for p in folder.iterdir()}
    except OSError:
        return meta
    for stem in FOLDER_ART_NAMES:
        for ext, mime in FOLDER_ART_TYPES.items():
            path = names.get(stem + ext)
            if path is None:
                continue
            data = read_regular(path)
            if data is None:
                continue
            pic = Picture()
            pic.type, pic.mime, pic.desc, pic.data = FRONT_COVER, mime, "", data
            return replace(meta, pictures=(pic, *meta.pictures))
    return meta


def parse_provenance(values: list[str]) -> dict[str, str] | None:
    """The fields of a FLAC2ALL_SOURCE value (the first one), or None."""
    if not values or not values[0].startswith("v1 "):
        return None
    return dict(part.split("=", 1) for part in values[0].split()[1:] if "=" in part)


# Vorbis comment -> the name Picard gives it in a TXXX frame (ID3) and in a
# ----:com.apple.iTunes:<name> atom (MP4).
PICARD_NAMES = {
    "MUSICBRAINZ_ALBUMID": "MusicBrainz Album Id",
    "MUSICBRAINZ_ARTISTID": "MusicBrainz Artist Id",
    "MUSICBRAINZ_ALBUMARTISTID": "MusicBrainz Album Artist Id",
    "MUSICBRAINZ_RELEASEGROUPID": "MusicBrainz Release Group Id",
    "MUSICBRAINZ_RELEASETRACKID": "MusicBrainz Release Track Id",
    "MUSICBRAINZ_WORKID": "MusicBrainz Work Id",
    "MUSICBRAINZ_DISCID": "MusicBrainz Disc Id",
    "MUSICBRAINZ_ORIGINALALBUMID": "MusicBrainz Original Album Id",
    "MUSICBRAINZ_ORIGINALARTISTID": "MusicBrainz Original Artist Id",
    "MUSICBRAINZ_TRMID": "MusicBrainz TRM Id",
    "RELEASESTATUS": "MusicBrainz Album Status",
    "RELEASETYPE": "MusicBrainz Album Type",
    "RELEASECOUNTRY": "MusicBrainz Album Release Country",
    "ACOUSTID_ID": "Acoustid Id",
    "ACOUSTID_FINGERPRINT": "Acoustid Fingerprint",
    "MUSICIP_PUID": "MusicIP PUID",
}
