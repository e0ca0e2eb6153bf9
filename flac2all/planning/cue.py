"""CUE sheets: a whole-disc FLAC's tracks, read from a ``.cue`` file beside
it, from a CUESHEET Vorbis comment (foobar2000 writes one), or from the
FLAC's own CUESHEET metadata block. Pure (bytes and numbers in, tracks out)
but for ``read_tracks``, the planner's seam, which reads the files.

The text format (the commands that matter here): ``FILE "name" WAVE``,
``TRACK nn AUDIO``, ``INDEX 00|01 mm:ss:ff`` (75 frames a second),
``TITLE``, ``PERFORMER``, ``SONGWRITER``, ``ISRC``, ``CATALOG`` and
``REM DATE|GENRE|COMMENT``; ``FLAGS`` and the other commands are ignored.
Where an index falls is kept exactly (a Fraction of a second) until the
source's sample rate turns it into a sample (``frame * rate / 75``).

The pregap (INDEX 00 to INDEX 01) goes to the end of the previous track,
as gapless players expect (``PREVIOUS``), or to the start of its own
(``NEXT``); either way the tracks, end to end, are the whole source: the
first track starts at the first sample, the last ends at the last.
"""

from __future__ import annotations

import codecs
import io
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import PurePath
from typing import BinaryIO

from flac2all.errors import TaskError
from flac2all.model import Track

# The CUESHEET block's lead-out track: CD-DA's number, else 255.
LEAD_OUT = (170, 255)
PREVIOUS = "previous"  # the pregap ends the previous track
NEXT = "next"  # the pregap starts its own track
# Audio files a CUE may name for a FLAC made from them (a rip's WAV, a
# converted APE): the same stem with one of these extensions is the FLAC.
AUDIO_EXTENSIONS = frozenset({".flac", ".wav", ".wave", ".ape", ".wv", ".aiff", ".aif", ".tta"})
# Album-level commands -> the tags they give every track.
ALBUM_TAGS = {"TITLE": "ALBUM", "PERFORMER": "ALBUMARTIST", "CATALOG": "CATALOGNUMBER"}
REM_TAGS = {"DATE": "DATE", "GENRE": "GENRE", "COMMENT": "COMMENT"}
# Track-level commands -> the track's tags.
TRACK_TAGS = {"TITLE": "TITLE", "PERFORMER": "ARTIST", "SONGWRITER": "COMPOSER", "ISRC": "ISRC"}
TIME = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2})$")


class CueError(TaskError):
    """A CUE sheet that cannot be used for its FLAC: the album fails with it."""


@dataclass(frozen=True)
class CueTrack:
    """One ``TRACK`` as written: its indexes in seconds (exact) and tags."""

    number: int
    index1: Fraction
    index0: Fraction | None = None
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Sheet:
    """A parsed CUE sheet: the file it names (None: the FLAC's own block or
    comment), the album's tags and its tracks in order."""

    file: str | None
    tracks: tuple[CueTrack, ...]
    album: tuple[tuple[str, str], ...] = ()
    origin: str = "CUE sheet"  # how messages name it

    def names(self, source: PurePath) -> bool:
        """Whether the FILE it names is ``source``: the same name, or the
        same stem with another audio extension (the rip it was made from)."""
        if self.file is None:
            return True
        named = PurePath(self.file.replace("\\", "/")).name
        if named == source.name:
            return True
        named_path = PurePath(named)
        return named_path.stem == source.stem and named_path.suffix.lower() in AUDIO_EXTENSIONS

    def split(self, total: int, rate: int, pregap: str = PREVIOUS) -> tuple[Track, ...]:
        """The tracks as sample ranges of a source of ``total`` samples at
        ``rate`` Hz; CueError if an index is out of order or past the end."""
        if not self.tracks:
            raise CueError(f"{self.origin} has no track")
        starts: list[int] = []
        last = -1
        for track in self.tracks:
            one = sample(track.index1, rate)
            zero = one if track.index0 is None else sample(track.index0, rate)
            if zero > one:
                raise CueError(f"{self.origin}: track {track.number:02d}'s INDEX 00 is after its INDEX 01")
            if zero < last or one <= last:
                raise CueError(f"{self.origin}: track {track.number:02d} starts before the track before it ends")
            if one >= total:
                raise CueError(
                    f"{self.origin}: track {track.number:02d} starts at {clock(one, rate)},"
                    f" past the end of the audio ({clock(total, rate)})"
                )
            starts.append(one if pregap == PREVIOUS else zero)
            last = one
        starts[0] = 0  # anything before the first track's start (a hidden track) is its own
        ends = [*starts[1:], total]
        count = len(self.tracks)
        splits = []
        for track, start, end in zip(self.tracks, starts, ends, strict=True):
            numbers = (("TRACKNUMBER", str(track.number)), ("TRACKTOTAL", str(count)))
            splits.append(Track(track.number, start, end, merged_tags(self.album, track.tags) + numbers))
        return tuple(splits)


def sample(at: Fraction, rate: int) -> int:
    """The sample at ``at`` seconds: exact for CD frames at the rates
    75 divides (44.1, 48, 88.2, 96, 176.4, 192 kHz), else the one before."""
    return int(at * rate)


def clock(samples: int, rate: int) -> str:
    seconds = Fraction(samples, rate)
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}.{int((seconds - whole) * 100):02d}"


def merged_tags(album: tuple[tuple[str, str], ...], track: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The album's tags then the track's; the album's PERFORMER is the
    track's ARTIST when the track names none."""
    tags = list(album)
    if not any(k == "ARTIST" for k, _ in track):
        tags += [("ARTIST", v) for k, v in album if k == "ALBUMARTIST"]
    return (*tags, *track)


def decode_text(data: bytes, name: str, encoding: str | None = None) -> str:
    """The text of a CUE file: UTF-8 (with or without its BOM), UTF-16 with
    its BOM, else ``encoding`` (``--cue-encoding``); else CueError."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise CueError(f"CUE {name} is not valid UTF-16 though it starts as such") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if encoding is None:
        raise CueError(f"CUE {name} is not UTF-8; convert it or use --cue-encoding cp1251 (or its encoding)")
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError) as exc:
        raise CueError(f"CUE {name} cannot be read as {encoding}: {exc}") from None


def words(rest: str) -> list[str]:
    """A command's arguments: quoted strings whole, the others split on spaces."""
    out: list[str] = []
    rest = rest.strip()
    while rest:
        if rest.startswith('"'):
            end = rest.find('"', 1)
            if end < 0:
                out.append(rest[1:])
                break
            out.append(rest[1:end])
            rest = rest[end + 1 :].lstrip()
        else:
            word, _, rest = rest.partition(" ")
            out.append(word)
            rest = rest.lstrip()
    return out


def value(rest: str) -> str:
    """A command's one argument: quoted, or the rest of the line."""
    rest = rest.strip()
    if rest.startswith('"'):
        end = rest.find('"', 1)
        return rest[1:end] if end > 0 else rest[1:]
    return rest


def position(text: str, origin: str) -> Fraction:
    match = TIME.match(text)
    if match is None:
        raise CueError(f"{origin}: {text!r} is not a time mm:ss:ff")
    minutes, seconds, frames = (int(g) for g in match.groups())
    if seconds >= 60 or frames >= 75:
        raise CueError(f"{origin}: {text!r} is not a time mm:ss:ff (ss < 60, ff < 75)")
    return Fraction((minutes * 60 + seconds) * 75 + frames, 75)


def parse_text(text: str, origin: str = "CUE sheet") -> Sheet:
    """A CUE sheet's text -> Sheet; CueError when it cannot be split from:
    several FILEs (unless all name the same), a track without INDEX 01, a
    malformed time."""
    files: list[str] = []
    album: list[tuple[str, str]] = []
    tracks: list[CueTrack] = []
    current: dict | None = None

    def close() -> None:
        if current is None:
            return
        if current["index1"] is None:
            raise CueError(f"{origin}: track {current['number']:02d} has no INDEX 01")
        tracks.append(CueTrack(current["number"], current["index1"], current["index0"], tuple(current["tags"])))

    for line in text.splitlines():
        command, _, rest = line.strip().partition(" ")
        command = command.upper()
        if command == "FILE":
            args = words(rest)
            if args:
                name = args[0] if rest.strip().startswith('"') or len(args) < 2 else " ".join(args[:-1])
                files.append(name)
        elif command == "TRACK":
            close()
            args = words(rest)
            try:
                number = int(args[0])
            except (IndexError, ValueError):
                raise CueError(f"{origin}: {line.strip()!r} has no track number") from None
            audio = len(args) < 2 or args[1].upper() == "AUDIO"
            current = {"number": number, "index0": None, "index1": None, "tags": [], "audio": audio}
            if not audio:
                raise CueError(f"{origin}: track {number:02d} is not audio ({args[1]})")
        elif command == "INDEX" and current is not None:
            args = words(rest)
            if len(args) < 2:
                raise CueError(f"{origin}: {line.strip()!r} lacks its time")
            which = int(args[0]) if args[0].isdigit() else -1
            if which in (0, 1):
                current["index0" if which == 0 else "index1"] = position(args[1], origin)
        elif command == "REM":
            key, _, rest = rest.strip().partition(" ")
            if current is None and key.upper() in REM_TAGS and value(rest):
                album.append((REM_TAGS[key.upper()], value(rest)))
        elif current is not None and command in TRACK_TAGS and value(rest):
            current["tags"].append((TRACK_TAGS[command], value(rest)))
        elif current is None and command in ALBUM_TAGS and value(rest):
            album.append((ALBUM_TAGS[command], value(rest)))
    close()
    if len(set(files)) > 1:
        raise CueError(f"{origin} names {len(set(files))} files ({', '.join(dict.fromkeys(files))}); one is split")
    return Sheet(files[0] if files else None, tuple(tracks), tuple(album), origin)


def parse_file(data: bytes, name: str, encoding: str | None = None) -> Sheet:
    """A ``.cue`` file's bytes -> Sheet (see decode_text, parse_text)."""
    return parse_text(decode_text(data, name, encoding), f"CUE {name}")


def parse_block(block, rate: int) -> Sheet:
    """A FLAC CUESHEET metadata block (mutagen's ``CueSheet``): sample
    offsets, ISRCs and the catalog number, no titles."""
    tracks = []
    for track in block.tracks:
        if track.track_number in LEAD_OUT:
            continue
        if track.type != 0:
            raise CueError(f"the FLAC's CUESHEET block: track {track.track_number:02d} is not audio")
        index = {i.index_number: track.start_offset + i.index_offset for i in track.indexes}
        if 1 not in index:
            raise CueError(f"the FLAC's CUESHEET block: track {track.track_number:02d} has no index 01")
        zero = Fraction(index[0], rate) if 0 in index else None
        isrc = track.isrc.decode("ascii", "replace") if isinstance(track.isrc, bytes) else track.isrc
        tags = (("ISRC", isrc),) if isrc else ()
        tracks.append(CueTrack(track.track_number, Fraction(index[1], rate), zero, tags))
    catalog = block.media_catalog_number
    catalog = catalog.decode("ascii", "replace") if isinstance(catalog, bytes) else catalog
    album = (("CATALOGNUMBER", catalog),) if catalog else ()
    return Sheet(None, tuple(tracks), album, "the FLAC's CUESHEET block")


# The largest .cue file read (a sheet of 99 tracks is a few KiB).
MAX_CUE = 1 << 20


SHEET = ".cue"


def beside_text(source: str) -> tuple[str, str]:
    """Where a FLAC's own ``.cue`` file may be, for its path as text (it
    ends in .flac, in any case): named after it, with or without its
    extension (``Album.cue``, ``Album.flac.cue``). No Path made: the
    planner looks for one beside every source."""
    return (source[: -len(".flac")] + SHEET, source + SHEET)


# The metadata block types that may hold a FLAC's own sheet.
VORBIS_COMMENT_BLOCK, CUESHEET_BLOCK = 4, 5


def sheetless(f: BinaryIO) -> bool:
    """Whether the FLAC open in ``f`` plainly has no sheet of its own: it
    starts with ``fLaC`` and its metadata blocks, read to the last, hold
    neither a CUESHEET block nor a comment that could be named CUESHEET.
    False when unsure (another start, a block cut short): the full parse
    decides. Most FLACs have no sheet; this spares them that parse."""
    if f.read(4) != b"fLaC":
        return False
    while len(head := f.read(4)) == 4:
        kind, size = head[0] & 0x7F, int.from_bytes(head[1:], "big")
        if kind == CUESHEET_BLOCK:
            return False
        if kind == VORBIS_COMMENT_BLOCK:
            body = f.read(size)
            # (Every comment named CUESHEET holds these bytes, in some case.)
            if len(body) != size or b"cuesheet=" in body.lower():
                return False
        else:
            f.seek(size, io.SEEK_CUR)
        if head[0] & 0x80:
            return True
    return False


def read_tracks(source: PurePath, sheet_file: PurePath | None, encoding: str | None = None) -> tuple[Track, ...] | None:
    """The tracks of a FLAC source: from ``sheet_file`` (a ``.cue`` beside
    it), else from its CUESHEET comment, else from its CUESHEET block;
    None when it has none. CueError when the sheet does not fit the
    source (names another file, an index past its end...), or cannot be
    read. The one function here that reads files (the planner's seam)."""
    import mutagen  # noqa: PLC0415  (the pure part of the module needs none of it)
    from mutagen.flac import FLAC, CueSheet  # noqa: PLC0415

    from flac2all.tags.source import open_regular  # noqa: PLC0415

    try:
        with open_regular(source) as f:  # (a FIFO or a device named .flac is never read)
            if sheet_file is None and sheetless(f):
                return None
            f.seek(0)
            flac = FLAC(f)
    except (mutagen.MutagenError, OSError, TaskError):
        return None  # an unreadable source: its own task says why
    sheet: Sheet | None = None
    if sheet_file is not None:
        try:
            with open_regular(sheet_file) as f:
                data = f.read(MAX_CUE + 1)
        except OSError as exc:
            raise CueError(f"CUE {sheet_file.name} cannot be read: {exc.strerror}") from None
        except TaskError as exc:
            raise CueError(f"CUE {sheet_file.name} cannot be read: {exc.message}") from None
        if len(data) > MAX_CUE:
            raise CueError(f"CUE {sheet_file.name} is larger than a CUE sheet can be")
        sheet = parse_file(data, sheet_file.name, encoding)
        if not sheet.names(source):
            raise CueError(f"CUE {sheet_file.name} names {sheet.file}, not {source.name}")
    elif flac.tags is not None and (text := flac.tags.get("CUESHEET")):
        sheet = parse_text(text[0], "the FLAC's CUESHEET comment")
    else:
        block = next((b for b in flac.metadata_blocks if isinstance(b, CueSheet)), None)
        if block is not None:
            sheet = parse_block(block, flac.info.sample_rate)
    if sheet is None:
        return None
    if not flac.info.total_samples:
        raise CueError(f"{sheet.origin}: the FLAC does not say how long it is, so cannot be split")
    tracks = sheet.split(flac.info.total_samples, flac.info.sample_rate)
    return tracks if len(tracks) > 1 else None
