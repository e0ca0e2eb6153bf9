"""The man pages flac2all(1) and flac2all_worker(1): made from the parsers
(scripts/make_manpages.py), current, installed with the package, rendered
by groff without a warning, and naming every option."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from flac2all.cluster import worker_cli
from flac2all.face import cli
from tests.conftest import REPO, require

PARSERS = {"flac2all": cli.build_parser, "flac2all_worker": worker_cli.build_parser}


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_manpages", REPO / "scripts" / "make_manpages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def groff(page: Path, *options: str) -> subprocess.CompletedProcess[str]:
    require("groff")
    return subprocess.run(
        ["groff", "-man", "-Tutf8", *options, str(page)], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_committed_pages_are_what_the_parsers_make_now(tmp_path):
    written = generator().write(tmp_path)
    assert sorted(p.name for p in written) == ["flac2all.1", "flac2all_worker.1"]
    for page in written:
        committed = REPO / "man" / page.name
        assert committed.read_text() == page.read_text(), (
            f"man/{page.name} is stale: run .venv/bin/python scripts/make_manpages.py"
        )


def test_the_pages_name_nothing_of_the_machine_they_were_made_on(tmp_path):
    """--threads' help says this machine's CPU count; the page says 'the CPU count'."""
    text = (REPO / "man" / "flac2all.1").read_text()
    assert re.search(r"here \d", text) is None and "(default: the CPU count and one or two more," in text


def test_the_pages_are_installed_into_share_man_man1():
    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    assert data_files == {"share/man/man1": ["man/flac2all.1", "man/flac2all_worker.1"]}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_groff_renders_the_page_without_a_warning(name):
    done = groff(REPO / "man" / f"{name}.1", "-ww", "-z")
    assert done.returncode == 0 and done.stderr == "", done.stderr


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_option_of_the_parser_is_in_its_page(name):
    done = groff(REPO / "man" / f"{name}.1", "-P-cbou")
    assert done.returncode == 0, done.stderr
    # Whichever glyph this groff gives \- (ASCII, or a minus sign) and '-'.
    text = done.stdout.replace("\u2212", "-").replace("\u2010", "-")
    parser = PARSERS[name]()
    flags = [flag for action in parser._actions for flag in action.option_strings]
    assert "--help" in flags and "--version" in flags and len(flags) > 8
    missing = [flag for flag in flags if f" {flag}" not in text]
    assert missing == []
    assert text.splitlines()[0].startswith(name.upper())
