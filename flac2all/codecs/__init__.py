"""The registry of output modes (name -> Codec) and of their encoders'
option families (name -> OptionFamily).

Nothing outside this package branches on a codec's name; everything asks
the Codec record instead. Adding an encoder is one record in this package:
a Codec subclass where its argv differs, an instance that declares its
facts and its options, and its line in CODECS. For example::

    @dataclass(frozen=True)
    class Speexenc(Codec):
        def encode_command(self, output, options):
            return ["speexenc", *options, "-", str(output)]

    SPEEX = Speexenc(name="speex", extension=".spx", description="Speex with speexenc",
                     programs=("flac", "speexenc"), tag_family=tags.NONE,
                     encoder_options=OptionFamily("speex", Syntax.DASHES, "quality=8", "speexenc options"))

and ``CODECS`` gets SPEEX: the mode, the ``--speex-options`` flag with its
default and --help line, the options in Settings and their check on the
cluster's wire all follow. (The program's Debian package goes in ``tools.PACKAGES``,
for the message shown when it is missing.)
"""

from __future__ import annotations

import difflib
import shlex

from flac2all.codecs.base import AudioInfo, Codec
from flac2all.codecs.ffmpeg import AAC, FFMPEG_OPTIONS, audio_encoders, ffmpeg_codec
from flac2all.codecs.native import FLAC, MP3, OPUS, TEST, VORBIS
from flac2all.codecs.options import OptionFamily, Syntax
from flac2all.errors import UsageError

__all__ = [
    "AudioInfo",
    "Codec",
    "CODECS",
    "OPTION_FAMILIES",
    "OptionFamily",
    "Syntax",
    "resolve",
    "parse_modes",
    "all_modes_help",
]

CODECS: dict[str, Codec] = {c.name: c for c in (MP3, VORBIS, OPUS, AAC, FLAC, TEST)}
# In the order of the modes, then the family of the f:ENC modes (which are
# made on demand, so none of them is in CODECS).
OPTION_FAMILIES: dict[str, OptionFamily] = {
    family.name: family
    for family in (*(c.encoder_options for c in CODECS.values()), FFMPEG_OPTIONS)
    if family is not None
}
ALIASES = {"ogg": "vorbis", "aacplus": "aac"}
# Said once when an alias is used, so nobody is surprised by the result.
ALIAS_NOTES = {
    "aacplus": "note: 'aacplus' now means ffmpeg's native AAC encoder (mode 'aac', .m4a files)",
}


def resolve(name: str) -> Codec:
    """The codec for one mode name (``mp3``, ``OGG``, ``f:alac``...).

    Case does not matter: a mode's name is lowercased, and so is an f:
    encoder's unless ffmpeg lists it in the case given (ffmpeg's encoder
    names are lowercase, and ffmpeg needs them as it lists them).
    """
    name = name.strip()
    if name[:2].lower() == "f:" and len(name) > 2:
        return ffmpeg_mode(name[2:])
    key = name.lower()
    key = ALIASES.get(key, key)
    if key in CODECS:
        return CODECS[key]
    valid = ", ".join([*CODECS, *ALIASES, "all", "f:<ffmpeg audio encoder>"])
    raise UsageError(f"unknown mode '{name}'{did_you_mean(key, [*CODECS, *ALIASES, 'all'])}; valid modes are: {valid}")


def ffmpeg_mode(encoder: str) -> Codec:
    """The codec of mode ``f:<encoder>``, the encoder's name matched as
    ffmpeg spells it."""
    encoders = audio_encoders()
    if encoder not in encoders:
        same = [e for e in encoders if e.lower() == encoder.lower()]
        if len(same) == 1:
            encoder = same[0]
    codec = ffmpeg_codec(encoder)
    if codec is not None:
        return codec
    if not encoders:
        from flac2all import tools  # here: planning imports this module, and tools starts programs

        raise UsageError(f"mode 'f:{encoder}' needs ffmpeg, which is not installed ({tools.install_hint(['ffmpeg'])})")
    hint = did_you_mean(encoder.lower(), list(encoders), prefix="f:")
    raise UsageError(
        f"unknown ffmpeg audio encoder in mode 'f:{encoder}'{hint}; "
        "run 'ffmpeg -encoders' to list them (the lines starting with A)"
    )


def did_you_mean(word: str, choices: list[str], prefix: str = "") -> str:
    """' (did you mean X?)' with the choice nearest to ``word``, or nothing
    when none is near."""
    nearest = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {prefix}{nearest[0]}?)" if nearest else ""


def parse_modes(spec: str) -> tuple[tuple[Codec, ...], list[str]]:
    """Parse ``mp3,vorbis`` / ``all`` (in any case) into codecs (in order,
    no duplicates) and the notes to show the user about aliases."""
    codecs: list[Codec] = []
    notes: list[str] = []
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise UsageError("no mode given; for example: flac2all mp3,vorbis /path/to/music")
    for name in names:
        key = name.lower()
        if key in ALIAS_NOTES and ALIAS_NOTES[key] not in notes:
            notes.append(ALIAS_NOTES[key])
        for codec in CODECS.values() if key == "all" else (resolve(name),):
            if codec not in codecs:
                codecs.append(codec)
    return tuple(codecs), notes


def all_modes_help() -> str:
    """The mode list for --help."""
    lines = [f"  {c.name:<8} {c.description}{defaults_note(c.default_options)}" for c in CODECS.values()]
    lines.append("  ogg      alias of vorbis")
    lines.append("  aacplus  alias of aac")
    lines.append("  f:ENC    any ffmpeg audio encoder ENC (see 'ffmpeg -encoders'), for example f:alac -> .m4a,")
    lines.append(
        "           f:libopus -> .opus, f:pcm_s16le -> .wav; folder f_ENC" + defaults_note(FFMPEG_OPTIONS.defaults)
    )
    lines.append("  all      every mode above but the f: ones")
    return "\n".join(lines)


def defaults_note(options: tuple[str, ...]) -> str:
    """' (default options: ...)' for a mode's line in --help, as passed to
    the encoder; nothing when it has none."""
    return f" (default options: {shlex.join(options)})" if options else ""
