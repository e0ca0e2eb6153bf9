"""The cluster's wire format: the envelope of every message (versioned JSON,
size-capped) and the checks its fields go through before use. The messages
themselves are in ``protocol``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from flac2all.codecs.options import cluster_refusal

# 2: jobs of several tasks sharing a decoder; 3: health before work (the
# welcome names what to check, the worker answers with a health message),
# results carry their cause.
VERSION = 3
MAX_MESSAGE = 64 * 1024
MAX_OPTION_WORDS = 64
# Encoder option words may not name files or redirect output: the worker
# builds each command itself and only passes these through.
FORBIDDEN_OPTIONS = {"-i", "-y", "-f", "-o", "--output", "--output-name", "-", "--"}
OPTION_WORD = re.compile(r"[A-Za-z0-9_:.,=+\- %]{1,200}")
HEX = re.compile(r"[0-9a-f]{0,64}")


class ProtocolError(Exception):
    """A frame that is not a valid message of this protocol."""


def check_options(family: str, words: Any) -> tuple[str, ...]:
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


def check_path(value: Any, what: str) -> Path:
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise ProtocolError(f"{what}: not a path")
    if "\x00" in value or "\n" in value or "\r" in value:
        raise ProtocolError(f"{what}: control characters in path")
    path = Path(value)
    if not path.is_absolute() or ".." in path.parts or os.path.normpath(value) != value:
        raise ProtocolError(f"{what}: not an absolute, normalized path")
    return path


def fields(msg: dict, required: dict[str, type | tuple], optional: dict[str, type | tuple] | None = None) -> dict:
    """Check a message has exactly these fields, of these types."""
    optional = optional or {}
    allowed = {"v", "type", *required, *optional}
    unknown = set(msg) - allowed
    if unknown:
        raise ProtocolError(f"unknown field(s): {sorted(unknown)}")
    for name in required:
        if name not in msg:
            raise ProtocolError(f"missing field: {name}")
    for name, kind in {**required, **optional}.items():
        if name in msg and not is_a(msg[name], kind):
            raise ProtocolError(f"field {name}: wrong type")
    return msg


def is_a(value: Any, kind: type | tuple) -> bool:
    """isinstance, except that JSON's true/false are not numbers here."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))


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


def encode(kind: str, **body: Any) -> bytes:
    frame = json.dumps({"v": VERSION, "type": kind, **body}, separators=(",", ":")).encode()
    if len(frame) > MAX_MESSAGE:
        raise ProtocolError(f"{kind} message too large ({len(frame)} bytes)")
    return frame


def decode(frame: bytes) -> dict:
    """A frame -> its message dict (envelope checked, body not yet)."""
    if len(frame) > MAX_MESSAGE:
        raise ProtocolError("oversize frame")
    try:
        msg = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("not JSON") from None
    if not isinstance(msg, dict) or msg.get("v") != VERSION or not isinstance(msg.get("type"), str):
        raise ProtocolError(f"not a flac2all v{VERSION} message (a master or worker of another version?)")
    return msg
