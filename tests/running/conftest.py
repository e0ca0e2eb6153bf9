"""A small library and its mirror, made by a real run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_flac
from tests.running.folders import run, statuses


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    """Four tiny tagged sources in two folders."""
    root = tmp_path / "music"
    for album in ("A", "B"):
        for n in range(2):
            make_flac(root / album / f"{n} song.flac", seconds=0.15, tags={"TITLE": f"{album}{n}", "ALBUM": album})
    return root


@pytest.fixture
def mirrored(lib, tmp_path, spy) -> Path:
    out = tmp_path / "out"
    result, started = run(lib, out, spy)
    assert result.returncode == 0 and statuses(result) == {"SUCCESS"} and started, result.stderr
    return out
