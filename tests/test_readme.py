"""The README: its two set-up commands come first, and its commands marked
to run (a first conversion, a re-run) do, as written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, decodes
from tests.test_docs import run_blocks, runnable_blocks


def test_readme_starts_with_the_two_commands():
    lines = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("./run.sh")]
    assert lines[0].startswith("./run.sh demo") and lines[1].startswith("./run.sh test")
    assert Path(REPO / ".ci" / "run").read_text().count("./run.sh test") == 1


@pytest.mark.slow
def test_readme_first_conversion_and_re_run(tmp_path):
    assert len(runnable_blocks(REPO / "README.md")) == 2
    first, again = run_blocks(REPO / "README.md", tmp_path)
    assert "Files we managed to convert successfully: 14" in first.stdout
    converted = tmp_path / "converted"
    assert decodes(converted / "opus" / "Noise Band" / "2022 - High Resolution" / "02 Brown.opus")
    assert not (converted / "opus" / "Noise Ensemble").exists()
    assert "move " in again.stdout and again.stdout.endswith("\n4 moved\n")  # -q: one line


def test_the_sample_library_script_takes_help_as_help(tmp_path):
    script = REPO / "scripts" / "make_sample_library.py"
    proc = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert proc.returncode == 0 and "usage:" in proc.stdout and "Generate the small sample library" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # no folder named --help
