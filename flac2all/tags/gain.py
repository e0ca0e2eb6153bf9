"""Gain tags: which an output gets (``--replaygain keep|fill|compute|off``)
and their values from a loudness measurement, as ReplayGain 2.0 writes them
(reference -18 LUFS: ``REPLAYGAIN_TRACK_GAIN=-6.54 dB``,
``REPLAYGAIN_TRACK_PEAK=0.988553``).

They are put among the source's comments (``with_gain``), so that each tag
family maps them as it maps every comment: verbatim into Vorbis comments,
``TXXX:REPLAYGAIN_*`` into ID3v2, the ``----:com.apple.iTunes:replaygain_*``
atoms Picard and foobar2000 write into MP4 (``MP4_NAMES``), and R128 gains
relative to -23 LUFS into Opus (vorbis.opus_comments). docs/tags.md has the
table.
"""

from __future__ import annotations

from dataclasses import replace

from flac2all.audio.loudness import EXTRA, Loudness, available
from flac2all.model import ReplayGain
from flac2all.tags.source import SourceMeta

REFERENCE = -18.0  # LUFS: ReplayGain 2.0's
TRACK_GAIN, TRACK_PEAK = "REPLAYGAIN_TRACK_GAIN", "REPLAYGAIN_TRACK_PEAK"
ALBUM_GAIN, ALBUM_PEAK = "REPLAYGAIN_ALBUM_GAIN", "REPLAYGAIN_ALBUM_PEAK"
# As Picard and foobar2000 name them in MP4: lower case, unlike other freeform names.
MP4_NAMES = {key: key.lower() for key in (TRACK_GAIN, TRACK_PEAK, ALBUM_GAIN, ALBUM_PEAK)}


def is_gain_key(key: str) -> bool:
    """Whether a comment is a gain tag (ReplayGain's or Opus's R128)."""
    upper = key.upper()
    return upper.startswith("REPLAYGAIN_") or upper in ("R128_TRACK_GAIN", "R128_ALBUM_GAIN")


def has_track_gain(meta: SourceMeta) -> bool:
    return any(key.upper() in (TRACK_GAIN, "R128_TRACK_GAIN") for key, _ in meta.comments)


def measures(policy: ReplayGain, meta: SourceMeta) -> bool:
    """Whether the source's decode is to be measured under ``policy``."""
    return policy is ReplayGain.COMPUTE or (policy is ReplayGain.FILL and not has_track_gain(meta))


def unmeasured(policy: ReplayGain, meta: SourceMeta, tapped: bool, loudness: Loudness | None) -> str:
    """A note for a result whose source was to be measured and was not
    (its outputs keep the source's gain tags), else ""."""
    if loudness is not None or not tapped or not measures(policy, meta):
        return ""
    if not available():
        return f"loudness not measured: {EXTRA}"
    return "loudness not measured: a sample format the meter does not read"


def gain_text(loudness: float) -> str:
    return f"{REFERENCE - loudness:.2f} dB"


def peak_text(peak: float) -> str:
    return f"{peak:.6f}"


def pairs(loudness: Loudness, scope: str = "TRACK") -> list[tuple[str, str]]:
    """The ReplayGain comments of a measurement (``scope`` TRACK or ALBUM):
    none for one without loudness (silence, shorter than 400 ms), whose
    gain would be infinite."""
    if loudness.integrated is None:
        return []
    return [
        (f"REPLAYGAIN_{scope}_GAIN", gain_text(loudness.integrated)),
        (f"REPLAYGAIN_{scope}_PEAK", peak_text(loudness.peak)),
    ]


def with_gain(
    meta: SourceMeta, policy: ReplayGain, track: Loudness | None, album: Loudness | None = None
) -> SourceMeta:
    """``meta`` with the gain comments ``policy`` gives its outputs: the
    source's (keep, or fill where it has a track gain), none (off), or the
    measured track gain and peak (compute, fill), and the album's when
    known, in place of the source's. Without a measurement (it failed) the
    source's stay."""
    if policy is ReplayGain.KEEP or (policy is ReplayGain.FILL and has_track_gain(meta)):
        return meta
    if policy is not ReplayGain.OFF and track is None:
        return meta
    kept = tuple((k, v) for k, v in meta.comments if not is_gain_key(k))
    added = () if track is None or policy is ReplayGain.OFF else tuple(pairs(track))
    if added and album is not None:
        added += tuple(pairs(album, "ALBUM"))
    return replace(meta, comments=kept + added)
