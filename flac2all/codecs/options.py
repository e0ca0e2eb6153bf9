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
