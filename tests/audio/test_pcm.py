"""The PCM tap between decoder and encoder."""

from __future__ import annotations

import array
import hashlib
import math
import struct

import pytest

from flac2all.audio.pcm import Tap


def wav_header(rate: int, channels: int, bits: int, size: int) -> bytes:
    align = channels * ((bits + 7) // 8)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * align, align, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 0)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", size)
    )


def test_the_tap_counts_and_hashes_what_flows_in_any_chunks():
    samples = bytes(range(256)) * 7  # 8-bit: unsigned in WAV, signed in flac's MD5
    stream = wav_header(8000, 1, 8, len(samples)) + samples + b"\0"  # the pad byte after an odd size
    tap = Tap(md5=True)
    for i in range(0, len(stream), 5):
        tap(stream[i : i + 5])
    assert tap.frames == len(samples)
    assert tap.seconds == len(samples) / 8000
    assert tap.md5 == int.from_bytes(hashlib.md5(bytes(b ^ 0x80 for b in samples)).digest(), "big")
    unknown = Tap()
    unknown(b"this is no WAV header at all")
    assert unknown.frames is None and unknown.md5 == 0


def test_the_tap_measures_the_loudness_of_what_flows_when_asked():
    pytest.importorskip("scipy.signal")
    rate = 48000
    wave = array.array("h", (int(16384 * math.sin(2 * math.pi * 997 * i / rate)) for i in range(rate)))
    stereo = array.array("h", (s for s in wave for _ in range(2))).tobytes()  # 0.5 of full scale, both channels
    stream = wav_header(rate, 2, 16, len(stereo)) + stereo
    tap, plain = Tap(loudness=True), Tap()
    for i in range(0, len(stream), 1001):
        tap(stream[i : i + 1001])
        plain(stream[i : i + 1001])
    measured = tap.loudness
    assert measured is not None and plain.loudness is None
    assert measured.integrated == pytest.approx(-6.02, abs=0.02)  # BS.1770: -3.01 LUFS a full-scale channel
    assert measured.peak == pytest.approx(0.5, abs=0.001)
    assert tap.frames == plain.frames == rate
