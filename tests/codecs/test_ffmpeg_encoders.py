"""ffmpeg's encoder list, as f:ENC reads it."""

from __future__ import annotations

import subprocess

from flac2all.codecs import ffmpeg


def test_ffmpeg_encoder_names_are_lowercase():
    # f:ENC is matched case-insensitively by lowercasing, which ffmpeg only
    # accepts because it spells every encoder in lowercase.
    encoders = ffmpeg.audio_encoders()
    assert len(encoders) > 10
    assert all(name == name.lower() for name in encoders)
    proc = subprocess.run(["ffmpeg", "-hide_banner", "-h", "encoder=ALAC"], capture_output=True, text=True, timeout=30)
    assert "is not recognized" in proc.stdout + proc.stderr  # ffmpeg itself is case-sensitive
