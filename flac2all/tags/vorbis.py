"""Vorbis comments: Ogg Vorbis and Opus outputs, and FLAC outputs.

They get the source's comments verbatim (every key, every value, in order),
except that Opus outputs get R128 gains instead of ReplayGain (RFC 7845).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mutagen.flac import FLAC
from mutagen.oggopus import OggOpus
from mutagen.oggvorbis import OggVorbis

from flac2all.model import Settings
from flac2all.tags import gain, ogg
from flac2all.tags.family import TagFamily, Tagged
from flac2all.tags.source import PROVENANCE_KEY, Comments, SourceMeta

REPLAYGAIN_KEYS = (
    "REPLAYGAIN_TRACK_GAIN",
    "REPLAYGAIN_TRACK_PEAK",
    "REPLAYGAIN_ALBUM_GAIN",
    "REPLAYGAIN_ALBUM_PEAK",
    "REPLAYGAIN_REFERENCE_LOUDNESS",
)


def r128_gain(replaygain: str) -> str | None:
    """RFC 7845's R128 gain (Q7.8, relative to -23 LUFS) for a ReplayGain
    value like '-6.54 dB' (relative to -18 LUFS): ReplayGain minus 5 dB."""
    m = re.match(r"\s*([-+]?\d+(?:\.\d+)?)", replaygain)
    if not m:
        return None
    q78 = round((float(m.group(1)) - 5.0) * 256)
    return str(max(-32768, min(32767, q78)))


def opus_comments(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Opus outputs carry R128_*_GAIN, never REPLAYGAIN_* (RFC 7845 5.2.1)."""
    c = Comments(pairs)
    out = [(k, v) for k, v in pairs if k.upper() not in REPLAYGAIN_KEYS and not k.upper().startswith("R128_")]
    for scope in ("TRACK", "ALBUM"):
        rg = c.first(f"REPLAYGAIN_{scope}_GAIN")
        gain = r128_gain(rg) if rg is not None else None
        if gain is None:
            gain = c.first(f"R128_{scope}_GAIN")
        if gain is not None:
            out.append((f"R128_{scope}_GAIN", gain))
    return out


class VorbisCommentFamily(TagFamily):
    """Files whose tags are a Vorbis comment block (mutagen's VCommentDict)."""

    def provenance_values(self, tags: Any) -> list[str]:
        return tags.get(PROVENANCE_KEY) or []


class OggFamily(VorbisCommentFamily):
    """Ogg Vorbis and Opus; pictures as METADATA_BLOCK_PICTURE comments."""

    name = "vorbis"
    types = (OggVorbis, OggOpus)

    def write(self, path: Path, meta: SourceMeta, settings: Settings, audio: Any = None) -> list[str]:
        return self.written(path, meta, settings, audio).warnings

    def written(self, path: Path, meta: SourceMeta, settings: Settings, audio: Any = None) -> Tagged:
        """The comment packet replaced in place (``ogg.replace_comment``);
        read back, the file is ``audio`` with its new tags."""
        audio = self.opened(path, audio)
        if audio.tags is None:
            audio.add_tags()
        pairs = list(meta.comments)
        header = None
        if isinstance(audio, OggOpus):
            pairs, header = gain.for_opus(pairs, opus_comments(pairs), settings.opus_gain)
            if header is None and gain.output_gain(path):  # a retag under another --opus-gain than the encode's
                header = 0
        pairs += [("METADATA_BLOCK_PICTURE", base64.b64encode(p.write()).decode("ascii")) for p in meta.pictures]
        del audio.tags[:]  # VCommentDict.clear removes one comment at a time: quadratic
        audio.tags.extend(pairs)
        if isinstance(audio, OggOpus):
            comment, headers = b"OpusTags" + audio.tags.write(framing=False), 1
        else:  # the Vorbis comment header, then the setup header
            comment, headers = b"\x03vorbis" + audio.tags.write(), 2
        replaced = ogg.replace_comment(path, comment, headers)
        if not replaced:
            audio.save()  # pages no encoder of ours lays out: mutagen's way
        if header is not None:  # the first page rewritten: the file is read anew to be checked
            if not gain.set_output_gain(path, header):
                warning = "the Opus header's output gain left as it was: its first page is not laid out as opusenc does"
                return Tagged([warning], None)
            return Tagged([], None)
        return Tagged([], audio if replaced is ogg.Replaced.READ_BACK else None)


class FlacFamily(VorbisCommentFamily):
    """FLAC outputs; pictures as PICTURE blocks."""

    name = "flac"
    types = (FLAC,)

    # libFLAC's decoder refuses a comment block of more than 100,000
    # comments (flac 1.4: "ERROR while decoding metadata"); a block holds
    # less than 16 MiB.
    max_comments = 100_000
    max_block = 2**24 - 1

    def write(self, path: Path, meta: SourceMeta, settings: Settings, audio: Any = None) -> list[str]:
        flac = self.opened(path, audio)
        if flac.tags is None:
            flac.add_tags()
        del flac.tags[:]  # VCommentDict.clear removes one comment at a time: quadratic
        flac.tags.extend(meta.comments)
        warnings = []
        if (limit := self.over_limit(flac.tags)) is not None:
            # Never the provenance tag that makes a file invalid: the state
            # still records what the output was made from.
            mine = [(k, v) for k, v in meta.comments if k != PROVENANCE_KEY]
            if len(mine) < len(meta.comments):
                warnings.append(f"provenance tag left out: {limit}")
            # Then the source's own comments, from the last, as many as it takes.
            kept = self.fitting(mine, flac.tags.vendor)
            if kept < len(mine):
                warnings.append(f"the last {len(mine) - kept} of its {len(mine)} comments left out: {limit}")
            del flac.tags[:]
            flac.tags.extend(mine[:kept])
        flac.clear_pictures()
        for pic in meta.pictures:
            flac.add_picture(pic)
        flac.save()
        return warnings

    def fitting(self, comments: list[tuple[str, str]], vendor: str) -> int:
        """How many of ``comments``, from the first, one comment block holds."""
        size = 8 + len(vendor.encode("utf-8"))
        for n, (k, v) in enumerate(comments[: self.max_comments]):
            size += 5 + len(k.encode("utf-8")) + len(v.encode("utf-8", "surrogatepass"))
            if size > self.max_block:
                return n
        return min(len(comments), self.max_comments)

    def over_limit(self, tags: Any) -> str | None:
        """Which of FLAC's limits a comment block breaks, if any."""
        if len(tags) > self.max_comments:
            return f"FLAC allows at most {self.max_comments} comments"
        if len(tags.write(framing=False)) > self.max_block:
            return "FLAC's comment block holds less than 16 MiB"
        return None


OGG = OggFamily()
FLAC_FAMILY = FlacFamily()
