"""What an option's text may be: the argparse types that flac2all's
command line, its profiles (``config.checked``) and flac2all_worker share;
each refusal says what was wanted.
"""

from __future__ import annotations

import argparse
import math
import shlex
from codecs import lookup as codecs_lookup
from collections.abc import Callable

from flac2all.errors import UsageError
from flac2all.planning import selection, template
from flac2all.planning.names import NAME_RESERVE


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


# Jobs at once (-t; a worker's processes): a number past any machine's
# cores is a typing mistake, and each one is a thread or a process.
MAX_THREADS = 1024


def thread_count(text: str) -> int:
    value = positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"at most {MAX_THREADS}, not {value}")
    return value


def seconds(text: str) -> float:
    """A time of 0 seconds or more (not nan, not infinite)."""
    return number(text, lambda value: 0 <= value < math.inf, "0 seconds or more")


def number(text: str, good: Callable[[float], bool], what: str) -> float:
    """``text`` as a number that is ``good`` (else: it "must be ``what``")."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not good(value):
        raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
    return value


def path_limit(text: str) -> int:
    """A --max-path: at least the room kept for a file's name."""
    value = positive_int(text)
    if value < NAME_RESERVE:
        raise argparse.ArgumentTypeError(f"must be at least {NAME_RESERVE} (room for a file's name), not {value}")
    return value


def positive_float(text: str) -> float:
    return number(text, lambda value: value > 0, "more than 0")


def text_checked_by(check: Callable[[str], object]) -> Callable[[str], str]:
    """An option's type: its text, once ``check`` (which raises UsageError
    saying what is wrong) takes it."""

    def checked_text(text: str) -> str:
        try:
            check(text)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return checked_text


glob = text_checked_by(selection.Glob.of)  # --include, --exclude
query = text_checked_by(selection.Condition.of)  # --query
path_format = text_checked_by(template.parse)  # --path-format


def encoding(text: str) -> str:
    """A --cue-encoding: a codec Python knows (cp1251, shift_jis...)."""
    try:
        return codecs_lookup(text).name
    except LookupError:
        raise argparse.ArgumentTypeError(f"not an encoding Python knows: {text!r}") from None


def command(text: str) -> str:
    """An --on-done command: split like a shell would (no shell runs it)."""
    try:
        if not shlex.split(text):
            raise argparse.ArgumentTypeError("an empty command")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot split {text!r}: {exc}") from None
    return text
