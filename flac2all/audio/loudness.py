"""Loudness of decoded PCM as ITU-R BS.1770-4 / EBU R128 measure it:
integrated loudness with its absolute (-70 LUFS) and relative (-10 LU)
gates, and the true peak (the samples oversampled 4x below 96 kHz, 2x below
192 kHz, as libebur128 does).

A ``Meter`` is fed the PCM bytes the tap sees, chunk by chunk, and keeps a
bounded state: the K-weighting filters' memory, the last three 100 ms
sub-blocks, and a histogram of the 400 ms block loudnesses in 0.01 LU bins.
That histogram is what a track's ``Loudness`` carries (sparse: a few KB), so
that tracks measured on different hosts gate together as one album
(``album``): the album's integrated loudness is gated over all the blocks of
all its tracks, not averaged from track values. Binning moves a result by
less than 0.01 dB from gating every block exactly.

numpy and scipy do the work (``pip install 'flac2all[loudness]'``); they are
imported when a Meter is made, never by importing this module, and of scipy
only the filter loop the meter runs (``section_filter``).
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ABSOLUTE_GATE = -70.0  # LUFS
RELATIVE_GATE = -10.0  # LU below the loudness of the blocks above the absolute gate
OFFSET = -0.691  # BS.1770's constant, so that a 997 Hz full-scale sine reads -3.01 LUFS
BIN = 0.01  # LU per histogram bin
BINS = 10_000  # -70 .... +30 LUFS; louder blocks (impossible below 8 channels of square waves) go in the last
SURROUND = 10 ** (1.5 / 10)  # BS.1770's +1.5 dB for the surround channels (1.41)
TAPS = 49  # the oversampling filter's length (libebur128's)
NEAR = 4  # the taps of a phase applied in full to bound an interpolated value (the rest by their magnitudes)
SLACK = 1e-5  # of the largest sample: more than float32 rounding can move a value or its bound
EXTRA = "install flac2all[loudness] (numpy and scipy) to measure loudness"


def available() -> bool:
    """Whether numpy and scipy are there to measure with."""
    try:
        section_filter()
    except ImportError:
        return False
    return True


KERNEL = "scipy.signal._sosfilt"  # the compiled loop behind scipy.signal.sosfilt
LOADING = threading.Lock()  # an extension module loads once a process: two slots' first meters at once would not


@functools.cache
def section_filter() -> Callable[[Any, Any, Any], None]:
    """scipy's second-order-sections filter loop, ``run(sos, x, zi)``:
    filters ``x`` (signals x samples, C order) in place, its state ``zi``
    (signals x sections x 2) carried along, as scipy.signal.sosfilt does
    after checking its arguments. Loaded alone, once a process: importing
    scipy.signal imports most of scipy (0.9 s of CPU, what the meter takes
    for eight minutes of audio) for this one loop (0.03 s). Where scipy
    keeps it elsewhere, the public sosfilt does the same. An ImportError
    without scipy."""
    # OpenBLAS starts a thread a core when numpy loads it (0.06 s of CPU,
    # what a minute of audio costs the meter) and wakes them all for each
    # product: the meter's are small, one thread does them sooner.
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import scipy

    with LOADING:
        kernel = getattr(sys.modules.get(KERNEL) or loaded_alone(Path(scipy.__file__).parent), "_sosfilt", None)
    return kernel if kernel is not None and works(kernel) else public_section_filter


def works(kernel: Callable[[Any, Any, Any], None]) -> bool:
    """Whether ``kernel`` (a private function of scipy's) is still called as
    ``section_filter`` calls it: a one-pole filter, y[n] = x[n] + y[n-1] / 2,
    fed an impulse in two calls."""
    import numpy as np

    sos = np.array([[1, 0, 0, 1, -0.5, 0]], dtype=np.float32)
    state = np.zeros((1, 1, 2), dtype=np.float32)
    first, second = np.array([[1, 0]], dtype=np.float32), np.zeros((1, 2), dtype=np.float32)
    try:
        kernel(sos, first, state)
        kernel(sos, second, state)
    except (TypeError, ValueError):
        return False
    return first.tolist() == [[1, 0.5]] and second.tolist() == [[0.25, 0.125]]


def loaded_alone(scipy: Path) -> Any:
    """scipy.signal's filter loop module loaded from ``scipy``'s folder
    without scipy.signal, and registered as loaded; None where it is not."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for path in sorted((scipy / "signal").glob("_sosfilt.*")):
        if not path.name.endswith(suffixes):
            continue
        loader = importlib.machinery.ExtensionFileLoader(KERNEL, str(path))
        spec = importlib.util.spec_from_file_location(KERNEL, str(path), loader=loader)
        if spec is None:
            continue
        module = importlib.util.module_from_spec(spec)
        try:
            loader.exec_module(module)
        except ImportError:
            continue
        # registered, so that a later import of scipy.signal finds it
        # loaded rather than loading it a second time
        sys.modules[KERNEL] = module
        return module
    return None


def public_section_filter(sos: Any, x: Any, zi: Any) -> None:
    """``section_filter``'s loop through scipy.signal.sosfilt."""
    import numpy as np
    from scipy.signal import sosfilt

    x[...], after = sosfilt(sos, x, axis=-1, zi=np.moveaxis(zi, 0, 1))
    zi[...] = np.moveaxis(after, 0, 1)


def channel_weights(channels: int) -> tuple[float, ...]:
    """BS.1770's weight of each channel in FLAC's (WAVE's) channel order: the
    front ones 1, the low-frequency effects channel (the fourth of 6, 7 or 8)
    0, the surround, back and side ones +1.5 dB (as ffmpeg's ebur128 filter
    weighs them)."""
    if channels <= 3:
        return (1.0,) * channels
    if channels == 4:  # FL FR BL BR
        return (1.0, 1.0, SURROUND, SURROUND)
    if channels == 5:  # FL FR FC BL BR
        return (1.0, 1.0, 1.0, SURROUND, SURROUND)
    # FL FR FC LFE, then back and side channels
    return (1.0, 1.0, 1.0, 0.0) + (SURROUND,) * (channels - 4)


def k_weighting(rate: int) -> list[list[float]]:
    """The K-weighting filter at ``rate`` as two second-order sections (the
    high shelf of the head, then the high-pass), designed from BS.1770's
    analog prototype as libebur128 does, so any rate gets the same curve."""
    f0, gain, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / rate)
    vh = 10 ** (gain / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [
        (vh + vb * k / q + k * k) / a0,
        2 * (k * k - vh) / a0,
        (vh - vb * k / q + k * k) / a0,
        1.0,
        2 * (k * k - 1) / a0,
        (1 - k / q + k * k) / a0,
    ]
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / rate)
    a0 = 1 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return [shelf, highpass]


def oversampling(rate: int) -> tuple[int, list[float]]:
    """The true-peak oversampling factor at ``rate`` and its interpolation
    filter (a Hann-windowed sinc, libebur128's)."""
    factor = 4 if rate < 96000 else 2 if rate < 192000 else 1
    taps = []
    for j in range(TAPS):
        m = j - (TAPS - 1) / 2
        c = math.sin(m * math.pi / factor) / (m * math.pi / factor) if m else 1.0
        taps.append(c * 0.5 * (1 - math.cos(2 * math.pi * j / (TAPS - 1))))
    return factor, taps


def polyphase(np: Any, factor: int, taps: list[float], history: int) -> tuple[Any, list[list[int]], list[float]]:
    """The oversampling filter split into its ``factor`` phases, as the
    weights of the ``history + 1`` latest samples (oldest first) that make
    each interpolated value: ``bank[phase]``; per phase, its ``NEAR``
    largest weights' places and the sum of the magnitudes of the others
    (what bounds a value's part that those places leave out)."""
    bank = np.zeros((factor, history + 1), dtype=np.float32)
    for phase in range(factor):
        for k in range(history + 1):
            if phase + k * factor < len(taps):
                bank[phase, history - k] = taps[phase + k * factor]
    near, tails = [], []
    for weights in bank.astype(np.float64):
        order = [int(w) for w in np.argsort(-np.abs(weights), kind="stable")]
        # A phase whose weights' magnitudes sum to 1 (the samples themselves,
        # to within 1e-15) never makes a value above the samples' own peak.
        kept = [w for w in order[:NEAR] if abs(weights[w]) > 1e-9] if np.abs(weights).sum() > 1 + 1e-9 else []
        near.append(sorted(kept))
        tails.append(float(np.abs(weights).sum() - np.abs(weights[kept]).sum()))
    return bank, near, tails


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

    The samples are filtered in single precision (what the filters' C loops
    do fastest; it moves a loudness by less than 0.001 dB), the energies
    summed in double precision."""

    def __init__(self, rate: int, channels: int, width: int, floating: bool = False) -> None:
        try:
            run = section_filter()
            import numpy as np

        except ImportError as e:
            raise RuntimeError(EXTRA) from e
        if not (1 <= channels <= 8 and 1000 <= rate <= 768000 and width in (1, 2, 3, 4)) or (floating and width != 4):
            raise ValueError(f"cannot measure {channels} channels of {width}-byte samples at {rate} Hz")
        self.np, self.run = np, run
        self.rate, self.channels, self.width, self.floating = rate, channels, width, floating
        self.frame = width * channels
        self.carry = b""  # the bytes of a frame split between two chunks
        self.sos = np.array(k_weighting(rate), dtype=np.float32)
        self.state = np.zeros((channels, 2, 2), dtype=np.float32)
        self.weights = np.array(channel_weights(channels), dtype=np.float32)
        self.step = (rate + 5) // 10  # samples in 100 ms (libebur128's rounding)
        self.partial = np.zeros(0)  # weighted squares of the current, unfinished 100 ms
        self.recent = np.zeros(0)  # the energy sums of the last three whole 100 ms
        self.histogram = np.zeros(BINS, dtype=np.int64)
        self.factor, taps = oversampling(rate)
        self.history = -(-(TAPS - 1) // self.factor)  # input samples an interpolated one depends on
        self.past = np.zeros((channels, self.history), dtype=np.float32)
        self.peak = 0.0
        self.bank, self.near, self.tails = polyphase(np, self.factor, taps, self.history)
        self.weights64 = self.bank.astype(np.float64).T.copy()

    def __call__(self, chunk: bytes) -> None:
        np = self.np
        data = self.carry + chunk if self.carry else chunk
        whole = len(data) - len(data) % self.frame
        self.carry = bytes(data[whole:])
        if not whole:
            return
        lanes = np.ascontiguousarray(self.decode(memoryview(data)[:whole]).reshape(-1, self.channels).T)
        filtered = lanes.copy()
        self.run(self.sos, filtered, self.state)
        self.add_energy(np.einsum("c,cn->n", self.weights, np.square(filtered, out=filtered)))
        self.add_peak(lanes)

    def decode(self, data: memoryview) -> Any:
        """The samples in ``data`` as single-precision floats, full scale 1.0."""
        np = self.np
        if self.floating:
            return np.frombuffer(data, dtype="<f4").astype(np.float32)
        if self.width == 1:
            return (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128) * np.float32(1 / 128)
        if self.width == 3:
            raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3)
            wide = np.zeros((len(raw), 4), dtype=np.uint8)
            wide[:, 1:] = raw  # into the top three bytes of an int32: the sign comes along
            integers = wide.view("<i4").ravel()
        else:
            integers = np.frombuffer(data, dtype="<i2" if self.width == 2 else "<i4")
        scale = np.float32(1 / 2 ** (8 * (4 if self.width == 3 else self.width) - 1))
        return integers.astype(np.float32) * scale

    def add_energy(self, squares: Any) -> None:
        """Turns weighted squared samples into 100 ms sums, those into the
        400 ms blocks (each 100 ms after the last), and those into the
        histogram."""
        np = self.np
        if len(self.partial):
            squares = np.concatenate((self.partial, squares))
        done = len(squares) - len(squares) % self.step
        self.partial = squares[done:].copy()
        if not done:
            return
        sums = squares[:done].reshape(-1, self.step).sum(axis=1, dtype=np.float64)
        sums = np.concatenate((self.recent, sums))
        self.recent = sums[-3:].copy()
        if len(sums) < 4:
            return
        energy = np.lib.stride_tricks.sliding_window_view(sums, 4).sum(axis=1) / (4 * self.step)
        energy = energy[energy >= 10 ** ((ABSOLUTE_GATE - OFFSET) / 10)]
        if not len(energy):
            return
        index = np.floor((OFFSET + 10 * np.log10(energy) - ABSOLUTE_GATE) / BIN).astype(np.int64)
        self.histogram += np.bincount(np.clip(index, 0, BINS - 1), minlength=BINS)

    def add_peak(self, lanes: Any) -> None:
        """The largest magnitude of the samples and of the samples
        interpolated ``factor`` times, each interpolated value made once
        whatever the chunks: the last samples of a chunk are kept for the
        next chunk's first values, as a zero history is for the first.
        ``lanes``: a row of samples a channel.

        Only the interpolated values that could exceed the peak known so
        far are made: a value is bounded by its phase's few largest taps
        applied to its samples plus the sum of the magnitudes of the other
        taps times the chunk's largest sample, and where that bound is no
        more than the peak (the samples' own peak bounds the true one from
        below) the value cannot change the result. Exact, not an estimate;
        on music it leaves about one value in a hundred to make."""
        np = self.np
        self.peak = max(self.peak, float(np.abs(lanes).max()))
        if self.factor == 1:
            return
        joined = np.concatenate((self.past, lanes), axis=1)  # one flat index for a window's start
        self.past = joined[:, -self.history :]
        count, length = lanes.shape[1], joined.shape[1]
        largest = float(np.abs(joined).max())
        wanted = np.zeros((self.channels, count), dtype=bool)
        short, term, over = (np.empty((self.channels, count), dtype=t) for t in (np.float32, np.float32, bool))
        for phase, taps in enumerate(self.near):
            if not taps:
                continue
            np.multiply(joined[:, taps[0] : taps[0] + count], self.bank[phase, taps[0]], out=short)
            for w in taps[1:]:
                np.add(short, np.multiply(joined[:, w : w + count], self.bank[phase, w], out=term), out=short)
            # float32 rounding of the short sum and of the value itself stays far below this slack
            np.greater(np.abs(short, out=short), self.peak - (self.tails[phase] + SLACK) * largest, out=over)
            wanted |= over
        found = np.flatnonzero(wanted)
        if not len(found):
            return
        starts = found // count * length + found % count
        windows = np.take(joined, starts[:, None] + np.arange(self.history + 1)).astype(np.float64)
        # In double precision, rounded to single at the end: what order the
        # product sums in cannot change the peak, whatever the chunks.
        values = windows @ self.weights64
        self.peak = max(self.peak, float(np.float32(np.abs(values).max())))

    def result(self) -> Loudness:
        """The measurement of what was fed so far."""
        bins = self.np.flatnonzero(self.histogram)
        counts = self.histogram[bins]
        histogram = dict(zip(bins.tolist(), counts.tolist(), strict=True))
        return Loudness(gated(histogram), self.peak, tuple(bins.tolist()), tuple(counts.tolist()))
