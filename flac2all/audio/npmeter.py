"""The loudness meter's per-sample work in numpy and scipy passes over each
chunk, where the C loop (``cmeter``) was not built: the samples filtered in
single precision (what the filters' C loops do fastest; it moves a loudness
by less than 0.001 dB) as a row a channel, their weighted squares summed per
100 ms in double precision, and the true peak.

Of scipy only the filter loop is loaded (``section_filter``); numpy and
scipy are imported when a meter is made, never by importing this module.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flac2all.audio.filters import channel_weights, k_weighting, phases

NEAR = 4  # the taps of a phase applied in full to bound an interpolated value (the rest by their magnitudes)
SLACK = 1e-5  # of the largest sample: more than float32 rounding can move a value or its bound

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


def bounds(rows: list[list[float]]) -> tuple[list[list[int]], list[float]]:
    """Per phase of ``rows`` (``filters.phases``), its ``NEAR`` largest
    weights' places and the sum of the magnitudes of the others (what bounds
    a value's part that those places leave out)."""
    near, tails = [], []
    for row in rows:
        kept = sorted(sorted(range(len(row)), key=lambda w: -abs(row[w]))[:NEAR])
        kept = [w for w in kept if abs(row[w]) > 1e-9]
        near.append(kept)
        tails.append(sum(abs(w) for w in row) - sum(abs(row[w]) for w in kept))
    return near, tails


class NumpyMeter:
    """The per-sample work of a ``loudness.Meter`` in numpy and scipy:
    ``feed`` whole frames, get the energy sums of the 100 ms it completed;
    ``peak``, the true peak so far. An ImportError without numpy or scipy."""

    def __init__(self, rate: int, channels: int, width: int, floating: bool, step: int) -> None:
        run = section_filter()
        import numpy as np

        self.np, self.run = np, run
        self.channels, self.width, self.floating, self.step = channels, width, floating, step
        self.frame = width * channels
        self.sos = np.array(k_weighting(rate), dtype=np.float32)
        self.state = np.zeros((channels, 2, 2), dtype=np.float32)
        self.weights = np.array(channel_weights(channels), dtype=np.float32)
        self.partial = np.zeros(0)  # weighted squares of the current, unfinished 100 ms
        rows = phases(rate)
        self.history = len(rows[0]) - 1 if rows else 0  # input samples an interpolated one depends on
        self.past = np.zeros((channels, self.history), dtype=np.float32)
        self.peak = 0.0
        self.bank = np.array(rows, dtype=np.float32).reshape(len(rows), self.history + 1)
        self.near, self.tails = bounds(rows)
        self.weights64 = self.bank.astype(np.float64).T.copy()

    def feed(self, data: bytes, frames: int) -> list[float]:
        np = self.np
        lanes = np.ascontiguousarray(self.decode(memoryview(data)[: frames * self.frame]).reshape(-1, self.channels).T)
        filtered = lanes.copy()
        self.run(self.sos, filtered, self.state)
        self.add_peak(lanes)
        return self.sums(np.einsum("c,cn->n", self.weights, np.square(filtered, out=filtered)))

    def sums(self, squares: Any) -> list[float]:
        """The energy sum of each 100 ms that ``squares`` (weighted squared
        samples) completes."""
        np = self.np
        if len(self.partial):
            squares = np.concatenate((self.partial, squares))
        done = len(squares) - len(squares) % self.step
        self.partial = squares[done:].copy()
        return squares[:done].reshape(-1, self.step).sum(axis=1, dtype=np.float64).tolist()

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
        if not self.near:
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
