"""A tree of oddly named sources."""

from __future__ import annotations

import os
from pathlib import Path

NAMES = [
    "A.flac",
    "B/01.flac",
    "CD1/x.flac",
    "CD1/cover.jpg",
    "a.flac",
    "cover.jpg",
    "b/CD 2/02.flac",
    "b/CD 2/sub/deep.flac",
    "b/c.flac",
    "b/CD1.flac",
    "zz.flac",
    "Ω/é.flac",
    "-lead/x.flac",
]


def make_tree(root: Path) -> None:
    for name in NAMES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * len(name))
    (root / os.fsdecode(b"\xff-bytes.flac")).write_bytes(b"y")
