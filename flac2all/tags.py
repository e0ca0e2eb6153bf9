"""Tags and pictures: read a FLAC source, write any output's tags.

The source's Vorbis comments (every one, multi-valued, in order) and pictures
are read with mutagen; each output family gets exactly the mapped set,
replacing whatever its encoder wrote on its own. The mappings are data tables
(ID3 and MP4 follow MusicBrainz Picard's tag mapping); Ogg and FLAC outputs
get the Vorbis comments verbatim.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import mutagen
from mutagen import id3
from mutagen.flac import FLAC, FLACNoHeaderError, Picture
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4, MP4Cover, MP4FreeForm, MP4Tags
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

from flac2all.codecs.base import AudioInfo
from flac2all.errors import TaskError, describe_oserror
from flac2all.model import SourceFacts

PROVENANCE_KEY = "FLAC2ALL_SOURCE"


@dataclass(frozen=True)
class SourceMeta:
    """What one FLAC source carries besides its audio."""

    info: AudioInfo
    md5: int  # STREAMINFO audio MD5 (0 when the encoder did not set it)
    comments: tuple[tuple[str, str], ...]  # (key as written, value), in file order
    pictures: tuple[Picture, ...]


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


def with_provenance(meta: SourceMeta, value: str) -> SourceMeta:
    return replace(meta, comments=(*meta.comments, (PROVENANCE_KEY, value)))


# The mutagen types an output of each tag family can be: opening it with
# those alone skips mutagen's sniffing of every format it knows (most of the
# cost of opening a short file).
FAMILY_TYPES = {"id3": [MP3], "mp4": [MP4], "vorbis": [OggVorbis, OggOpus], "flac": [FLAC]}


def load(path: Path, family: str) -> mutagen.FileType | None:
    """An output file opened by mutagen as its tag family's type (any type
    for the family "none"); None if it is not one."""
    return mutagen.File(path, options=FAMILY_TYPES.get(family))


def read_provenance(path: Path) -> dict[str, str] | None:
    """The fields of an output's FLAC2ALL_SOURCE tag, or None."""
    try:
        audio = mutagen.File(path)
    except (mutagen.MutagenError, OSError):
        return None
    tags = getattr(audio, "tags", None)
    if tags is None:
        return None
    values: list = []
    if isinstance(tags, id3.ID3):
        values = [t for f in tags.getall("TXXX:" + PROVENANCE_KEY) for t in f.text]
    elif isinstance(tags, MP4Tags):
        values = [bytes(v).decode("utf-8", "replace") for v in tags.get("----:com.apple.iTunes:" + PROVENANCE_KEY, [])]
    elif hasattr(tags, "get"):
        values = tags.get(PROVENANCE_KEY) or []
    if not values or not values[0].startswith("v1 "):
        return None
    return dict(part.split("=", 1) for part in values[0].split()[1:] if "=" in part)


def read_source_facts(path: Path) -> tuple[SourceMeta, SourceFacts]:
    """A source's metadata and the facts the state records of it; the stat
    comes first, so a source changed while we work looks changed next run."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise TaskError(f"cannot read source: {describe_oserror(exc)}") from None
    meta = read_source(path, st.st_size)
    return meta, facts_of(meta, st)


def read_source(path: Path, size: int | None = None) -> SourceMeta:
    """Read STREAMINFO, comments and pictures of a FLAC file (``size``: its
    size if already known).

    Raises TaskError naming the cause for a file that is missing, unreadable
    or not FLAC.
    """
    try:
        if (path.stat().st_size if size is None else size) == 0:
            raise TaskError("not a FLAC file (empty, 0 bytes)")
        flac = FLAC(path)
    except FLACNoHeaderError:
        raise TaskError("not a FLAC file (no fLaC header)") from None
    except mutagen.MutagenError as exc:
        cause = exc.args[0] if exc.args else exc
        if isinstance(cause, OSError):
            raise TaskError(f"cannot read source: {describe_oserror(cause)}") from None
        raise TaskError(f"unreadable FLAC metadata: {cause}") from None
    except OSError as exc:
        raise TaskError(f"cannot read source: {describe_oserror(exc)}") from None
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
    return SourceMeta(info=info, md5=si.md5_signature, comments=comments, pictures=tuple(flac.pictures))


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


# --- ID3v2 (mp3) -------------------------------------------------------------

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
ID3_TXXX_NAMES = PICARD_NAMES  # the recording id goes to UFID instead
MUSICBRAINZ_UFID_OWNER = "http://musicbrainz.org"
ID3_TIMESTAMP = re.compile(r"\d{4}(-\d{2}(-\d{2}(T\d{2}(:\d{2}(:\d{2})?)?)?)?)?")
# Keys consumed by a combined frame (TRCK, TPOS) rather than mapped alone.
NUMBER_KEYS = {"TRACKNUMBER", "DISCNUMBER", *TRACK_TOTAL_KEYS, *DISC_TOTAL_KEYS}


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


def write_id3(path: Path, meta: SourceMeta, id3v23: bool = False) -> list[str]:
    tag = id3_tag(meta, id3v23)
    # Replaces any ID3 the encoder wrote; ID3v1 is never written.
    id3.ID3FileType(path).delete()
    tag.save(path, v2_version=3 if id3v23 else 4, v23_sep="/", v1=0)
    return []


# --- MP4 (m4a) ---------------------------------------------------------------

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
MP4_FREEFORM_NAMES = {**PICARD_NAMES, "MUSICBRAINZ_TRACKID": "MusicBrainz Track Id"}
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


def write_mp4(path: Path, meta: SourceMeta, id3v23: bool = False) -> list[str]:
    atoms, warnings = mp4_atoms(meta)
    mp4 = MP4(path)
    if mp4.tags is None:
        mp4.add_tags()
    mp4.tags.clear()
    mp4.tags.update(atoms)
    mp4.save()
    return warnings


# --- Vorbis comments (Ogg Vorbis, Opus, FLAC) --------------------------------

REPLAYGAIN_KEYS = (
    "REPLAYGAIN_TRACK_GAIN",
    "REPLAYGAIN_TRACK_PEAK",
    "REPLAYGAIN_ALBUM_GAIN",
    "REPLAYGAIN_ALBUM_PEAK",
    "REPLAYGAIN_REFERENCE_LOUDNESS",
)


def r128_gain(replaygain: str) -> str | None:
    """RFC 7845's R128 gain (Q7.8, relative to -23 LUFS) for a ReplayGain
    value like '-6.54 dB' (relative to -18 LUFS): ReplayGain minus 5 dB."""
    m = re.match(r"\s*([-+]?\d+(?:\.\d+)?)", replaygain)
    if not m:
        return None
    q78 = round((float(m.group(1)) - 5.0) * 256)
    return str(max(-32768, min(32767, q78)))


def opus_comments(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Opus outputs carry R128_*_GAIN, never REPLAYGAIN_* (RFC 7845 5.2.1)."""
    c = Comments(pairs)
    out = [(k, v) for k, v in pairs if k.upper() not in REPLAYGAIN_KEYS and not k.upper().startswith("R128_")]
    for scope in ("TRACK", "ALBUM"):
        rg = c.first(f"REPLAYGAIN_{scope}_GAIN")
        gain = r128_gain(rg) if rg is not None else None
        if gain is None:
            gain = c.first(f"R128_{scope}_GAIN")
        if gain is not None:
            out.append((f"R128_{scope}_GAIN", gain))
    return out


def write_vorbis(path: Path, meta: SourceMeta, id3v23: bool = False) -> list[str]:
    audio = load(path, "vorbis")
    if audio is None:
        raise TaskError("encoder output is not a readable Ogg file")
    if audio.tags is None:
        audio.add_tags()
    pairs = list(meta.comments)
    if type(audio).__name__ == "OggOpus":
        pairs = opus_comments(pairs)
    pairs += [("METADATA_BLOCK_PICTURE", base64.b64encode(p.write()).decode("ascii")) for p in meta.pictures]
    audio.tags.clear()
    audio.tags.extend(pairs)
    audio.save()
    return []


def write_flac(path: Path, meta: SourceMeta, id3v23: bool = False) -> list[str]:
    flac = FLAC(path)
    if flac.tags is None:
        flac.add_tags()
    flac.tags.clear()
    flac.tags.extend(meta.comments)
    flac.clear_pictures()
    for pic in meta.pictures:
        flac.add_picture(pic)
    flac.save()
    return []


WRITERS = {"id3": write_id3, "mp4": write_mp4, "vorbis": write_vorbis, "flac": write_flac}


def write_tags(path: Path, family: str, meta: SourceMeta, id3v23: bool = False) -> list[str]:
    """Replace the tags of ``path`` with the source's, mapped for ``family``.

    Returns warnings (for example a picture the format cannot hold).
    """
    writer = WRITERS.get(family)
    if writer is None:
        return []
    try:
        return writer(path, meta, id3v23)
    except mutagen.MutagenError as exc:
        raise TaskError(f"cannot write tags: {exc}") from None


FOLDER_ART_NAMES = ("cover", "folder", "front")
FOLDER_ART_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
FRONT_COVER = 3


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
            try:
                data = path.read_bytes()
            except OSError:
                continue
            pic = Picture()
            pic.type, pic.mime, pic.desc, pic.data = FRONT_COVER, mime, "", data
            return replace(meta, pictures=(pic, *meta.pictures))
    return meta


def mapping_markdown() -> str:
    """docs/tags.md, generated from the tables above (a test keeps the two
    equal): ``python -c 'import flac2all.tags as t; print(t.mapping_markdown(), end="")' > docs/tags.md``."""
    out = [
        "# Tag mapping",
        "",
        "Generated from the tables in `flac2all/tags.py` (MusicBrainz Picard's tag mapping);",
        "`tests/test_tags.py` checks that this file and the tables agree.",
        "",
        "Ogg Vorbis, Opus and FLAC outputs get the source's Vorbis comments verbatim (every key, every",
        "value, in order), except that Opus outputs get `R128_TRACK_GAIN`/`R128_ALBUM_GAIN` (Q7.8 dB",
        "relative to -23 LUFS: ReplayGain minus 5 dB) instead of `REPLAYGAIN_*` (RFC 7845). Pictures go to",
        "`METADATA_BLOCK_PICTURE` (Ogg) and PICTURE blocks (FLAC), every one with its type, MIME type and",
        "description.",
        "",
        "| Vorbis comment | ID3v2.4 (mp3) | MP4 (m4a) |",
        "|---|---|---|",
    ]
    rows: dict[str, list[str]] = {}

    def cell(key: str, column: int, text: str) -> None:
        rows.setdefault(key, ["", ""])[column] = text

    for key, frame in ID3_TEXT_FRAMES.items():
        cell(key, 0, frame)
    for key, frame in ID3_DATE_FRAMES.items():
        cell(key, 0, f"{frame} (TXXX:{key} if not a date)")
    cell("COMMENT", 0, "COMM (lang eng)")
    cell("DESCRIPTION", 0, "COMM, or TXXX:DESCRIPTION beside a COMMENT")
    cell("LYRICS", 0, "USLT (lang eng)")
    cell("UNSYNCEDLYRICS", 0, "USLT (lang eng, description UNSYNCEDLYRICS)")
    cell("MUSICBRAINZ_TRACKID", 0, f"UFID:{MUSICBRAINZ_UFID_OWNER}")
    cell("WEBSITE", 0, "WOAR")
    for key, name in ID3_TXXX_NAMES.items():
        cell(key, 0, f"TXXX:{name}")
    cell("TRACKNUMBER, TRACKTOTAL/TOTALTRACKS", 0, "TRCK n/N")
    cell("DISCNUMBER, DISCTOTAL/TOTALDISCS", 0, "TPOS n/N")
    for key, atom in MP4_TEXT_ATOMS.items():
        cell(key, 1, atom.replace("\xa9", "©"))
    cell("COMPILATION", 1, "cpil")
    cell("BPM", 1, "tmpo")
    for key, name in MP4_FREEFORM_NAMES.items():
        cell(key, 1, f"----:com.apple.iTunes:{name}")
    cell("TRACKNUMBER, TRACKTOTAL/TOTALTRACKS", 1, "trkn (n, N)")
    cell("DISCNUMBER, DISCTOTAL/TOTALDISCS", 1, "disk (n, N)")
    cell("any other (REPLAYGAIN_*, ISRC in MP4, ...)", 0, "TXXX:<NAME>")
    cell("any other (REPLAYGAIN_*, ISRC in MP4, ...)", 1, "----:com.apple.iTunes:<NAME>")
    for key, (id3_cell, mp4_cell) in sorted(rows.items()):
        out.append(f"| {key} | {id3_cell or 'TXXX:' + key} | {mp4_cell or '----:com.apple.iTunes:' + key} |")
    out += [
        "| pictures | APIC (type, MIME, description; descriptions made unique) | covr (JPEG and PNG only;"
        " others skipped with a warning) |",
        "",
        "`--id3v2.3`: multiple values are joined with '/', TDRC becomes TYER/TDAT(/TIME), TDOR becomes TORY",
        "(plus TXXX:ORIGINALDATE for a full date), TMOO and TSST become TXXX:MOOD and TXXX:DISCSUBTITLE, and",
        "the sort frames TSOP/TSOA/TSOT stay, as Picard writes them.",
        "",
        "`--embed-folder-art`: a source without an embedded front cover gets cover.jpg, folder.jpg or",
        "front.jpg (or .png) from its folder as front cover.",
        "",
        f"Provenance: every tagged output also carries `{PROVENANCE_KEY}` (TXXX in ID3, a freeform atom in",
        "MP4, a comment in Ogg and FLAC) = `v1 md5=<source audio MD5> settings=<hash> tags=<hash>",
        "pictures=<hash>`, from which the mirror's state is rebuilt when its database is lost. It is never",
        "copied from a source.",
        "",
    ]
    return "\n".join(out)
