"""The documentation site: ``mkdocs build --strict`` passes (a broken link
or a missing page fails it), and the code blocks marked to run do, as
written, on the sample library.

A block runs when the line before its fence is ``<!-- runs -->``: ``sh``
blocks with ``sh -e``, ``python`` blocks with this Python, each page's
blocks in order in a fresh folder of its own, where ``.venv`` is this
environment, ``scripts`` the repository's, and this environment's ``bin``
is first on PATH (as Getting started puts ``flac2all`` there)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flac2all.cluster import worker_cli
from flac2all.face import cli
from tests.conftest import REPO, require

RUNS = re.compile(r"^<!-- runs -->\n```(sh|python)\n(.*?)^```$", re.M | re.S)
# Every page that shows runnable commands: a marker lost in an edit fails here.
PAGES_THAT_RUN = ["getting-started.md", "mirror.md", "profiles.md", "python.md"]


def runnable_blocks(page: Path) -> list[tuple[str, str]]:
    """The (language, code) of each block marked to run, in order."""
    return RUNS.findall(page.read_text())


def run_blocks(page: Path, folder: Path) -> list[subprocess.CompletedProcess[str]]:
    """Run ``page``'s marked blocks in order in ``folder``; fail on the
    first that exits non-zero."""
    require("flac", "lame", "opusenc", "sox", "metaflac")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".venv").symlink_to(sys.prefix)
    (folder / "scripts").symlink_to(REPO / "scripts")
    env = {**os.environ, "PATH": f"{Path(sys.prefix) / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("PYTHONPATH", None)
    blocks = runnable_blocks(page)
    assert blocks, f"{page.name} has no block marked <!-- runs -->"
    done = []
    for language, code in blocks:
        argv = ["sh", "-e", "-c", code] if language == "sh" else [sys.executable, "-c", code]
        ran = subprocess.run(
            argv, cwd=folder, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300
        )
        assert ran.returncode == 0, f"{page.name}: this block failed:\n{code}\n{ran.stdout}\n{ran.stderr}"
        done.append(ran)
    return done


def mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    # Not -q: mkdocs then counts no warning, and --strict passes anything.
    return subprocess.run(
        [str(Path(sys.prefix) / "bin" / "mkdocs"), "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_the_site_builds_in_strict_mode(tmp_path):
    built = mkdocs(REPO / "mkdocs.yml", tmp_path / "site")
    assert built.returncode == 0, built.stdout + built.stderr
    nav = re.findall(r"^  - [^:]+: (\S+)\.md$", (REPO / "mkdocs.yml").read_text(), re.M)
    assert sorted(f"{name}.md" for name in nav) == sorted(p.name for p in (REPO / "docs").glob("*.md"))
    for name in nav:
        page = tmp_path / "site" / ("index.html" if name == "index" else f"{name}/index.html")
        assert page.stat().st_size > 1000, page
    # Included from the repository's top, not copied: its first section is there.
    first = re.search(r"^## ([^(`\n]+)", (REPO / "BENCHMARKS.md").read_text(), re.M)[1].strip()
    assert first in (tmp_path / "site" / "benchmarks" / "index.html").read_text()
    assert "KillMode=mixed" in (tmp_path / "site" / "cluster" / "index.html").read_text()


def test_a_broken_link_fails_the_strict_build(tmp_path):
    """What the strict build is for: a copy of the site with one link to a
    heading that is not there does not build."""
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "docs", copy / "docs")
    for name in ("mkdocs.yml", "BENCHMARKS.md", "CHANGELOG.md", "bench-scale.svg"):
        shutil.copy2(REPO / name, copy / name)
    shutil.copytree(REPO / "contrib", copy / "contrib")
    (copy / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "mkdocs_hooks.py", copy / "scripts")
    assert mkdocs(copy / "mkdocs.yml", tmp_path / "site").returncode == 0
    page = copy / "docs" / "modes.md"
    page.write_text(page.read_text() + "\nSee [the guards](mirror.md#no-such-heading).\n")
    built = mkdocs(copy / "mkdocs.yml", tmp_path / "site2")
    assert built.returncode != 0 and "no-such-heading" in built.stdout + built.stderr


def test_the_pages_that_show_commands_mark_them_to_run():
    marked = sorted(p.name for p in (REPO / "docs").glob("*.md") if runnable_blocks(p))
    assert marked == sorted(PAGES_THAT_RUN)


@pytest.mark.slow
@pytest.mark.parametrize("name", PAGES_THAT_RUN)
def test_the_page_s_commands_run(name, tmp_path):
    run_blocks(REPO / "docs" / name, tmp_path / "work")
    work = tmp_path / "work"
    if name == "getting-started.md":
        assert (work / "converted" / "mp3" / "Sine Quartet" / "2019 - Tones" / "01 Opening.mp3").is_file()
    if name == "mirror.md":
        assert (work / "mirror" / "mp3" / "Noise Band").is_dir()
        assert not (work / "mirror" / "mp3" / "Noise Ensemble").exists()
    if name == "profiles.md":
        assert sorted(p.name for p in (work / "stick" / "mp3").iterdir()) == [
            "Noise Ensemble",
            "Sine Quartet",
            "Surround Co",  # fat32 names: no trailing dot
        ]


def test_every_long_option_is_documented():
    """Each --option of flac2all and flac2all_worker is named somewhere in
    the README or the docs (the man pages list them all; the docs say what
    they are for)."""
    text = (REPO / "README.md").read_text() + "".join(p.read_text() for p in (REPO / "docs").glob("*.md"))
    flags = [
        flag
        for parser in (cli.build_parser(), worker_cli.build_parser())
        for action in parser._actions
        for flag in action.option_strings
        if flag.startswith("--")
    ]
    assert len(flags) > 40
    assert [flag for flag in flags if flag not in text] == []


def test_the_product_carries_no_development_history():
    """No issue numbers or dates of work in the code, the docs or the README."""
    files = [REPO / "README.md", *(REPO / "docs").rglob("*.md"), *(REPO / "flac2all").rglob("*.py")]
    found = []
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\bissue \d|\(issue|\b20\d\d-\d\d-\d\d\b", line, re.I):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == []
