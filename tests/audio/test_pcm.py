"""The PCM tap between decoder and encoder."""

from __future__ import annotations

import hashlib
import struct

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
