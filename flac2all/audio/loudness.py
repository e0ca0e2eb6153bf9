"""Loudness of decoded PCM as ITU-R BS.1770-4 / EBU R128 measure it:
integrated loudness with its absolute (-70 LUFS) and relative (-10 LU)
gates, and the true peak (the samples oversampled 4x below 96 kHz, 2x below
192 kHz, as libebur128 does; ``filters``).

A ``Meter`` is fed the PCM bytes the tap sees, chunk by chunk, and keeps a
bounded state: the K-weighting filters' memory, the last three 100 ms
sub-blocks, and a histogram of the 400 ms block loudnesses in 0.01 LU bins.
That histogram is what a track's ``Loudness`` carries (sparse: a few KB), so
that tracks measured on different hosts gate together as one album
(``album``): the album's integrated loudness is gated over all the blocks of
all its tracks, not averaged from track values. Binning moves a result by
less than 0.01 dB from gating every block exactly.

The per-sample work (decoding, filtering, the 100 ms sums, the true peak) is
done by the C loop built with flac2all (``cmeter``), else by numpy and scipy
(``npmeter``, ``pip install 'flac2all[loudness]'``); this module imports
neither until a Meter is made.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from flac2all.audio import cmeter, npmeter

ABSOLUTE_GATE = -70.0  # LUFS
RELATIVE_GATE = -10.0  # LU below the loudness of the blocks above the absolute gate
OFFSET = -0.691  # BS.1770's constant, so that a 997 Hz full-scale sine reads -3.01 LUFS
BIN = 0.01  # LU per histogram bin
BINS = 10_000  # -70 .... +30 LUFS; louder blocks (impossible below 8 channels of square waves) go in the last
GATE_ENERGY = 10 ** ((ABSOLUTE_GATE - OFFSET) / 10)  # a block's mean square at the absolute gate
# The lowest rate measured: the K-weighting's shelf (centred at 1.7 kHz) is
# unstable once the rate puts it near Nyquist (below about 3.4 kHz).
LOWEST_RATE = 8000
EXTRA = (
    "the meter's C loop is not there (it is built when flac2all is installed where a C compiler is): "
    "install flac2all[loudness] (numpy and scipy) to measure loudness"
)


class Engine(Protocol):
    """What does a Meter's per-sample work: ``cmeter.CMeter`` or ``npmeter.NumpyMeter``."""

    peak: float

    def __init__(self, rate: int, channels: int, width: int, floating: bool, step: int) -> None: ...

    def feed(self, data: bytes, frames: int) -> list[float]: ...


ENGINES: tuple[type[Engine], ...] = (cmeter.CMeter, npmeter.NumpyMeter)  # the first that can be made


def available() -> bool:
    """Whether loudness can be measured here: the C loop was built, or numpy
    and scipy are there."""
    if cmeter.kernel() is not None:
        return True
    try:
        npmeter.section_filter()
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Loudness:
    """One track's (or one album's) measurement.

    ``integrated`` in LUFS, None when no 400 ms block passes the gates (a
    silent or a too short track); ``peak`` the true peak, linear (1.0 is
    full scale); ``bins`` and ``counts`` the histogram of the block
    loudnesses above the absolute gate (bin i holds the blocks from
    -70 + i/100 LUFS up to the next bin), what an album is gated over."""

    integrated: float | None
    peak: float
    bins: tuple[int, ...] = ()
    counts: tuple[int, ...] = ()

    @property
    def blocks(self) -> int:
        return sum(self.counts)

    def to_wire(self) -> dict[str, Any]:
        """Plain JSON/msgpack-able fields, for the state and the wire."""
        return {"integrated": self.integrated, "peak": self.peak, "bins": list(self.bins), "counts": list(self.counts)}

    @classmethod
    def from_wire(cls, data: Any) -> Loudness:
        """The inverse of ``to_wire``; a ValueError if ``data`` is not one."""
        try:
            bins = tuple(int(b) for b in data["bins"])
            counts = tuple(int(c) for c in data["counts"])
            peak = float(data["peak"])
            integrated = None if data["integrated"] is None else float(data["integrated"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a loudness measurement: {e}") from None
        if (
            len(bins) != len(counts)
            or any(not 0 <= b < BINS for b in bins)
            or any(c <= 0 for c in counts)
            or list(bins) != sorted(set(bins))
            or not (math.isfinite(peak) and peak >= 0)
            or (integrated is not None and not math.isfinite(integrated))
        ):
            raise ValueError("not a loudness measurement: bad histogram or value")
        return cls(integrated, peak, bins, counts)


def gated(histogram: dict[int, int]) -> float | None:
    """The integrated loudness (LUFS) of the blocks in ``histogram`` (bin ->
    count, all above the absolute gate) after the relative gate; None if
    there are none. Each block counts at its bin's centre."""
    if not histogram:
        return None
    histogram = dict(sorted(histogram.items()))  # the same sums in the same order, whatever order the tracks came in
    energies = {b: 10 ** ((ABSOLUTE_GATE + (b + 0.5) * BIN - OFFSET) / 10) for b in histogram}
    total = sum(histogram.values())
    mean = sum(energies[b] * n for b, n in histogram.items()) / total
    threshold = OFFSET + 10 * math.log10(mean) + RELATIVE_GATE
    kept = [b for b in histogram if ABSOLUTE_GATE + (b + 0.5) * BIN > threshold]
    count = sum(histogram[b] for b in kept)
    if not count:
        return None
    return OFFSET + 10 * math.log10(sum(energies[b] * histogram[b] for b in kept) / count)


def album(tracks: Iterable[Loudness]) -> Loudness:
    """One measurement for ``tracks`` together: gated over all their blocks,
    the loudest of their peaks."""
    histogram: dict[int, int] = {}
    peak = 0.0
    for track in tracks:
        peak = max(peak, track.peak)
        for b, n in zip(track.bins, track.counts, strict=True):
            histogram[b] = histogram.get(b, 0) + n
    bins = tuple(sorted(histogram))
    return Loudness(gated(histogram), peak, bins, tuple(histogram[b] for b in bins))


class Meter:
    """Measures a stream of interleaved little-endian PCM fed in chunks of
    any size: ``width`` bytes a sample (1 is unsigned, as in WAV; 2, 3 and 4
    signed; 4 with ``floating`` is IEEE float), ``channels`` channels at
    ``rate`` Hz. ``result()`` at any point gives the measurement so far.
    ``engines``: what may do the per-sample work, the first that can;
    a RuntimeError if none can."""

    def __init__(
        self, rate: int, channels: int, width: int, floating: bool = False, engines: Iterable[type[Engine]] = ENGINES
    ) -> None:
        if not (1 <= channels <= 8 and LOWEST_RATE <= rate <= 768000 and width in (1, 2, 3, 4)) or (
            floating and width != 4
        ):
            raise ValueError(f"cannot measure {channels} channels of {width}-byte samples at {rate} Hz")
        self.frame = width * channels
        self.carry = b""  # the bytes of a frame split between two chunks
        self.step = (rate + 5) // 10  # samples in 100 ms (libebur128's rounding)
        self.recent: list[float] = []  # the energy sums of the last three whole 100 ms
        self.histogram: dict[int, int] = {}
        self.engine = made(engines, rate, channels, width, floating, self.step)

    def __call__(self, chunk: bytes) -> None:
        data = self.carry + chunk if self.carry else bytes(chunk)
        frames = len(data) // self.frame
        self.carry = data[frames * self.frame :]
        if frames:
            self.add(self.engine.feed(data, frames))

    def add(self, sums: list[float]) -> None:
        """Turns 100 ms energy sums into the 400 ms blocks (each 100 ms after
        the last), and those above the absolute gate into the histogram."""
        if not sums:
            return
        sums = self.recent + sums
        self.recent = sums[-3:]
        scale = 4 * self.step
        for i in range(len(sums) - 3):
            energy = (sums[i] + sums[i + 1] + sums[i + 2] + sums[i + 3]) / scale
            if GATE_ENERGY <= energy < math.inf:  # (not a NaN or an infinity, from float samples that are)
                b = min(BINS - 1, max(0, math.floor((OFFSET + 10 * math.log10(energy) - ABSOLUTE_GATE) / BIN)))
                self.histogram[b] = self.histogram.get(b, 0) + 1

    def result(self) -> Loudness:
        """The measurement of what was fed so far."""
        bins = tuple(sorted(self.histogram))
        counts = tuple(self.histogram[b] for b in bins)
        return Loudness(gated(self.histogram), self.engine.peak, bins, counts)


def made(engines: Iterable[type[Engine]], *args: Any) -> Engine:
    """The first of ``engines`` that can be made with ``args``."""
    for engine in engines:
        try:
            return engine(*args)
        except ImportError:
            continue
    raise RuntimeError(EXTRA)
