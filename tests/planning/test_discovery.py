"""The walk (discovery.py): sources listed in the order of their relative
paths."""

from __future__ import annotations

from pathlib import Path

from flac2all.planning.discovery import discover
from tests.planning.tree import make_tree


def test_the_walk_lists_sources_in_the_order_of_their_relative_paths(tmp_path: Path) -> None:
    make_tree(tmp_path)
    tree = discover(tmp_path)
    for found in (tree.flacs, tree.others):
        assert found == sorted(found, key=lambda s: s.rel.parts)
        assert all(s.path == tmp_path / s.rel for s in found)
    assert len(tree.flacs) == 12 and len(tree.others) == 2
