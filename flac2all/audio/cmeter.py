"""The loudness meter's per-sample work in one C loop (``_meter.c``, built
when flac2all is installed where there is a C compiler), called through
ctypes: one pass over each chunk, the GIL let go for it, no numpy. Where it
was not built, ``kernel()`` is None and ``npmeter`` does the work."""

from __future__ import annotations

import functools
import importlib.util
import weakref
from typing import TYPE_CHECKING

from flac2all.audio.filters import channel_weights, k_weighting, phases

if TYPE_CHECKING:
    import ctypes

MODULE = "flac2all.audio._meter"
ABI = 1  # _meter.c's meter_abi(): raised with any change of its functions' arguments


@functools.cache
def kernel() -> ctypes.CDLL | None:
    """The built C loop, its functions declared; None where it was not built
    or does not load. (ctypes is imported here: 2 ms that a run which
    measures nothing does not spend.)"""
    import ctypes

    try:
        spec = importlib.util.find_spec(MODULE)
    except ImportError:
        return None
    if spec is None or not spec.origin:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError:
        return None
    try:
        lib.meter_abi.restype = ctypes.c_int
        if lib.meter_abi() != ABI:  # built from another _meter.c (an editable install not rebuilt)
            return None
    except AttributeError:
        return None
    double_p, float_p = ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_float)
    lib.meter_new.restype = ctypes.c_void_p
    lib.meter_new.argtypes = [ctypes.c_int] * 3 + [ctypes.c_long, double_p, double_p, ctypes.c_int, ctypes.c_int]
    lib.meter_new.argtypes += [float_p, ctypes.c_int]
    lib.meter_feed.restype = ctypes.c_long
    lib.meter_feed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_long, double_p]
    lib.meter_peak.restype = ctypes.c_double
    lib.meter_peak.argtypes = [ctypes.c_void_p]
    lib.meter_free.restype = None
    lib.meter_free.argtypes = [ctypes.c_void_p]
    return lib


class CMeter:
    """The per-sample work of a ``loudness.Meter`` in the C loop: ``feed``
    whole frames, get the energy sums of the 100 ms it completed; ``peak``,
    the true peak so far. An ImportError where the loop was not built.
    ``wide``: interpolate with AVX2 where the processor has it (False: as
    on one without, for tests)."""

    def __init__(self, rate: int, channels: int, width: int, floating: bool, step: int, wide: bool = True) -> None:
        import ctypes

        lib = kernel()
        if lib is None:
            raise ImportError(f"{MODULE} was not built")
        self.lib, self.step, self.frame = lib, step, width * channels
        rows = phases(rate)
        length = len(rows[0]) if rows else 1
        sos = (ctypes.c_double * 12)(*(c for section in k_weighting(rate) for c in section))
        weights = (ctypes.c_double * channels)(*channel_weights(channels))
        bank = (ctypes.c_float * max(1, len(rows) * length))(*(w for row in rows for w in row))
        shape = (len(rows), length, bank, int(wide))
        self.handle = lib.meter_new(channels, width, int(floating), step, sos, weights, *shape)
        if not self.handle:
            raise MemoryError("the loudness meter")
        weakref.finalize(self, lib.meter_free, self.handle)
        self.sums = (ctypes.c_double * 0)()

    def feed(self, data: bytes, frames: int) -> list[float]:
        """The energy sums of the 100 ms that ``frames`` whole frames of
        ``data`` complete."""
        if len(data) < frames * self.frame:  # the loop reads that many bytes
            raise ValueError(f"{len(data)} bytes do not hold {frames} frames")
        room = frames // self.step + 1
        if len(self.sums) < room:
            self.sums = (self.sums._type_ * room)()
        made = self.lib.meter_feed(self.handle, data, frames, self.sums)
        if made < 0:
            raise MemoryError("the loudness meter")
        return self.sums[:made]

    @property
    def peak(self) -> float:
        """The true peak so far, linear."""
        return float(self.lib.meter_peak(self.handle))
