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

import struct
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from mutagen.ogg import OggPage

from flac2all.audio.loudness import EXTRA, Loudness, available
from flac2all.model import OpusGain, ReplayGain
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


def for_opus(
    source: list[tuple[str, str]], r128: list[tuple[str, str]], mode: OpusGain
) -> tuple[list[tuple[str, str]], int | None]:
    """An Opus output's comments under ``mode`` (``r128``: ``source`` with
    its ReplayGain comments made R128 gains, vorbis.opus_comments), and the
    OpusHead output gain to set (Q7.8 dB), None to leave it as the encoder
    wrote it (the caller sets 0 where an earlier --opus-gain header left
    another). RFC 7845: a player applies the header gain, then an R128 gain
    on top of it, so with the header holding the album gain the R128 gains
    are what is left: R128_ALBUM_GAIN 0, R128_TRACK_GAIN track - album."""
    if mode is OpusGain.BOTH:
        return r128 + [(k, v) for k, v in source if k.upper() in (TRACK_GAIN, TRACK_PEAK, ALBUM_GAIN, ALBUM_PEAK)], None
    values = {k.upper(): v for k, v in r128 if k.upper() in ("R128_TRACK_GAIN", "R128_ALBUM_GAIN")}
    if mode is OpusGain.R128 or not values:
        return r128, None
    try:
        header = int(values.get("R128_ALBUM_GAIN", values.get("R128_TRACK_GAIN", "")))
    except ValueError:
        return r128, None
    out = []
    for key, value in r128:
        if key.upper() in values:
            try:
                value = str(max(-32768, min(32767, int(value) - header)))
            except ValueError:
                pass
        out.append((key, value))
    return out, header


def header_modes(modes: Iterable[str]) -> set[str]:
    """Those of ``modes`` whose outputs are Opus files, with an OpusHead
    output gain that --opus-gain decides."""
    from flac2all import codecs

    return {mode for mode in modes if codecs.resolve(mode).extension == ".opus"}


def output_gain(path: Path) -> int:
    """The output gain (Q7.8 dB) in the OpusHead of the Opus file at
    ``path``; 0 when its first page is not an OpusHead alone."""
    with open(path, "rb") as f:
        page = OggPage(f)
    packet = page.packets[0] if len(page.packets) == 1 and page.complete else b""
    if not packet.startswith(b"OpusHead") or len(packet) < 19:
        return 0
    return struct.unpack_from("<h", packet, 16)[0]


def set_output_gain(path: Path, gain: int) -> bool:
    """Write ``gain`` (Q7.8 dB) into the OpusHead of the Opus file at
    ``path``, in place (the page keeps its size; its checksum is made
    anew). False, leaving the file as it was, when the first page is not
    an OpusHead alone."""
    with open(path, "r+b") as f:
        page = OggPage(f)
        packet = page.packets[0] if len(page.packets) == 1 and page.complete else b""
        if not packet.startswith(b"OpusHead") or len(packet) < 19:
            return False
        page.packets[0] = packet[:16] + struct.pack("<h", gain) + packet[18:]
        data = page.write()
        if len(data) != page.size:
            return False
        f.seek(page.offset)
        f.write(data)
    return True


def record_in_analysis(path: Path, loudness: Loudness) -> None:
    """Append ``loudness`` to the test mode's analysis at ``path`` (flac's
    per-frame analysis, or ffmpeg's frame checksums: a comment there)."""
    if loudness.integrated is None:
        line = f"# loudness: none (silent, or shorter than 400 ms) true_peak={peak_text(loudness.peak)}"
    else:
        line = (
            f"# loudness: integrated={loudness.integrated:.2f} LUFS true_peak={peak_text(loudness.peak)}"
            f" replaygain_track_gain={gain_text(loudness.integrated)}"
        )
    with open(path, "a", encoding="ascii") as f:
        f.write(line + "\n")
