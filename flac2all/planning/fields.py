"""What a source's tags say for a name, as ``--query`` and
``--path-format`` ask it: the values of a Vorbis comment (case ignored,
every value of a multi-valued one), and the few names that stand for
another where the comment itself is missing:

- ``year``: the YEAR comment, else the leading four digits of DATE;
- ``track``, ``disc``: TRACKNUMBER, DISCNUMBER (``3/12`` gives ``3``);
- ``tracktotal``, ``disctotal``: TRACKTOTAL or TOTALTRACKS, DISCTOTAL or
  TOTALDISCS, else the number after the '/' of TRACKNUMBER, DISCNUMBER.

Pure: the comments are read by the planner.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

Comments = Iterable[tuple[str, str]]

LEADING_NUMBER = re.compile(r"\s*([-+]?\d+(?:\.\d+)?)")
YEAR = re.compile(r"\s*(\d{4})")
NUMBERS = {"track": "tracknumber", "disc": "discnumber"}
TOTALS = {
    "tracktotal": ("tracktotal", "totaltracks", "tracknumber"),
    "disctotal": ("disctotal", "totaldiscs", "discnumber"),
}


def comment_values(comments: Comments, name: str) -> list[str]:
    """Every value of the comment ``name`` (case ignored), in file order."""
    wanted = name.casefold()
    return [value for key, value in comments if key.casefold() == wanted]


def values(comments: Comments, name: str) -> list[str]:
    """The values a source's tags give for ``name`` (see the module's
    docstring for the names that stand for another); [] when missing."""
    comments = tuple(comments)
    name = name.casefold()
    found = comment_values(comments, name)
    if found:
        return found
    if name == "year":
        return [m.group(1) for v in comment_values(comments, "date") if (m := YEAR.match(v))]
    if name in NUMBERS:
        return [v.split("/", 1)[0].strip() for v in comment_values(comments, NUMBERS[name])]
    if name in TOTALS:
        *totals, numbered = TOTALS[name]
        for other in totals[1:]:
            if found := comment_values(comments, other):
                return found
        return [v.split("/", 1)[1].strip() for v in comment_values(comments, numbered) if "/" in v]
    return []


def leading_number(text: str) -> float | None:
    """The number a value starts with (``1994-05-01``: 1994, ``4/5``: 4), None if none."""
    m = LEADING_NUMBER.match(text)
    return float(m.group(1)) if m else None
