"""The PCM a decoder hands the encoders (WAV on a pipe), counted and hashed
on its way (``fanout.Fanout`` calls a ``Tap`` with every chunk).

A stream whose STREAMINFO does not give its length (total samples 0: a
stream encoded to a pipe) is measured by what its decoder wrote; one
without an MD5 (or decoded by ffmpeg) gets the MD5 flac would compute of
the same samples: signed, little-endian, in whole bytes of the real bit
depth, so that the flac mode's output can still be checked bit-exact. Pure:
nothing here starts a process.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from flac2all.audio.loudness import Loudness, Meter

UNBOUNDED = {0, 0xFFFFFFFF}  # data sizes a writer to a pipe puts in the header
MAX_HEADER = 64 * 1024
PCM, EXTENSIBLE = 1, 0xFFFE


@dataclass(frozen=True)
class WavFormat:
    rate: int
    channels: int
    container: int  # bytes per sample
    bits: int  # valid bits per sample
    integer: bool  # integer PCM (not float)

    @property
    def frame_size(self) -> int:
        return self.container * self.channels


def parse_header(data: bytes) -> tuple[WavFormat, int, int | None] | None:
    """(format, where the samples start, their declared size or None when
    unknown) of a WAV header at the start of ``data``; None until the whole
    header is there. Raises ValueError if it is not WAV."""
    if len(data) < 12:
        return None
    if data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise ValueError("not WAV")
    fmt: WavFormat | None = None
    i = 12
    while len(data) >= i + 8:
        chunk, size = data[i : i + 4], struct.unpack_from("<I", data, i + 4)[0]
        if chunk == b"data":
            if fmt is None:
                raise ValueError("no fmt chunk before the data")
            declared = None if size in UNBOUNDED or data[:4] == b"RF64" else size
            return fmt, i + 8, declared
        if len(data) < i + 8 + size:
            return None
        if chunk == b"fmt ":
            tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", data, i + 8)
            if tag == EXTENSIBLE and size >= 40:
                bits = struct.unpack_from("<H", data, i + 26)[0] or bits
                tag = struct.unpack_from("<H", data, i + 32)[0]
            if channels == 0 or align % channels:
                raise ValueError("bad fmt chunk")
            fmt = WavFormat(rate, channels, align // channels, bits, tag == PCM)
        i += 8 + size + (size & 1)
    return None


class FlacSamples:
    """Turns WAV sample bytes into the bytes flac's MD5 is computed over:
    8-bit WAV is unsigned (flac's samples are signed), and a depth below its
    container is stored shifted up (flac's is not)."""

    def __init__(self, fmt: WavFormat) -> None:
        self.size = fmt.container
        self.shift = fmt.container * 8 - fmt.bits
        self.unsigned = fmt.container == 1
        self.masks: dict[int, tuple[int, int]] = {}

    def __call__(self, data: bytes) -> bytes:
        if self.unsigned:
            data = data.translate(FLIP)
        if self.shift <= 0:
            return data
        # Every sample at once, as lanes of one big integer: shift each down
        # (its low bits are zeros, so no lane takes bits of its neighbour),
        # then set the top bits of the negative ones (the sign extension).
        sign, low = self.lane_masks(len(data))
        x = int.from_bytes(data, "little") & ~low
        negative = x & sign
        fill = (negative << 1) - (negative >> (self.shift - 1))
        return ((x >> self.shift) | fill).to_bytes(len(data), "little")

    def lane_masks(self, length: int) -> tuple[int, int]:
        if length not in self.masks:
            n = length // self.size
            sign = int.from_bytes((b"\x00" * (self.size - 1) + b"\x80") * n, "little")
            low = int.from_bytes(((1 << self.shift) - 1).to_bytes(self.size, "little") * n, "little")
            self.masks[length] = (sign, low)
        return self.masks[length]


FLIP = bytes(b ^ 0x80 for b in range(256))


class Tap:
    """Counts (and, with ``md5``, hashes; with ``loudness``, measures the
    loudness of) the samples of a WAV stream fed to it chunk by chunk.
    ``format`` is None until the header has passed, and for ever if the
    stream is not WAV (then nothing is measured)."""

    def __init__(self, md5: bool = False, loudness: bool = False) -> None:
        self.want_md5 = md5
        self.want_loudness = loudness
        self.meter: Meter | None = None
        self.format: WavFormat | None = None
        self.broken = False
        self.head = b""
        self.left: int | None = None  # sample bytes still expected, when the header said
        self.bytes = 0
        self.hash = hashlib.md5() if md5 else None
        self.convert: FlacSamples | None = None
        self.carry = b""  # the bytes of a sample split between two chunks

    def __call__(self, chunk: bytes) -> None:
        if self.broken:
            return
        if self.format is None:
            self.head += chunk
            try:
                parsed = parse_header(self.head)
            except ValueError:
                self.broken = True
                return
            if parsed is None:
                self.broken = len(self.head) > MAX_HEADER
                return
            self.format, start, self.left = parsed
            if self.hash is not None and self.format.integer and self.format.container <= 4:
                self.convert = FlacSamples(self.format)
            if self.want_loudness:
                self.meter = meter_for(self.format)
            chunk, self.head = self.head[start:], b""
        if self.left is not None:  # past the declared data: a pad byte, other chunks
            chunk = chunk[: self.left]
            self.left -= len(chunk)
        self.bytes += len(chunk)
        if self.meter is not None:
            self.meter(chunk)
        if self.convert is not None and self.hash is not None:
            data = self.carry + chunk
            whole = len(data) - len(data) % self.convert.size
            self.hash.update(self.convert(data[:whole]))
            self.carry = data[whole:]

    @property
    def frames(self) -> int | None:
        """Sample frames (one sample per channel) seen, None if unknown."""
        return None if self.format is None else self.bytes // self.format.frame_size

    @property
    def seconds(self) -> float | None:
        frames = self.frames
        return None if frames is None or not self.format or not self.format.rate else frames / self.format.rate

    @property
    def loudness(self) -> Loudness | None:
        """The loudness of the samples seen, None if not measured."""
        return None if self.meter is None else self.meter.result()

    @property
    def md5(self) -> int:
        """flac's MD5 of the samples seen, 0 when not computed."""
        if self.convert is None or self.hash is None or self.carry:
            return 0
        return int.from_bytes(self.hash.digest(), "big")


def meter_for(fmt: WavFormat) -> Meter | None:
    """A loudness meter for samples of ``fmt``; None for a format it does
    not read, or without numpy and scipy (then the track has no
    measurement: the runner says so)."""
    try:
        return Meter(fmt.rate, fmt.channels, fmt.container, floating=not fmt.integer)
    except (ValueError, RuntimeError):
        return None
