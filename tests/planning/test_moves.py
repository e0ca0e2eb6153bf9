"""The state is trusted as a map of what may be deleted or moved only
inside OUTDIR: a row that names a file outside it is ignored."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import make_flac, read_log, run_flac2all


def test_a_state_row_naming_a_file_outside_outdir_never_has_it_deleted(tmp_path):
    make_flac(tmp_path / "in" / "a.flac")
    make_flac(tmp_path / "in" / "b.flac")
    out = tmp_path / "out"
    first = run_flac2all("mp3", "-o", out, tmp_path / "in", timeout=60)
    assert first.returncode == 0, first.stderr
    victim = tmp_path / "victim.mp3"
    victim.write_bytes(b"precious")
    st = victim.stat()
    # A row as --delete would trust it: its source gone, the file on disk
    # its recorded size and time; its output one level above OUTDIR.
    with sqlite3.connect(out / ".flac2all" / "state.sqlite") as db:
        row = list(db.execute("SELECT * FROM outputs WHERE output = ?", (b"mp3/b.mp3",)).fetchone())
        row[0], row[1], row[9], row[10] = b"../victim.mp3", b"gone.flac", st.st_size, st.st_mtime_ns
        db.execute(f"INSERT INTO outputs VALUES ({','.join('?' * len(row))})", row)
    run = run_flac2all("mp3", "-o", out, "--delete", "--delete-anyway", tmp_path / "in", timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert victim.read_bytes() == b"precious"
    assert f"the state names {out}/../victim.mp3, outside {out}: ignored" in run.stdout + run.stderr
    assert (out / "mp3" / "a.mp3").exists() and (out / "mp3" / "b.mp3").exists()


@pytest.mark.parametrize(
    "name", ["notes.txt", "mp3/../notes.txt", ".flac2all/lock", "mp3/../.flac2all/lock", "conversion_results.log"]
)
def test_a_state_row_naming_a_file_of_outdir_no_mode_writes_never_has_it_deleted(tmp_path, name):
    """Inside OUTDIR but in no mode's tree: the user's own notes, the
    state's folder, the log. A row naming one (its size and time matching)
    had it deleted as an orphan."""
    make_flac(tmp_path / "in" / "a.flac")
    make_flac(tmp_path / "in" / "b.flac")
    out = tmp_path / "out"
    first = run_flac2all("mp3", "-o", out, tmp_path / "in", timeout=60)
    assert first.returncode == 0, first.stderr
    victim = Path(os.path.normpath(out / name))
    if not victim.exists():
        victim.write_bytes(b"precious")
    before = victim.read_bytes()
    st = victim.stat()
    with sqlite3.connect(out / ".flac2all" / "state.sqlite") as db:
        row = list(db.execute("SELECT * FROM outputs WHERE output = ?", (b"mp3/b.mp3",)).fetchone())
        row[0], row[1], row[9], row[10] = name.encode(), b"gone.flac", st.st_size, st.st_mtime_ns
        db.execute(f"INSERT INTO outputs VALUES ({','.join('?' * len(row))})", row)
    run = run_flac2all("mp3", "-o", out, "--delete", "--delete-anyway", tmp_path / "in", timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "deleted " not in run.stdout
    assert f"the state names {out / name}, where no output goes: ignored" in run.stdout + run.stderr
    if name != "conversion_results.log":  # (this run's log replaced it)
        assert victim.read_bytes() == before


def test_a_tag_edit_onto_another_outputs_path_keeps_the_old_output_with_delete(tmp_path):
    """The new path is another source's, so the task is refused; its source
    is still there and its old output is all it has: kept, not deleted as
    the orphan of a gone source."""
    from mutagen.flac import FLAC

    for n, title in enumerate(("one", "two", "three", "four", "five")):
        make_flac(tmp_path / "in" / f"{n}" / "t.flac", seconds=0.1, tags={"TITLE": title})
    out, args = tmp_path / "out", ("--path-format", "{title}", "--delete")
    assert run_flac2all("flac", "-o", out, *args, tmp_path / "in", timeout=60).returncode == 0
    edited = FLAC(tmp_path / "in" / "1" / "t.flac")
    edited["TITLE"] = "one"
    edited.save()
    result = run_flac2all("flac", "-o", out, *args, tmp_path / "in", timeout=60)
    assert result.returncode == 1 and "1/t.flac has the same output" not in result.stdout
    assert "0/t.flac has the same output" in result.stdout
    assert sorted(p.name for p in (out / "flac").iterdir()) == [
        "five.flac",
        "four.flac",
        "one.flac",
        "three.flac",
        "two.flac",
    ]
    assert "0 orphans deleted" in result.stdout
    (kept,) = [r for r in read_log(out) if r["outfile"] == str(out / "flac" / "two.flac")]
    assert "its source is here, but its new output was refused" in kept["conversion_status"]
