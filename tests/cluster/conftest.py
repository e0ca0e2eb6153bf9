"""Fixtures for cluster runs: a tagged library and an opusenc slowed down on purpose."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import make_flac


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    root = tmp_path / "music"
    for n in range(8):
        make_flac(root / f"d{n % 2}" / f"{n}.flac", seconds=0.2, tags={"TITLE": f"t{n}"})
    return root


@pytest.fixture
def slow_opusenc(tmp_path, fake_bin):
    """An opusenc that takes ``delay`` seconds per file and marks its starts."""

    def make(delay: float, name: str = "slow") -> tuple[Path, Path]:
        marks = tmp_path / f"{name}-marks"
        marks.mkdir()
        folder = tmp_path / f"{name}-bin"
        folder.mkdir()
        exe = folder / "opusenc"
        real = shutil.which("opusenc")
        exe.write_text(f"""#!/bin/bash
case "$1" in --version) exec {real} "$@";; esac
case "$*" in *flac2all-probe-*) exec {real} "$@";; esac
echo $$ > {marks}/$$
sleep {delay}
exec {real} "$@"
""")
        exe.chmod(0o755)
        return folder, marks

    return make
