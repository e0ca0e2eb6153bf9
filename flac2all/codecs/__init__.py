"""The registry of output modes: name -> Codec.

Nothing outside this package branches on a codec's name; everything asks
the Codec record instead.
"""

from __future__ import annotations

from flac2all.codecs.base import AudioInfo, Codec
from flac2all.codecs.ffmpeg import AAC, audio_encoders, ffmpeg_codec
from flac2all.codecs.native import FLAC, MP3, OPUS, TEST, VORBIS
from flac2all.errors import UsageError

__all__ = ["AudioInfo", "Codec", "CODECS", "resolve", "parse_modes", "all_modes_help"]

CODECS: dict[str, Codec] = {c.name: c for c in (MP3, VORBIS, OPUS, AAC, FLAC, TEST)}
ALIASES = {"ogg": "vorbis", "aacplus": "aac"}
# Said once when an alias is used, so nobody is surprised by the result.
ALIAS_NOTES = {
    "aacplus": "note: 'aacplus' now means ffmpeg's native AAC encoder (mode 'aac', .m4a files)",
}


def resolve(name: str) -> Codec:
    """The codec for one mode name (``mp3``, ``ogg``, ``f:alac``...)."""
    name = name.strip()
    name = ALIASES.get(name, name)
    if name in CODECS:
        return CODECS[name]
    if name.startswith("f:") and len(name) > 2:
        codec = ffmpeg_codec(name[2:])
        if codec is not None:
            return codec
        if not audio_encoders():
            raise UsageError(f"mode '{name}' needs ffmpeg, which is not installed (Debian package: ffmpeg)")
        raise UsageError(
            f"unknown ffmpeg audio encoder in mode '{name}'; "
            "run 'ffmpeg -encoders' to list them (the lines starting with A)"
        )
    valid = ", ".join([*CODECS, *ALIASES, "all", "f:<ffmpeg audio encoder>"])
    raise UsageError(f"unknown mode '{name}'; valid modes are: {valid}")


def parse_modes(spec: str) -> tuple[tuple[Codec, ...], list[str]]:
    """Parse ``mp3,vorbis`` / ``all`` into codecs (in order, no duplicates)
    and the notes to show the user about aliases."""
    codecs: list[Codec] = []
    notes: list[str] = []
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UsageError("no mode given; for example: flac2all mp3,vorbis /path/to/music")
    for name in names:
        if name in ALIAS_NOTES:
            notes.append(ALIAS_NOTES[name])
        for codec in CODECS.values() if name == "all" else (resolve(name),):
            if codec not in codecs:
                codecs.append(codec)
    return tuple(codecs), notes


def all_modes_help() -> str:
    """The mode list for --help."""
    lines = [f"  {c.name:<8} {c.description}" for c in CODECS.values()]
    lines.append("  ogg      alias of vorbis")
    lines.append("  aacplus  alias of aac")
    lines.append("  f:ENC    any ffmpeg audio encoder ENC (see 'ffmpeg -encoders'), for example f:alac -> .m4a,")
    lines.append("           f:libopus -> .opus, f:pcm_s16le -> .wav; folder f_ENC (default options: -b:a 128k)")
    lines.append("  all      every mode above but the f: ones")
    return "\n".join(lines)
