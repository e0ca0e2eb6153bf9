"""The forgiving parts of the command line: the argument parser that
suggests the nearest option for a typo and exits 2, and the rejoining of
``mp3, opus`` that the shell split."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Sequence

from flac2all import codecs
from flac2all.errors import ExitStatus, UsageError


class Parser(argparse.ArgumentParser):
    """argparse, with exit status 2 on errors, modes split by a space
    (``mp3, opus``) joined back, and the nearest option suggested for an
    unknown one."""

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        rejoin_modes(parsed, extras)
        # A profile names MODE and INPUTDIR; given here, they override it.
        profiles = getattr(parsed, "profile", None) or getattr(parsed, "all_profiles", False)
        if getattr(parsed, "inputdir", None) is None and not profiles:
            self.error("the following arguments are required: INPUTDIR")
        return parsed, extras

    def parse_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        # argparse takes "--lame-optoins=-V 2" (a space in it) for a positional.
        mode, inputdir = getattr(parsed, "mode", None), getattr(parsed, "inputdir", None)
        stray = [word for word in (mode, inputdir) if word is not None and unknown_option(word)]
        if extras or stray:
            unknown = [*stray, *extras]
            hint = self.suggest_options(unknown)
            if mode is not None and inputdir is not None and mode.endswith(","):
                # Not rejoined (INPUTDIR names a folder): say why it failed.
                hint += f"; MODE ends with a comma: no space after the comma (as in {parsed.mode}{parsed.inputdir})"
            self.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
        return parsed

    def suggest_options(self, words: list[str]) -> str:
        """' (did you mean --outdir?)' for the unknown options among
        ``words`` that are near a real one."""
        known = [s for action in self._actions for s in action.option_strings if s.startswith("--")]
        hints = []
        for word in words:
            given = word.split("=", 1)[0]
            if not given.startswith("--") or " " in given:
                continue
            nearest = difflib.get_close_matches(given, known, n=1)
            if nearest:
                hints.append((given, nearest[0]))
        if not hints:
            return ""
        if len(hints) == 1:
            return f" (did you mean {hints[0][1]}?)"
        return " (did you mean " + ", ".join(f"{good} for {given}" for given, good in hints) + "?)"

    def error(self, message: str) -> None:  # exit status 2, as documented
        self.print_usage(sys.stderr)
        self.exit(ExitStatus.USAGE, f"{self.prog}: error: {message}\n")


def rejoin_modes(parsed: argparse.Namespace, extras: list[str]) -> None:
    """Undo the shell's split of ``mp3, opus /music``: argparse sees MODE
    ``mp3,`` and INPUTDIR ``opus``, and ``/music`` left over. A MODE
    ending in a comma takes the next positional argument when that is a
    list of modes and not a folder; INPUTDIR is then the next one (or
    missing, which argparse's own message then says)."""
    while (getattr(parsed, "mode", None) or "").endswith(",") and getattr(parsed, "inputdir", None) is not None:
        follower = parsed.inputdir
        if os.path.isdir(follower) or not names_modes(follower):
            return
        parsed.mode += follower
        rest = [i for i, word in enumerate(extras) if not word.startswith("-")]
        parsed.inputdir = extras.pop(rest[0]) if rest else None


def unknown_option(word: str) -> bool:
    """True for ``--name=value with spaces``, which argparse parses as a
    positional argument, unless a file of that name exists."""
    name = word.split("=", 1)[0]
    return word.startswith("--") and len(name) > 2 and " " not in name and not os.path.lexists(word)


def names_modes(text: str) -> bool:
    """True when ``text`` is a list of modes (``opus``, ``opus,flac``...)."""
    try:
        codecs.parse_modes(text)
    except UsageError:
        return False
    return True
