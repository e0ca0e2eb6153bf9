"""The command line's parser: each option declared once into a public
table (``Parser.options``, what profiles read), one parse that keeps only
what is given, and the forgiving parts: the nearest option suggested for a
typo, exit status 2, and the rejoining of ``mp3, opus`` that the shell
split."""

from __future__ import annotations

import argparse
import difflib
import os
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from flac2all import codecs
from flac2all.errors import ExitStatus, UsageError


@dataclass(frozen=True)
class Option:
    """One option of the command line as it was declared: what profiles
    (their keys, checks and defaults) need to know of it."""

    dest: str
    flags: tuple[str, ...]  # ("-o", "--outdir"); () for MODE and INPUTDIR
    action: str = "store"  # "store_true": a flag, which takes no value
    default: Any = None
    type: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str = ""


def defaults(options: Mapping[str, Option]) -> dict[str, Any]:
    """Each option's value when the command line does not give it."""
    return {o.dest: o.default for o in options.values() if o.action not in ("help", "version")}


class Parser(argparse.ArgumentParser):
    """argparse, with exit status 2 on errors, modes split by a space
    (``mp3, opus``) joined back, and the nearest option suggested for an
    unknown one.

    Options are declared with ``option``, which keeps them in ``options``
    (dest -> Option): the public table that profiles and the did-you-mean
    read. The parse leaves out what is not given (``parse_given``: the
    command line's layer over a profile); ``defaults`` fill in the rest.
    MODE and INPUTDIR may be left out when one of ``optional_with`` is
    given (profiles name them)."""

    def __init__(self, *args: Any, optional_with: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, add_help=False, argument_default=argparse.SUPPRESS, **kwargs)
        self.options: dict[str, Option] = {}
        self.optional_with = tuple(optional_with)
        self.option("-h", "--help", action="help", help="show this help message and exit")

    def group(self, title: str) -> Group:
        """A titled group of options in the help (``add_argument_group``)."""
        return Group(self, self.add_argument_group(title))

    def option(self, *flags: str, group: Any = None, **kwargs: Any) -> Option:
        """Add an argument, as ``add_argument`` takes it (to ``group``, made
        by ``add_argument_group``, or to the parser), and record it in
        ``options``."""
        positional = not flags[0].startswith("-")
        action = kwargs.get("action", "store")
        default = kwargs.pop("default", False if action == "store_true" else None)
        if positional:
            dest = flags[0]
        else:
            longs = [flag for flag in flags if flag.startswith("--")]
            dest = kwargs.setdefault("dest", (longs or flags)[0].lstrip("-").replace("-", "_"))
        choices = kwargs.get("choices")
        declared = Option(
            dest,
            () if positional else flags,
            action,
            default,
            kwargs.get("type"),
            tuple(choices) if choices is not None else None,
            kwargs.get("metavar") or dest,
        )
        (group or self).add_argument(*flags, **kwargs)
        self.options[dest] = declared
        return declared

    def parse_known_args(
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        take_inputdir(parsed, extras)
        rejoin_modes(parsed, extras)
        mode = getattr(parsed, "mode", None)
        if mode is not None and looks_like_a_folder(mode):
            self.error(
                f"{mode} is a folder, given where the modes go: name the modes first, as in "
                f"{self.prog} mp3 {shlex.quote(mode)} (see {self.prog} --help for the modes)"
            )
        # A profile names MODE and INPUTDIR; given here, they override it.
        if not any(hasattr(parsed, dest) for dest in self.optional_with):
            positionals = [o for o in self.options.values() if not o.flags]
            missing = [o.metavar for o in positionals if getattr(parsed, o.dest, None) is None]
            if missing:
                self.error(f"the following arguments are required: {', '.join(missing)}")
        return parsed, extras

    def parse_given(self, args: Sequence[str] | None = None) -> argparse.Namespace:
        """The options given in ``args`` and only them (the one parse of a
        command line); usage errors exit 2."""
        parsed, extras = self.parse_known_args(args)
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

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: None = None
    ) -> argparse.Namespace:
        """As argparse's: every option, given or its default."""
        return argparse.Namespace(**{**defaults(self.options), **vars(self.parse_given(args))})

    def suggest_options(self, words: list[str]) -> str:
        """' (did you mean --outdir?)' for the unknown options among
        ``words`` that are near a real one."""
        known = [flag for o in self.options.values() for flag in o.flags if flag.startswith("--")]
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

    def error(self, message: str) -> NoReturn:  # exit status 2, as documented
        self.print_usage(sys.stderr)
        self.exit(ExitStatus.USAGE, f"{self.prog}: error: {message}\n")


@dataclass(frozen=True)
class Group:
    """A group of options in the help, whose options the parser records."""

    parser: Parser
    group: Any

    def option(self, *flags: str, **kwargs: Any) -> Option:
        return self.parser.option(*flags, group=self.group, **kwargs)


def take_inputdir(parsed: argparse.Namespace, extras: list[str]) -> None:
    """INPUTDIR after options (``mp3 -o DIR /music``): argparse, which
    leaves MODE and INPUTDIR out when a profile may name them, ends the
    positionals at the first option, and leaves ``/music`` over."""
    if hasattr(parsed, "mode") and not hasattr(parsed, "inputdir"):
        rest = [i for i, word in enumerate(extras) if not word.startswith("-")]
        if rest:
            parsed.inputdir = extras.pop(rest[0])


def rejoin_modes(parsed: argparse.Namespace, extras: list[str]) -> None:
    """Undo the shell's split of ``mp3, opus /music``: argparse sees MODE
    ``mp3,`` and INPUTDIR ``opus``, and ``/music`` left over. A MODE
    ending in a comma takes the next positional argument when that is a
    list of modes and not a folder; INPUTDIR is then the next one (or
    missing: a profile's, or the parser says it is required)."""
    while (getattr(parsed, "mode", None) or "").endswith(",") and getattr(parsed, "inputdir", None) is not None:
        follower = parsed.inputdir
        if os.path.isdir(follower) or not names_modes(follower):
            return
        parsed.mode += follower
        rest = [i for i, word in enumerate(extras) if not word.startswith("-")]
        if rest:
            parsed.inputdir = extras.pop(rest[0])
        else:
            del parsed.inputdir  # missing: a profile's, or argparse's message says so


def looks_like_a_folder(word: str) -> bool:
    """True for a MODE that names a folder rather than modes (``flac2all
    ~/music``: the shell's ``/home/me/music``)."""
    return not names_modes(word) and (os.path.isdir(word) or os.sep in word)


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
