"""The filters ITU-R BS.1770-4 measures loudness through, designed for any
sample rate as libebur128 designs them: the K-weighting (two second-order
sections), the channels' weights, and the true peak's oversampling filter
split into its phases. Plain numbers: both meters (``cmeter``, the C loop;
``npmeter``, numpy and scipy) are built from them."""

from __future__ import annotations

import math

SURROUND = 10 ** (1.5 / 10)  # BS.1770's +1.5 dB for the surround channels (1.41)
TAPS = 49  # the oversampling filter's length (libebur128's)


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
    high shelf of the head, then the high-pass), b0 b1 b2 a0 a1 a2 each,
    designed from BS.1770's analog prototype as libebur128 does, so any rate
    gets the same curve."""
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
    """The true-peak oversampling factor at ``rate`` (4 below 96 kHz, 2 below
    192 kHz, else none) and its interpolation filter (a Hann-windowed sinc,
    libebur128's)."""
    factor = 4 if rate < 96000 else 2 if rate < 192000 else 1
    taps = []
    for j in range(TAPS):
        m = j - (TAPS - 1) / 2
        c = math.sin(m * math.pi / factor) / (m * math.pi / factor) if m else 1.0
        taps.append(c * 0.5 * (1 - math.cos(2 * math.pi * j / (TAPS - 1))))
    return factor, taps


def phases(rate: int) -> list[list[float]]:
    """The oversampling filter at ``rate`` split into its phases: per phase,
    the weights of the latest samples (oldest first) that make each of its
    interpolated values. Only the phases that can make a value above the
    samples' own peak: not one whose weights' magnitudes sum to 1 (the
    samples themselves, to within 1e-15), as the first phase's do."""
    factor, taps = oversampling(rate)
    history = -(-(TAPS - 1) // factor)  # input samples an interpolated one depends on
    rows = []
    for phase in range(factor):
        row = [0.0] * (history + 1)
        for k in range(history + 1):
            if phase + k * factor < len(taps):
                row[history - k] = taps[phase + k * factor]
        if sum(abs(w) for w in row) > 1 + 1e-9:
            rows.append(row)
    return rows
