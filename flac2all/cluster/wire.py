"""The cluster's wire format: the envelope of every message (versioned JSON,
size-capped), how a path and a peer's text travel, and the checks their
fields go through before use. The messages themselves (a msgspec Struct
each, decoded by a typed parser) are in ``protocol``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from flac2all.codecs.options import cluster_refusal

# 2: jobs of several tasks sharing a decoder; 3: health before work (the
# welcome names what to check, the worker answers with a health message),
# results carry their cause; 4: small copies sent together (``copies``);
# 5: a typed parser (JSON's lone surrogates refused), paths escaped
# (``path_to_wire``).
VERSION = 6
MAX_MESSAGE = 64 * 1024
MAX_OPTION_WORDS = 64
# Encoder option words may not name files or redirect output: the worker
# builds each command itself and only passes these through.
FORBIDDEN_OPTIONS = {"-i", "-y", "-f", "-o", "--output", "--output-name", "-", "--"}
OPTION_WORD = re.compile(r"[A-Za-z0-9_:.,=+\- %]{1,200}")


class ProtocolError(Exception):
    """A frame that is not a valid message of this protocol."""


def option_words(family: str, words: Any) -> tuple[str, ...]:
    """Encoder options as the worker accepts them (also checked by the CLI
    so that a user learns of a refused option before any work)."""
    if not isinstance(words, list | tuple) or len(words) > MAX_OPTION_WORDS:
        raise ProtocolError(f"{family} options: not a short list")
    for word in words:
        if not isinstance(word, str) or not OPTION_WORD.fullmatch(word):
            raise ProtocolError(f"{family} option {word!r}: only letters, digits and _:.,=+-% are allowed")
        if word in FORBIDDEN_OPTIONS or word.startswith("file:"):
            raise ProtocolError(f"{family} option {word!r}: names an input or output, which flac2all sets itself")
    if (why := cluster_refusal(family, words)) is not None:
        raise ProtocolError(why)
    return tuple(words)


# A path's bytes that are not UTF-8 (os.fsdecode makes them lone surrogates,
# which JSON text cannot carry to a strict parser) and its control
# characters but a tab (a newline or an ESC in a file name is valid; a wire
# string never holds one) travel as %XX, and a "%" as %25; nothing else is
# escaped, so most paths read as they are. NUL is no path's.
ESCAPED = re.compile("[%\x01-\x08\x0a-\x1f\x7f\udc80-\udcff]")
ESCAPE = re.compile(r"%(..)?")


def escape(char: str) -> str:
    code = ord(char)
    return f"%{code - 0xDC00 if code > 0xFF else code:02X}"


def path_to_wire(path: os.PathLike | str) -> str:
    """A path as a wire string: valid Unicode without control characters
    but a tab, undecodable bytes and control characters escaped."""
    text = os.fsdecode(path)
    return ESCAPED.sub(lambda m: escape(m.group()), text) if ESCAPED.search(text) else text


def unescape(m: re.Match) -> str:
    """One %XX back to its character; only what ``path_to_wire`` writes."""
    code = m.group(1)
    if code is None or not re.fullmatch("[0-9A-F]{2}", code):
        raise ProtocolError("a path with a stray %")
    char = chr(int(code, 16) + (0xDC00 if code >= "80" else 0))
    if not ESCAPED.fullmatch(char):
        raise ProtocolError("a path with a stray %")
    return char


def path_from_wire(text: str) -> str:
    """The path a wire string names (``path_to_wire`` undone)."""
    return ESCAPE.sub(unescape, text) if "%" in text else text


# What a wire string of a path may not hold: control characters (NUL, CR,
# LF, ESC...) other than a tab; they travel escaped.
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def check_path(value: Any, what: str) -> Path:
    """An absolute, normalized path (and so without a ``..`` part:
    normalizing removes them), as ``path_to_wire`` sent it: no control
    character but a tab unescaped.
    Checked as a string: this runs for every path of every job, and
    pathlib's parsing was most of it."""
    if type(value) is not str or not value or len(value) > 4096:
        raise ProtocolError(f"{what}: not a path")
    if not value.isprintable() and CONTROL.search(value):
        raise ProtocolError(f"{what}: control characters in path (not escaped)")
    value = path_from_wire(value)
    # normpath keeps a leading "//" (POSIX leaves its meaning open): refused.
    if value[0] != "/" or value[:2] == "//" or os.path.normpath(value) != value:
        raise ProtocolError(f"{what}: not an absolute, normalized path")
    return Path(value)


def inside(path: str, root: str) -> bool:
    """Whether the normalized absolute ``path`` is ``root`` or below it (both
    strings, as ``check_path`` accepts them): Path.is_relative_to without
    parsing."""
    return path == root or path.startswith(root if root == "/" else root + "/")


ENVELOPE = frozenset({"v", "type"})
ANOTHER_VERSION = f"not a flac2all v{VERSION} message (a master or worker of another version?)"


def fields(
    msg: dict,
    required: dict[str, type | tuple],
    optional: dict[str, type | tuple] | None = None,
    envelope: frozenset[str] = ENVELOPE,
) -> dict:
    """Check a message has exactly these fields, of these types (and its
    ``envelope``'s: none for a body nested in a message)."""
    optional = optional or {}
    for name in msg:
        if name not in required and name not in optional and name not in envelope:
            allowed = {*envelope, *required, *optional}
            raise ProtocolError(f"unknown field(s): {sorted(set(msg) - allowed)}")
    for name, kind in required.items():
        if name not in msg:
            raise ProtocolError(f"missing field: {name}")
        if not is_a(msg[name], kind):
            raise ProtocolError(f"field {name}: wrong type")
    for name, kind in optional.items():
        if name in msg and not is_a(msg[name], kind):
            raise ProtocolError(f"field {name}: wrong type")
    return msg


def is_a(value: Any, kind: type | tuple) -> bool:
    """isinstance, except that JSON's true/false are not numbers here."""
    if not isinstance(value, kind):
        return False
    return type(value) is not bool or kind is bool or (isinstance(kind, tuple) and bool in kind)


MAX_ID = 2**53  # task ids and attempts: exact in any JSON reader
MAX_SIZE = 2**63 - 1  # bytes, as SQLite and st_size hold them


def bounded_int(value: Any, what: str, low: int, high: int) -> int:
    """An integer in [low, high] (not a bool), compared as it came: a
    400-digit one is simply out of range."""
    if not is_a(value, int) or not low <= value <= high:
        raise ProtocolError(f"{what}: not a whole number in {low}..{high}")
    return value


def text(value: Any, what: str, limit: int) -> str:
    """A string of at most ``limit`` characters."""
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"{what}: not a string of at most {limit} characters")
    return value


def seconds(value: Any, what: str, low: float, high: float) -> float:
    """A number of seconds in [low, high]. Compared before any conversion:
    float() of a 400-digit integer raises, and NaN compares false."""
    if not is_a(value, (int, float)) or not low <= value <= high:
        raise ProtocolError(f"{what}: not a number of seconds in {low:g}..{high:g}")
    return float(value)


# What a peer's free text (a host name, a problem, a result's message) may
# not show a terminal, the log or the CSV as it is: control characters (an
# escape sequence rewrites the screen) and lone surrogates (no encoder
# writes them: an exception where the text is printed).
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(value: str) -> str:
    """A peer's text as any terminal, log or CSV can take it: control
    characters and lone surrogates written as escapes (\\x1b, \\udcff)."""
    if value.isprintable() or not UNPRINTABLE.search(value):
        return value
    return UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], value)


def encode(kind: str, **body: Any) -> bytes:
    """One frame; the envelope first (``{"v": N, ...``: a peer of another
    version is told from its first bytes)."""
    frame = json.dumps({"v": VERSION, "type": kind, **body}, separators=(",", ":")).encode()
    if len(frame) > MAX_MESSAGE:
        raise ProtocolError(f"{kind} message too large ({len(frame)} bytes)")
    return frame


ENVELOPE_VERSION = re.compile(rb'\{"v":(\d{1,9}),')


def other_version(frame: bytes) -> bool:
    """Whether a frame the parser refused begins as another version's
    envelope (read from its first bytes, not parsed)."""
    m = ENVELOPE_VERSION.match(frame)
    return m is not None and int(m.group(1)) != VERSION
