"""The README's Python example is real: run it as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.conftest import REPO, decodes, make_flac


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Using flac2all from Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_library_example_runs(tmp_path, capsys):
    make_flac(tmp_path / "music" / "a" / "one.flac", tags={"TITLE": "One"})
    make_flac(tmp_path / "music" / "two.flac")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(readme_example(), "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert "Files we managed to convert successfully: 4" in capsys.readouterr().out
    assert decodes(tmp_path / "converted" / "mp3" / "a" / "one.mp3")
    assert decodes(tmp_path / "converted" / "opus" / "two.opus")


def test_readme_starts_with_the_two_commands():
    lines = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("./run.sh")]
    assert lines[0].startswith("./run.sh demo") and lines[1].startswith("./run.sh test")
    assert Path(REPO / ".ci" / "run").read_text().count("./run.sh test") == 1
