"""Encoder options as a user writes them: one OptionFamily per encoder.

A family is what the CLI, the cluster protocol and the runner need to know
about one encoder's options: its name (the key in ``Settings.options`` and
on the wire), its ``--NAME-options`` flag, the syntax of that flag's text and
its default, written as the user would type it. Codecs that share an encoder
share a family (every ``f:ENC`` mode takes the ``ffmpeg`` options).
"""

from __future__ import annotations

import shlex
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from flac2all.errors import UsageError


def colon_options(spec: str, always_one_dash: bool = False) -> tuple[str, ...]:
    """Split the original's colon syntax into argv words."""
    words: list[str] = []
    for piece in spec.split(":"):
        try:
            parts = shlex.split(piece)
        except ValueError as exc:
            raise UsageError(f"cannot parse encoder option '{piece}': {exc}") from None
        if not parts:
            continue
        head = parts[0]
        if always_one_dash:
            head = "-" + head
        elif not head.startswith("-"):
            head = ("-" if len(head.split("=", 1)[0]) == 1 else "--") + head
        words += [head, *parts[1:]]
    return tuple(words)


def comma_options(spec: str) -> tuple[str, ...]:
    """Split ffmpeg options: comma-separated, each item split on blanks."""
    words: list[str] = []
    for piece in spec.split(","):
        try:
            words += shlex.split(piece)
        except ValueError as exc:
            raise UsageError(f"cannot parse ffmpeg option '{piece}': {exc}") from None
    return tuple(words)


class Syntax(Enum):
    """How the text of an ``--X-options`` flag becomes argv words; each
    value is what --help says about it."""

    ONE_DASH = (
        "colon-separated options; each item gets one dash, as in the original flac2all: "
        "'-preset standard:q 0' means --preset standard -q 0."
    )
    DASHES = (
        "colon-separated options; each item gets two dashes ('quality=5:resample 32000' means "
        "--quality=5 --resample 32000), or one dash if it is a single letter or digit ('8' means -8 "
        "for flac); items already starting with a dash are kept as they are."
    )
    COMMA = "comma-separated ffmpeg arguments ('-b:a 160k,-cutoff 18000')."

    def parse(self, text: str) -> tuple[str, ...]:
        """argv words of ``text``; UsageError if it cannot be split."""
        if self is Syntax.COMMA:
            return comma_options(text)
        return colon_options(text, always_one_dash=self is Syntax.ONE_DASH)


@dataclass(frozen=True)
class OptionFamily:
    """One encoder's options: where they are kept, how they are written."""

    # The key in Settings.options and in the cluster's settings message.
    name: str
    syntax: Syntax
    # The default as a user would type it after the flag: the one source of
    # the defaults the codecs use (``defaults``) and --help shows.
    default: str
    # What the options go to, for --help: "lame options".
    purpose: str

    @property
    def flag(self) -> str:
        """The command-line flag: ``--lame-options``."""
        return f"--{self.name}-options"

    @property
    def dest(self) -> str:
        """The flag's attribute on argparse's namespace."""
        return f"{self.name}_options"

    @property
    def defaults(self) -> tuple[str, ...]:
        """The default options as argv words."""
        return self.parse(self.default)

    @property
    def flag_help(self) -> str:
        """The flag's line in --help."""
        shown = f"'{self.default}'" if self.default else "none"
        return f"{self.purpose} (default: {shown})"

    def parse(self, text: str) -> tuple[str, ...]:
        """The user's text for this family -> argv words (UsageError when it
        cannot be split, for example an unclosed quote)."""
        return self.syntax.parse(text)


def options_help(families: Iterable[OptionFamily]) -> str:
    """The paragraph of --help that explains each syntax, naming the flags
    that use it."""
    families = tuple(families)
    paragraphs = []
    for syntax in Syntax:
        flags = [f.flag for f in families if f.syntax is syntax]
        if not flags:
            continue
        names = flags[0] if len(flags) == 1 else ", ".join(flags[:-1]) + " and " + flags[-1]
        verb = "takes" if len(flags) == 1 else "take"
        paragraphs.append(
            textwrap.fill(
                f"{names} {verb} {syntax.value}",
                width=78,
                initial_indent="  ",
                subsequent_indent="  ",
                break_on_hyphens=False,
                break_long_words=False,
            )
        )
    return "\n".join(paragraphs)


# The options a cluster worker accepts from a master, per family: option ->
# whether it takes a value (the next word, or ``--opt=value``). None of them
# names a file or changes where output goes (ffmpeg's -i/-y/-f/-af, lame's
# --ti, opusenc's --save-range/--picture, flac's -o/--cuesheet/--picture...
# are left out on purpose): a worker's own user never agreed to let a master
# pick files through an encoder's options. A local run takes any option: the
# user owns that machine.
_FFMPEG_AUDIO = {
    **dict.fromkeys(("-b:a", "-q:a", "-ab", "-aq", "-ar", "-ac", "-cutoff", "-vbr", "-profile:a"), True),
    **dict.fromkeys(("-compression_level", "-application", "-frame_duration", "-sample_fmt", "-strict"), True),
    **dict.fromkeys(("-threads", "-frame_size", "-lpc_type", "-aac_coder", "-global_quality", "-packet_loss"), True),
    **dict.fromkeys(("-mapping_family", "-trellis", "-joint_stereo", "-abr", "-reservoir", "-channel_coupling"), True),
    **dict.fromkeys(("-vn", "-sn", "-dn"), False),
}
CLUSTER_OPTIONS: dict[str, dict[str, bool]] = {
    "lame": {
        **dict.fromkeys(("-b", "-B", "-V", "-q", "-m", "-F", "-preset", "--preset", "--abr", "--resample"), True),
        **dict.fromkeys(("--lowpass", "--highpass", "--lowpass-width", "--highpass-width", "-s"), True),
        **dict.fromkeys(("-h", "-f", "-a", "-v", "--cbr", "--vbr-new", "--vbr-old", "--noreplaygain"), False),
        **dict.fromkeys(("--replaygain-fast", "--replaygain-accurate", "--nores", "--strictly-enforce-ISO"), False),
        **dict.fromkeys(("--quiet", "--silent", "-S", "--noasm"), False),
    },
    "vorbis": {
        **dict.fromkeys(("-q", "--quality", "-b", "--bitrate", "-m", "--min-bitrate", "-M"), True),
        **dict.fromkeys(("--max-bitrate", "--resample", "--advanced-encode-option", "-s", "--serial"), True),
        **dict.fromkeys(("--managed", "--downmix", "--quiet", "-Q", "--discard-comments"), False),
    },
    "opus": {
        **dict.fromkeys(("--bitrate", "--comp", "--complexity", "--framesize", "--expect-loss"), True),
        **dict.fromkeys(("--max-delay", "--set-ctl-int", "--serial", "--padding"), True),
        **dict.fromkeys(("--vbr", "--cvbr", "--hard-cbr", "--downmix-mono", "--downmix-stereo"), False),
        **dict.fromkeys(("--quiet", "--music", "--speech", "--no-phase-inv", "--discard-comments"), False),
    },
    "flac": {
        **dict.fromkeys(tuple(f"-{n}" for n in range(9)), False),
        **dict.fromkeys(("--best", "--fast", "-V", "--verify", "-e", "-p", "--no-padding", "--silent"), False),
        **dict.fromkeys(("--exhaustive-model-search", "--qlp-coeff-precision-search", "-s", "-f"), False),
        **dict.fromkeys(("-b", "--blocksize", "-l", "-r", "-q", "-A", "--apodization", "--padding"), True),
        **dict.fromkeys(("--max-lpc-order", "--rice-partition-order", "--qlp-coeff-precision"), True),
        **dict.fromkeys(("-m", "-M", "--mid-side", "--adaptive-mid-side"), False),
    },
    "ffmpeg": _FFMPEG_AUDIO,
    "aac": _FFMPEG_AUDIO,
}


def cluster_refusal(family: str, words: Iterable[str]) -> str | None:
    """Why a worker refuses these option words of ``family`` (None: it takes
    them): each option must be in the family's CLUSTER_OPTIONS, and a word
    that is not an option only the value of the option before it."""
    allowed = CLUSTER_OPTIONS.get(family)
    if allowed is None:
        return f"no {family} options are accepted from a master"
    expect_value = False
    for word in words:
        if expect_value:
            expect_value = False
            continue
        name, has_value = (word.split("=", 1)[0], True) if word.startswith("--") and "=" in word else (word, False)
        if name not in allowed:
            if name.startswith("-"):
                return f"{family} option {name!r} is not one a cluster worker accepts"
            return f"{family} option word {word!r} is neither an option nor its value (a file name?)"
        if has_value and not allowed[name]:
            return f"{family} option {name!r} takes no value"
        expect_value = allowed[name] and not has_value
    return None
