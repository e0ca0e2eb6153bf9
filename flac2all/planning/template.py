"""``--path-format``: where a FLAC's outputs go, from its tags.

A template is the path below each mode's folder, '/' between folders, the
extension added: ``{albumartist|artist|Unknown Artist}/{year} - {album}/
{disc:02?}{track:02} {title}``. Between braces:

- ``name``: a tag as ``planning.fields`` reads it (case ignored; ``year``
  from DATE, ``track`` and ``disc`` without their ``/total``; the values
  of a multi-valued tag joined by ", "), or a fact of the source file:
  ``filename`` (its name without extension), ``folder`` (its folder's name);
- ``a|b|...``: the first of them that is set; an alternative that is not a
  plain name (letters, digits, '_'), or is quoted (``"Misc"``), is text;
- ``:SPEC``: Python's format spec, for the value's number when it is one
  (``{track:02}``: ``07``), else for its text;
- a trailing ``?``: empty unless the album has more than one disc, that is
  DISCTOTAL (or TOTALDISCS, or ``2/3`` in DISCNUMBER) is more than 1, or,
  with no total, DISCNUMBER is more than 1 (``{disc:02?}``).

A tag's '/' cannot make a folder: it becomes '_'. A folder or name that
comes out empty (or '.', '..') is '_'; a first folder named as
flac2all's state folder or log (at OUTDIR's top with ``-n m``) gets a
leading '_'. The profile's name rules
(``--names fat32``) then spell each part, and number clashes, as for the
source tree. Pure: the comments are read by the planner.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import PurePath

from flac2all.csvlog import LOG_NAME
from flac2all.errors import UsageError
from flac2all.planning.fields import Comments, leading_number, values
from flac2all.planning.names import COMPONENT_BYTES
from flac2all.state import STATE_DIR

FIELD = re.compile(r"\{([^{}]*)\}")
PLAIN = re.compile(r"[A-Za-z0-9_]+")
SPEC = re.compile(r"(.*?):([^:|\"']*)")
MISPLACED = re.compile(r"\s*([A-Za-z0-9_]+)\s*\?\s*:([^:|\"'?]*)\??")  # a multi-disc '?' before the spec
FACTS = ("filename", "folder")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
EMPTY = ("", ".", "..")
OWN_NAMES = frozenset(n.casefold() for n in (STATE_DIR, LOG_NAME, f"{LOG_NAME}.previous"))


@dataclass(frozen=True)
class Field:
    """One ``{...}`` of a template."""

    alternatives: tuple[tuple[bool, str], ...]  # (is text, the text or a tag's name)
    spec: str
    multi_disc: bool  # a trailing '?'

    @classmethod
    def of(cls, body: str, template: str) -> Field:
        if (m := MISPLACED.fullmatch(body)) is not None:  # {disc?:02}: "disc?" would be text
            raise UsageError(f"--path-format {template!r}: {{{body}}}: the '?' goes last: {{{m[1]}:{m[2]}?}}")
        multi = body.endswith("?")
        body = body[:-1] if multi else body
        spec = ""
        if (m := SPEC.fullmatch(body)) is not None:
            body, spec = m.groups()
            if any(int(n) > COMPONENT_BYTES for n in re.findall(r"\d+", spec)):  # (before format() makes that many)
                raise UsageError(f"--path-format {template!r}: {{{body}:{spec}}}: wider than a name can be")
            try:
                format(1, spec)
            except ValueError:
                raise UsageError(f"--path-format {template!r}: {{{body}:{spec}}}: not a format spec") from None
        alternatives = []
        for alt in body.split("|"):
            text = alt.strip()
            quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'"
            if quoted:
                alternatives.append((True, text[1:-1]))
            elif PLAIN.fullmatch(text):
                alternatives.append((False, text.casefold()))
            else:
                alternatives.append((True, alt))
        if not body.strip():
            raise UsageError(f"--path-format {template!r}: an empty {{}}")
        return cls(tuple(alternatives), spec, multi)

    def render(self, comments: Comments, source: PurePath) -> str:
        if self.multi_disc and not multi_disc(comments):
            return ""
        for is_text, name in self.alternatives:
            if is_text:
                return name
            found = fact(source, name) if name in FACTS else ", ".join(v for v in values(comments, name) if v.strip())
            if found.strip():
                return formatted(found.strip(), self.spec).replace("/", "_").replace("\0", "")
        return ""


def fact(source: PurePath, name: str) -> str:
    """A fact of the source file by its name (``FACTS``)."""
    return source.stem if name == "filename" else source.parent.name


def formatted(value: str, spec: str) -> str:
    """``value`` in ``spec``: its number when it is a whole one, else its text."""
    if not spec:
        return value
    number = leading_number(value)
    try:
        if number is not None and number == int(number) and re.fullmatch(r"\s*[-+]?\d+\s*(/.*)?", value):
            return format(int(number), spec)
        return format(value, spec)
    except (ValueError, OverflowError):  # ('c' of a number past Unicode's)
        return value


def multi_disc(comments: Comments) -> bool:
    """Whether the album has more than one disc (see the module's docstring)."""
    comments = tuple(comments)
    totals = [n for v in values(comments, "disctotal") if (n := leading_number(v)) is not None]
    if totals:
        return max(totals) > 1
    discs = [n for v in values(comments, "disc") if (n := leading_number(v)) is not None]
    return bool(discs) and max(discs) > 1


@dataclass(frozen=True)
class PathFormat:
    """A ``--path-format`` template, parsed: its parts, each a sequence of
    text and fields."""

    template: str
    parts: tuple[tuple[str | Field, ...], ...]

    def render(self, comments: Comments, source: PurePath, suffix: str) -> PurePath:
        """The path below a mode's folder of the output of ``source`` (a
        relative path) with these comments, ``suffix`` its extension."""
        comments = tuple(comments)
        names = []
        for part in self.parts:
            text = "".join(p if isinstance(p, str) else p.render(comments, source) for p in part).strip()
            names.append("_" if text in EMPTY else text)
        if len(names) > 1 and names[0].rstrip(". ").casefold() in OWN_NAMES:  # (fat32 drops the dots)
            # With -n m or -n d the first folder is at OUTDIR's top: never flac2all's state folder nor its log.
            names[0] = "_" + names[0]
        names[-1] += suffix
        return PurePath(*names)


def parts_of(template: str) -> Sequence[tuple[str | Field, ...]]:
    parts = []
    for text in template.strip().strip("/").split("/"):
        if not text.strip():
            raise UsageError(f"--path-format {template!r}: an empty folder ('//')")
        pieces: list[str | Field] = []
        at = 0
        for m in FIELD.finditer(text):
            pieces.append(text[at : m.start()])
            pieces.append(Field.of(m.group(1), template))
            at = m.end()
        pieces.append(text[at:])
        if any("{" in p or "}" in p for p in pieces if isinstance(p, str)):
            raise UsageError(f"--path-format {template!r}: a brace without its pair in {text!r}")
        parts.append(tuple(p for p in pieces if p != ""))
    return parts


@lru_cache(maxsize=8)
def parse(template: str) -> PathFormat:
    """A template checked and parsed; UsageError says what is wrong in it."""
    if not template.strip():
        raise UsageError("--path-format: an empty template")
    if (control := CONTROL.search(template)) is not None:  # (a profile's TOML can hold a NUL: no path can)
        raise UsageError(f"--path-format {template!r}: a control character ({control.group()!r}) in it")
    return PathFormat(template, tuple(parts_of(template)))
