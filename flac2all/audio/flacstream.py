"""The FLAC bitstream, as far as flac2all reads it itself (RFC 9639).

Most sources start with ``fLaC`` and mutagen reads their metadata; this
module finds the stream in the others: after an ID3v2 tag or other bytes
some rippers put first, or a stream that starts directly with a frame (no
STREAMINFO: the audio's format is read from the frame header). It also
finds a second complete FLAC header further on (files joined end to end).
Pure functions of the file's bytes; nothing here starts a process.
"""

from __future__ import annotations

import io
import mmap
import re
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path

# How far past an ID3v2 tag the stream is looked for: junk longer than
# this makes a file that is not FLAC.
SCAN_LIMIT = 1024 * 1024
STREAMINFO_LENGTH = 34
FRAME_SYNC = re.compile(rb"\xff[\xf8\xf9]")
# 'fLaC', then a STREAMINFO block header (type 0, maybe marked last, 34 bytes).
MARKER = re.compile(rb"fLaC[\x00\x80]\x00\x00\x22", re.S)


@dataclass(frozen=True)
class Format:
    """The audio format a STREAMINFO or a frame header declares."""

    sample_rate: int
    channels: int
    bits_per_sample: int


@dataclass(frozen=True)
class Start:
    """Where the FLAC stream of a file starts."""

    offset: int  # bytes before it (an ID3v2 tag, junk)
    id3_size: int  # of those, the bytes of ID3v2 tags at the very start
    headerless: bool = False  # it starts with a frame: no STREAMINFO
    # The format its first frame declares (headerless only; None if that
    # frame refers to the missing STREAMINFO instead).
    frame: Format | None = None

    @property
    def junk(self) -> int:
        """Bytes before the stream that are not an ID3v2 tag."""
        return self.offset - self.id3_size


def table(poly: int, width: int) -> list[int]:
    top, mask = 1 << (width - 1), (1 << width) - 1
    rows = []
    for byte in range(256):
        crc = byte << (width - 8)
        for _ in range(8):
            crc = ((crc << 1) ^ poly) if crc & top else crc << 1
        rows.append(crc & mask)
    return rows


CRC8, CRC16 = table(0x07, 8), table(0x8005, 16)


def crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = CRC8[crc ^ byte]
    return crc


def crc16(data: bytes, crc: int = 0) -> int:
    """The frame footer's CRC-16 of ``data`` (``crc``: of the bytes before)."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ CRC16[(crc >> 8) ^ byte]
    return crc


RATES = {1: 88200, 2: 176400, 3: 192000, 4: 8000, 5: 16000, 6: 22050, 7: 24000, 8: 32000, 9: 44100, 10: 48000}
RATES[11] = 96000
BITS = {1: 8, 2: 12, 4: 16, 5: 20, 6: 24, 7: 32}


def frame_header(data: bytes, i: int) -> tuple[int, Format | None] | None:
    """(length, format) of a valid frame header at ``data[i:]`` (its CRC-8
    checked), else None. The format is None when the header refers to the
    STREAMINFO for the sample rate or the bit depth."""
    head = data[i : i + 16]
    if len(head) < 6 or head[0] != 0xFF or head[1] & 0xFE != 0xF8:
        return None
    size_code, rate_code = head[2] >> 4, head[2] & 0x0F
    assignment, bits_code = head[3] >> 4, (head[3] >> 1) & 0x07
    if size_code == 0 or rate_code == 15 or assignment > 10 or bits_code == 3 or head[3] & 1:
        return None
    # The coded frame or sample number: UTF-8's scheme, up to 7 bytes.
    first, n = head[4], 4
    extra = 0 if first < 0x80 else 8 - (~first & 0xFF).bit_length() - 1
    if (first >= 0x80 and not 1 <= extra <= 6) or first == 0xFF:
        return None
    if any(b & 0xC0 != 0x80 for b in head[n + 1 : n + 1 + extra]):
        return None
    n += 1 + extra
    n += {6: 1, 7: 2}.get(size_code, 0)
    rate: int | None = RATES.get(rate_code)
    if rate_code == 12:
        rate = head[n] * 1000
    elif rate_code in (13, 14):
        rate = int.from_bytes(head[n : n + 2], "big") * (1 if rate_code == 13 else 10)
    n += {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if len(head) <= n or crc8(head[:n]) != head[n]:
        return None
    bits = BITS.get(bits_code)
    channels = assignment + 1 if assignment < 8 else 2
    return n + 1, (Format(rate, channels, bits) if rate and bits else None)


def first_sample(data: bytes, i: int) -> int | None:
    """The number of the first sample of the frame whose valid header is at
    ``data[i:]`` (a fixed-blocksize stream codes the frame's number, times
    its block size: right for every frame but the stream's last, which may
    be shorter; a variable one codes the sample's), else None."""
    if frame_header(data, i) is None:
        return None
    head = data[i : i + 16]
    first = head[4]
    extra = 0 if first < 0x80 else 8 - (~first & 0xFF).bit_length() - 1
    number = first if not extra else first & ((1 << (6 - extra)) - 1)
    for b in head[5 : 5 + extra]:
        number = number << 6 | b & 0x3F
    if head[1] & 1:  # variable blocksize: the sample's number
        return number
    size_code, after = head[2] >> 4, 5 + extra
    if size_code == 1:
        size = 192
    elif size_code <= 5:
        size = 576 << (size_code - 2)
    elif size_code == 6:
        size = head[after] + 1
    elif size_code == 7:
        size = int.from_bytes(head[after : after + 2], "big") + 1
    else:
        size = 256 << (size_code - 8)
    return number * size


def last_frame_start(path: Path, rate: int, tail: int = 1024 * 1024) -> float | None:
    """Seconds into the audio where the last whole frame (its CRC-16 holds
    up to the next header: not a sync pattern met in the audio) in the
    file's last ``tail`` bytes starts: where a truncated file's audio
    ends, give or take a frame; None when none is found."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, io.SEEK_END) - tail))
            data = f.read()
    except OSError:
        return None
    for m in reversed(list(FRAME_SYNC.finditer(data))):
        sample = first_sample(data, m.start())
        if sample is not None and rate and frame_at(data, m.start(), at_end=False) is not None:
            return sample / rate
    return None


def frame_at(data: bytes, i: int, at_end: bool) -> tuple[int, Format | None] | None:
    """A whole valid frame at ``data[i:]``: a valid header whose CRC-16 holds
    up to the next valid header (or up to the end, when ``data`` runs to
    the end of the file). Returns its header as frame_header does."""
    header = frame_header(data, i)
    if header is None:
        return None
    ends = (m.start() for m in FRAME_SYNC.finditer(data, i + header[0]) if frame_header(data, m.start()))
    crc, done = 0, i
    for end in chain(islice(ends, 64), [len(data)] if at_end else []):
        crc, done = crc16(data[done:end], crc), end
        if crc == 0:
            return header
    return None


def streaminfo(block: bytes) -> Format | None:
    """The format in a STREAMINFO block's 34 bytes, or None if it is not one."""
    if len(block) < STREAMINFO_LENGTH:
        return None
    rate = block[10] << 12 | block[11] << 4 | block[12] >> 4
    channels = ((block[12] >> 1) & 0x07) + 1
    bits = ((block[12] & 1) << 4 | block[13] >> 4) + 1
    if rate == 0 or bits < 4:
        return None
    return Format(rate, channels, bits)


def id3_length(head: bytes) -> int:
    """The size of an ID3v2 tag starting ``head`` (header, body, footer), or 0."""
    if len(head) < 10 or head[:3] != b"ID3" or head[3] == 0xFF or any(b & 0x80 for b in head[6:10]):
        return 0
    size = head[6] << 21 | head[7] << 14 | head[8] << 7 | head[9]
    return 10 + size + (10 if head[5] & 0x10 else 0)


def locate(path: Path) -> Start | None:
    """Where the FLAC stream in ``path`` starts: at 0 for a normal file;
    past ID3v2 tags and up to SCAN_LIMIT other bytes; at a first frame when
    there is no ``fLaC`` header before it. None: no FLAC stream found."""
    with open(path, "rb") as f:
        head = f.read(10)
        if head[:4] == b"fLaC":
            return Start(0, 0)
        id3 = 0
        while size := id3_length(head):
            id3 += size
            f.seek(id3)
            head = f.read(10)
        f.seek(id3)
        window = f.read(SCAN_LIMIT + 1)
    at_end = len(window) <= SCAN_LIMIT
    window = window[:SCAN_LIMIT]
    marker = MARKER.search(window)
    for sync in FRAME_SYNC.finditer(window, 0, marker.start() if marker else len(window)):
        frame = frame_at(window, sync.start(), at_end)
        if frame is not None:
            return Start(id3 + sync.start(), id3, True, frame[1])
    if marker is not None and streaminfo(window[marker.end() :]) is not None:
        return Start(id3 + marker.start(), id3)
    return None


@dataclass(frozen=True)
class Header:
    """A complete FLAC header inside a file: ``fLaC`` at ``start``, its
    metadata blocks, its first frame at ``end``."""

    start: int
    end: int
    format: Format


def joined(path: Path, start: int) -> list[Header]:
    """The complete FLAC headers after ``start`` (the first stream's
    ``fLaC``): other files joined end to end to it."""
    with open(path, "rb") as f:
        try:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty
            return []
    with data:
        found = []
        for m in MARKER.finditer(data, start + 4):
            fmt = streaminfo(data[m.end() : m.end() + STREAMINFO_LENGTH])
            end = metadata_end(data, m.start() + 4)
            if fmt is not None and end is not None:
                found.append(Header(m.start(), end, fmt))
        return found


def metadata_end(data, i: int) -> int | None:
    """Where the metadata blocks starting at ``data[i]`` end, if the last
    one is marked last and ends within ``data``."""
    while i + 4 <= len(data):
        last, size = data[i] & 0x80, int.from_bytes(data[i + 1 : i + 4], "big")
        i += 4 + size
        if last:
            return i if i <= len(data) else None
    return None


VORBIS_COMMENT = 4


def comment_count(path: Path, start: int) -> int | None:
    """How many comments the Vorbis comment block of the stream at
    ``start`` declares, None without one."""
    with open(path, "rb") as f:
        f.seek(start + 4)
        while len(head := f.read(4)) == 4:
            kind, size = head[0] & 0x7F, int.from_bytes(head[1:], "big")
            if kind == VORBIS_COMMENT:
                vendor = int.from_bytes(f.read(4), "little")
                f.seek(vendor, io.SEEK_CUR)
                count = f.read(4)
                return int.from_bytes(count, "little") if len(count) == 4 else None
            if head[0] & 0x80:
                return None
            f.seek(size, io.SEEK_CUR)
    return None


def streaminfo_alone(path: Path, start: int) -> tuple[bytes, int] | None:
    """The header of the stream at ``start`` with its STREAMINFO alone
    (marked the last metadata block), and where its first frame starts:
    the stream as a decoder can take it whatever its other blocks hold."""
    with open(path, "rb") as f:
        try:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty
            return None
    with data:
        block = data[start + 8 : start + 8 + STREAMINFO_LENGTH]
        end = metadata_end(data, start + 4)
        if data[start : start + 4] != b"fLaC" or data[start + 4] & 0x7F or streaminfo(block) is None or end is None:
            return None
        return b"fLaC\x80" + STREAMINFO_LENGTH.to_bytes(3, "big") + block, end


def trailing_tags(path: Path) -> int | None:
    """Where the ID3v1 and APEv2 tags some taggers append after the last
    frame start, or None when the file ends without one."""
    with open(path, "rb") as f:
        end = f.seek(0, io.SEEK_END)
        start = end
        if end >= 128:
            f.seek(end - 128)
            if f.read(3) == b"TAG":
                start = end - 128
        if start >= 32:
            f.seek(start - 32)
            footer = f.read(32)
            if footer[:8] == b"APETAGEX":
                size, flags = int.from_bytes(footer[12:16], "little"), int.from_bytes(footer[20:24], "little")
                size += 32 if flags & 0x80000000 else 0  # its header, if it has one
                if 32 <= size <= start:
                    start -= size
    return start if start < end else None


class Window(io.RawIOBase):
    """A file seen from ``offset`` on, for a reader (mutagen) that expects
    the stream at position 0."""

    def __init__(self, path: Path, offset: int) -> None:
        super().__init__()
        self.file = open(path, "rb")  # closed with the window
        self.offset = offset
        self.name = str(path)
        self.file.seek(offset)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        return self.file.readinto(buffer)

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos += self.offset
        return self.file.seek(pos, whence) - self.offset

    def tell(self) -> int:
        return self.file.tell() - self.offset

    def close(self) -> None:
        self.file.close()
        super().close()
