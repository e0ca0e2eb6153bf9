"""Nothing the run writes in the output folder goes through a link planted
there: not the log's, the summary's or the plan's temp file, not the state,
its folder or its lock."""

from __future__ import annotations

import os

import pytest

from flac2all import dirs
from flac2all.errors import TaskError
from tests.conftest import make_flac, read_log, run_flac2all
from tests.running.flipping import planted


@pytest.fixture
def victim(tmp_path):
    """A folder outside OUTDIR with files someone wants kept."""
    folder = tmp_path / "victim"
    folder.mkdir()
    for name in ("log", "summary", "plan", "plan.json", "state"):
        (folder / name).write_text("precious")
    return folder


def test_links_planted_at_the_temp_names_are_never_followed(tmp_path, victim):
    make_flac(tmp_path / "in" / "a.flac")
    out = tmp_path / "out"
    (out / ".flac2all").mkdir(parents=True)
    (out / ".conversion_results.log.tmp").symlink_to(victim / "log")
    (out / ".flac2all" / ".last-summary.txt.tmp").symlink_to(victim / "summary")
    (out / ".plan.json.tmp").symlink_to(victim / "plan")
    (out / "plan.json").symlink_to(victim / "plan.json")
    before = planted(victim)
    run = run_flac2all("mp3", "-o", out, "--plan-json", out / "plan.json", tmp_path / "in", timeout=60)
    assert run.returncode == 0, run.stderr
    assert planted(victim) == before
    [row] = read_log(out)
    assert row["conversion_status"] == "SUCCESS"
    for written in ("conversion_results.log", ".flac2all/last-summary.txt", "plan.json"):
        assert not (out / written).is_symlink() and (out / written).stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == [".flac2all", "conversion_results.log", "mp3", "plan.json"]


def test_a_state_folder_planted_as_a_link_is_refused_and_gets_nothing(tmp_path, victim):
    make_flac(tmp_path / "in" / "a.flac")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".flac2all").symlink_to(victim)
    before = planted(victim)
    run = run_flac2all("mp3", "-o", out, tmp_path / "in", timeout=60)
    assert run.returncode == 2
    assert f"{out / '.flac2all'} is a symbolic link: refusing to write through it" in run.stderr
    assert planted(victim) == before


def test_a_state_planted_as_a_link_is_refused(tmp_path, victim):
    make_flac(tmp_path / "in" / "a.flac")
    out = tmp_path / "out"
    (out / ".flac2all").mkdir(parents=True)
    (out / ".flac2all" / "state.sqlite").symlink_to(victim / "state")
    before = planted(victim)
    run = run_flac2all("mp3", "-o", out, tmp_path / "in", timeout=60)
    assert run.returncode == 2
    assert "state.sqlite is not a regular file (a link?): refusing to open it" in run.stderr
    assert planted(victim) == before
    assert not os.path.exists(out / "mp3")


@pytest.mark.parametrize("proc", ["/proc", "none"])
def test_a_workers_copied_source_must_have_been_opened_inside_the_input_folder(tmp_path, monkeypatch, proc):
    """With /proc (the descriptor's own path) and without it (FreeBSD: the
    file opened must be the one its name inside the input folder leads to):
    a source opened through a link swapped in is refused."""
    if proc == "none":  # a real folder in place of /proc, with no descriptors in it
        (tmp_path / "proc").mkdir()
        monkeypatch.setattr(dirs, "PROC", tmp_path / "proc")
    library, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    (library / "A").mkdir(parents=True)
    elsewhere.mkdir()
    (library / "A" / "cover.jpg").write_bytes(b"ours")
    (elsewhere / "cover.jpg").write_bytes(b"secret")
    monkeypatch.setattr(dirs, "SOURCES_IN", os.path.realpath(library))
    source = library / "A" / "cover.jpg"
    fd = os.open(source, os.O_RDONLY)
    try:
        dirs.check_source(fd, source)  # opened inside: taken
    finally:
        os.close(fd)
    fd = os.open(elsewhere / "cover.jpg", os.O_RDONLY)  # as if A was a link to elsewhere when opened
    try:
        with pytest.raises(TaskError, match="opened outside the run's input folder"):
            dirs.check_source(fd, source)
    finally:
        os.close(fd)
