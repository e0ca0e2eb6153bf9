"""What part of the library a run converts: ``--include``/``--exclude``
globs on paths below INPUTDIR, and ``--query`` tests on a FLAC source's
tags. Pure: the walk asks ``Selection.walks``/``Selection.takes`` of each
folder and file by its relative path, the planner ``Selection.accepts`` of
each FLAC's comments.

Globs (``PATTERNS`` below): a path is the one below INPUTDIR with '/'
between its parts; ``*`` matches within one part, ``?`` one character,
``[abc]``/``[!abc]`` one of a set, ``**`` as a whole part any number of
parts (none too). A pattern without a '/' matches a name at any depth
(``*.cue``, ``Audiobooks``); one with a '/' matches from INPUTDIR down
(``Jazz/**/Live*``); a leading '/' only says so. Case counts. A pattern
that matches a folder matches everything in it. A file is selected when
it (or a folder above it) matches an ``--include`` (any file, without
one), and neither it nor a folder above it matches an ``--exclude``.
Excluded folders are not walked, nor folders no ``--include`` can reach.

Queries (``QUERY`` below), every one must hold: ``KEY=VALUE`` (a value of
the tag equals VALUE, case ignored; compared as numbers when VALUE is
one), ``KEY!=VALUE`` (the tag is set and no value equals VALUE),
``KEY~TEXT`` (a value holds TEXT, case ignored), ``KEY<N``, ``KEY<=N``,
``KEY>N``, ``KEY>=N`` (a value's leading number: ``DATE=1994-05-01`` is
1994); a leading ``-`` (or ``!``) negates a test. A missing tag fails a
test and passes a negated one. Tag names as in ``planning.fields``
(``year`` from DATE, ``track``, ``disc``...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath

from flac2all.errors import UsageError
from flac2all.planning.fields import Comments, leading_number, values

WILD = re.compile(r"[*?\[]")
NUMBER = re.compile(r"\s*[-+]?\d+(?:\.\d+)?\s*")
QUERY = re.compile(r"^\s*([-!]?)\s*([^=<>!~]+?)\s*(>=|<=|!=|=|~|<|>)\s*(.*?)\s*$", re.S)
COMPARE = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def part_regex(part: str) -> str:
    """One part of a glob (no '/') as a regex."""
    out, i = [], 0
    while i < len(part):
        c = part[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and (end := part.find("]", set_start(part, i))) > i:
            inside = part[i + 1 : end]
            negated = inside.startswith("!")
            inside = inside[1:] if negated else inside
            # Each character as itself but a range's '-'; a set never matches the '/' between parts.
            out.append("[" + ("^/" if negated else "") + "".join(x if x == "-" else re.escape(x) for x in inside) + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def set_start(part: str, at: int) -> int:
    """Where the ']' closing the set opened at ``at`` may be: after its
    '!', and after a ']' right after those (a member, as in fnmatch)."""
    start = at + 1 + (part[at + 1 : at + 2] == "!")
    return start + (part[start : start + 1] == "]")


@dataclass(frozen=True)
class Glob:
    """One ``--include``/``--exclude`` pattern, compiled."""

    pattern: str
    regex: re.Pattern
    prefix: tuple[str, ...]  # its literal first parts: where below INPUTDIR it can match

    @classmethod
    def of(cls, pattern: str) -> Glob:
        text = pattern.strip()
        anchored = text.startswith("/") or "/" in text.strip("/")
        parts = [p for p in text.strip("/").split("/") if p]
        if not parts:
            raise UsageError(f"an empty glob: {pattern!r}")
        if not anchored:
            parts = ["**", *parts]
        regex = ""
        for n, part in enumerate(parts):
            last = n == len(parts) - 1
            if part == "**":
                regex += ".*" if last else "(?:.*/)?"
            else:
                regex += part_regex(part) + ("" if last else "/")
        prefix = []
        for part in parts:
            if WILD.search(part):
                break
            prefix.append(part)
        try:
            compiled = re.compile(regex, re.S)
        except re.error as exc:  # a range backwards ('[z-a]')
            raise UsageError(f"not a glob: {pattern!r} ({exc.msg})") from None
        return cls(pattern, compiled, tuple(prefix))

    def matches(self, rel: str) -> bool:
        return self.regex.fullmatch(rel) is not None

    def may_reach(self, parts: tuple[str, ...]) -> bool:
        """Whether the folder of ``parts`` may hold a match (or be one, or
        lie in one): it is on the way to the literal prefix, or below it."""
        n = min(len(parts), len(self.prefix))
        return parts[:n] == self.prefix[:n]


@dataclass(frozen=True)
class Condition:
    """One ``--query`` test."""

    text: str
    negated: bool
    key: str
    op: str
    value: str

    @classmethod
    def of(cls, text: str) -> Condition:
        m = QUERY.match(text)
        if not m or not m.group(2).strip():
            raise UsageError(
                f"not a query: {text!r} (KEY=VALUE, KEY!=VALUE, KEY~TEXT, KEY<N, KEY<=N, KEY>N, KEY>=N, "
                "a leading - negates)"
            )
        negated, key, op, value = m.groups()
        if op in COMPARE and not NUMBER.fullmatch(value):  # (not '1990s', '4stars' nor '199O': their start alone)
            raise UsageError(f"not a query: {text!r} ({op} compares numbers, and {value!r} is not one)")
        return cls(text, bool(negated), key.strip(), op, value)

    def holds(self, comments: Comments) -> bool:
        found = values(comments, self.key)
        return (bool(found) and self.positive(found)) != self.negated

    def positive(self, found: list[str]) -> bool:
        """The test (not negated) on the values of a tag that is set."""
        if self.op == "~":
            return any(self.value.casefold() in v.casefold() for v in found)
        number = leading_number(self.value)
        if self.op in COMPARE:
            return any((n := leading_number(v)) is not None and COMPARE[self.op](n, number) for v in found)
        same = any(equal(v, self.value, number) for v in found)
        return same if self.op == "=" else not same


def equal(value: str, wanted: str, number: float | None) -> bool:
    """A tag's value equals the query's: as numbers when the query's is
    one (``rating=4`` holds for ``4`` and ``4.0``), else as text, case ignored."""
    if number is not None and NUMBER.fullmatch(wanted):
        mine = leading_number(value)
        if mine is not None and NUMBER.fullmatch(value):
            return mine == number
    return value.strip().casefold() == wanted.strip().casefold()


@dataclass(frozen=True)
class Selection:
    """A run's ``--include``, ``--exclude`` and ``--query``, compiled."""

    include: tuple[Glob, ...] = ()
    exclude: tuple[Glob, ...] = ()
    query: tuple[Condition, ...] = ()

    @classmethod
    def of(cls, include: Iterable[str] = (), exclude: Iterable[str] = (), query: Iterable[str] = ()) -> Selection:
        """The selection of these patterns and tests; UsageError names a bad one."""
        return cls(tuple(map(Glob.of, include)), tuple(map(Glob.of, exclude)), tuple(map(Condition.of, query)))

    @property
    def by_path(self) -> bool:
        return bool(self.include or self.exclude)

    def walks(self, rel: PurePath) -> bool:
        """Whether the walk enters the folder ``rel``: not excluded, and
        reachable by an include."""
        text = rel.as_posix()
        if any(g.matches(text) for g in self.exclude):
            return False
        return not self.include or any(g.may_reach(rel.parts) for g in self.include)

    def takes(self, rel: PurePath) -> bool:
        """Whether the file ``rel`` (in a folder the walk entered) is selected by the globs."""
        if not self.by_path:
            return True
        parts = rel.parts
        paths = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        if any(g.matches(p) for g in self.exclude for p in paths):
            return False
        return not self.include or any(g.matches(p) for g in self.include for p in paths)

    def accepts(self, comments: Comments) -> bool:
        """Whether a FLAC's comments pass every ``--query`` test."""
        comments = tuple(comments)
        return all(test.holds(comments) for test in self.query)
