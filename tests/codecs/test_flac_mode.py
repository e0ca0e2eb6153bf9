"""The flac mode's encoder settings."""

from __future__ import annotations

from flac2all.codecs.native import subset
from flac2all.model import AudioInfo


def test_flac_mode_lax_only_where_the_subset_ends():
    assert subset(AudioInfo(44100, 2, 16, 1.0)) and subset(AudioInfo(48000, 2, 32, 1.0))
    assert not subset(AudioInfo(44100, 2, 15, 1.0)) and not subset(AudioInfo(100001, 2, 16, 1.0))
