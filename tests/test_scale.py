"""What keeps a large library's cost flat (issue 16) changes no outcome: the
walk lists sources in the order a sort of their relative paths gave, and the
dry run's listing printed in pieces is the listing as one text."""

from __future__ import annotations

import os
from pathlib import Path

from flac2all.codecs import CODECS
from flac2all.model import Settings
from flac2all.planning import plan
from flac2all.planning.discovery import discover
from flac2all.planning.flow import Whole
from flac2all.running.listing import Listing

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


def test_the_walk_lists_sources_in_the_order_of_their_relative_paths(tmp_path: Path) -> None:
    make_tree(tmp_path)
    tree = discover(tmp_path)
    for found in (tree.flacs, tree.others):
        assert found == sorted(found, key=lambda s: s.rel.parts)
        assert all(s.path == tmp_path / s.rel for s in found)
    assert len(tree.flacs) == 12 and len(tree.others) == 2


def test_the_dry_run_listing_in_pieces_is_the_listing(tmp_path: Path) -> None:
    make_tree(tmp_path)
    settings = Settings(input_dir=tmp_path, outdir=tmp_path.parent / "out", modes=("mp3", "opus"))
    tree = discover(tmp_path)
    the_plan = plan.build(tree, (CODECS["mp3"], CODECS["opus"]), settings, refuse=False)
    listed = Listing(Whole(the_plan, tree))
    whole = listed.describe(settings)
    assert whole.count("\n") + 1 == 3 + 24  # header, count, "encode:", one line per task
    for size in (1, 2, 5, 10000):
        assert "\n".join(listed.describe_chunks(settings, size)) == whole
