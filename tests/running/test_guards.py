"""The run's guards, before any work: a missing, read-only or unwritable
mirror, a file where a folder should be, a lock that cannot be taken, an
empty or unmounted library. Each is one line and exit status 2, never a
traceback nor a misleading success; the --allow-* flags let an odd input
through."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flac2all.model import Settings, SourceFacts
from flac2all.planning.discovery import Source, Tree
from flac2all.records import Record
from flac2all.running.guards import check_sources, same_device
from tests.conftest import make_flac, run_flac2all
from tests.running.folders import MODES, listing, one_line_error, run, statuses, unmount


def remount_readonly(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


def test_missing_parents_of_outdir_are_created(lib, tmp_path, spy):
    out = tmp_path / "new" / "deep" / "out"
    result, _ = run(lib, out, spy)
    assert result.returncode == 0 and len(result.rows()) == 8


def plant(kind: str, out: Path, tmp_path: Path) -> Path:
    """Put something in OUTDIR's way; return the path it names."""
    if kind == "outdir is a file":
        out.write_text("x")
        return out
    if kind == "outdir links nowhere":
        out.symlink_to(tmp_path / "unmounted")
        return out
    if kind == "a parent is a file":
        (tmp_path / "afile").write_text("x")
        return tmp_path / "afile"
    (out / ".flac2all").parent.mkdir()
    if kind == ".flac2all is a file":
        (out / ".flac2all").write_text("x")
        return out / ".flac2all"
    (out / ".flac2all").mkdir()
    lock = out / ".flac2all" / "lock"
    if kind == "lock is a folder":
        lock.mkdir()
    elif kind == "lock is a FIFO":
        os.mkfifo(lock)
    elif kind == "lock is a link":
        (tmp_path / "precious").write_text("keep me")
        lock.symlink_to(tmp_path / "precious")
    return lock


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, words",
    [
        ("outdir is a file", ["is a file, not a folder"]),
        ("outdir links nowhere", ["is a link to", "unmounted, which does not exist"]),
        ("a parent is a file", ["cannot create output folder", "afile is a file, not a folder"]),
        (".flac2all is a file", ["cannot write into output folder", ".flac2all is a file, not a folder"]),
        ("lock is a folder", ["cannot lock", "is not a regular file"]),
        ("lock is a FIFO", ["cannot lock", "is not a regular file"]),
        ("lock is a link", ["cannot lock", "is not a regular file"]),
    ],
)
def test_a_file_in_the_way_of_outdir_is_one_line_and_exit_2(lib, tmp_path, spy, kind, words):
    out = tmp_path / "afile" / "out" if kind == "a parent is a file" else tmp_path / "out"
    planted = plant(kind, out, tmp_path)
    before = listing(tmp_path / "out") if (tmp_path / "out").is_dir() else None
    result, started = run(lib, out, spy)
    message = one_line_error(result, *words)
    assert str(planted) in message
    assert started == []
    if before is not None:
        assert listing(tmp_path / "out") == before  # nothing made, nothing emptied
    if kind == "lock is a link":
        assert (tmp_path / "precious").read_text() == "keep me"
    assert not (tmp_path / "unmounted").exists()


def run_without_dac_override(*args: str | Path) -> subprocess.CompletedProcess:
    """flac2all as a user that permission bits apply to: root without the
    capabilities that override them (any other user as it is)."""
    argv = [sys.executable, "-m", "flac2all", *map(str, args)]
    if os.geteuid() == 0:
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_an_unwritable_outdir_is_one_line_and_exit_2(lib, mirrored, tmp_path):
    before = listing(mirrored)
    mirrored.chmod(0o555)
    parent = tmp_path / "locked"
    parent.mkdir(mode=0o555)
    try:
        result = run_without_dac_override(MODES, "-o", mirrored, lib)
        fresh = run_without_dac_override(MODES, "-o", parent / "out", lib)
        dry = run_without_dac_override(MODES, "--dry-run", "-o", mirrored, lib)
    finally:
        mirrored.chmod(0o755)
        parent.chmod(0o755)
    one_line_error(result, f"cannot write into output folder {mirrored}: Permission denied")
    one_line_error(fresh, f"cannot create output folder {parent / 'out'}: Permission denied")
    assert dry.returncode == 0 and "skip    8" in dry.stdout, dry.stderr
    assert listing(mirrored) == before


@pytest.mark.parametrize("side", ["input", "output"])
def test_a_folder_this_user_may_not_enter_is_one_line_naming_it(lib, tmp_path, side):
    if os.geteuid() != 0:
        pytest.skip("needs root, to give a folder to another user")
    locked = tmp_path / "locked"
    shutil.copytree(lib, locked / "music")
    locked.chmod(0o700)
    os.chown(locked, 65534, 65534)  # nobody's: root without DAC override may not enter it
    out = tmp_path / "out"
    args = ("mp3", "-o", out, locked / "music") if side == "input" else ("mp3", "-o", locked / "out", lib)
    for dry in ((), ("--dry-run",)):
        result = run_without_dac_override(*args, *dry)
        line = one_line_error(result, f"permission denied on {locked} ")
        assert f"cannot reach {side} folder" in line
    assert not out.exists()


def test_a_readonly_mirror_refuses_to_run_but_plans(lib, tmp_path, spy, tmpfs):
    disk = tmpfs(folder=tmp_path / "disk")
    out = disk / "out"
    made, _ = run(lib, out, spy)
    assert made.returncode == 0
    (lib / "A" / "0 song.flac").unlink()  # a plan with something to do
    remount_readonly(disk)
    before = listing(disk)
    result, started = run(lib, out, spy)
    one_line_error(result, f"cannot write into output folder {out}: Read-only file system", "--dry-run")
    fresh, _ = run(lib, disk / "new" / "out", spy)
    one_line_error(fresh, "cannot create output folder", "Read-only file system")
    dry, _ = run(lib, out, spy, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "skip    6" in dry.stdout and "orphan  2" in dry.stdout and "Traceback" not in dry.stderr
    assert started == [] and listing(disk) == before


@pytest.mark.slow
def test_an_input_without_flac_is_refused_unless_allowed(tmp_path, spy):
    empty = tmp_path / "music"
    (empty / "A").mkdir(parents=True)
    (empty / "A" / "cover.jpg").write_bytes(b"not a FLAC")
    out = tmp_path / "out"
    result, started = run(empty, out, spy)
    one_line_error(result, f"no FLAC files under {empty}", "--allow-empty")
    assert not out.exists() and started == []  # refused before OUTDIR is made
    dry, _ = run(empty, out, spy, "--dry-run")
    assert dry.returncode == 0 and "dry run" in dry.stdout
    assert f"WARNING: a run would refuse: no FLAC files under {empty}" in dry.stderr
    allowed, _ = run(empty, out, spy, "--allow-empty")
    assert allowed.returncode == 0 and allowed.rows() == [] and "Traceback" not in allowed.stderr


@pytest.mark.slow
def test_a_library_missing_most_sources_looks_unmounted(lib, mirrored, spy):
    unmount(lib, keep=1)
    before = listing(mirrored, strict=False)
    result, started = run(lib, mirrored, spy)
    one_line_error(result, "source looks unmounted: only 1 of the 4 sources", str(lib), "--allow-missing-sources")
    assert started == [] and listing(mirrored, strict=False) == before  # outputs, state, the last log
    # --delete's own refusal is not reached: this one says more.
    deleting, _ = run(lib, mirrored, spy, "--delete")
    one_line_error(deleting, "source looks unmounted")
    before = listing(mirrored)
    dry, _ = run(lib, mirrored, spy, "--dry-run")
    assert dry.returncode == 0 and "skip    2" in dry.stdout and "orphan  6" in dry.stdout
    assert "WARNING: a run would refuse: source looks unmounted: only 1 of the 4" in dry.stderr
    assert listing(mirrored) == before
    allowed, started = run(lib, mirrored, spy, "--allow-missing-sources")
    assert allowed.returncode == 0 and started == []
    assert sum(s.startswith("SUCCESS (orphan") for s in (r["conversion_status"] for r in allowed.rows())) == 6


@pytest.mark.slow
def test_an_empty_library_with_a_known_state_needs_both_flags(lib, mirrored, spy):
    unmount(lib, keep=0)
    result, _ = run(lib, mirrored, spy, "--allow-empty")
    one_line_error(result, "source looks unmounted: only 0 of the 4 sources")
    allowed, started = run(lib, mirrored, spy, "--allow-empty", "--allow-missing-sources")
    assert allowed.returncode == 0 and started == []


def test_most_sources_gone_with_delete_names_both_flags_it_takes(lib, mirrored, spy):
    unmount(lib, keep=1)
    deleting, started = run(lib, mirrored, spy, "--delete")
    one_line_error(deleting, "--allow-missing-sources if they are really gone (and --delete-anyway to delete")
    kept, _ = run(lib, mirrored, spy)
    assert "--delete-anyway" not in kept.stderr and started == []


def test_half_of_the_sources_is_not_unmounted(lib, mirrored, spy):
    unmount(lib, keep=2)
    result, started = run(lib, mirrored, spy)
    assert result.returncode == 0 and started == [] and result.stderr == ""


@pytest.mark.slow
def test_a_library_on_another_file_system_looks_unmounted(lib, tmp_path, spy, tmpfs):
    """The disk is mounted at the library's folder; unmounted, the folder
    underneath holds a stale full copy: every source is there, the file
    system is not the one the state recorded."""
    disk = tmpfs(folder=tmp_path / "disk")
    shutil.copytree(lib, disk / "music")
    out = tmp_path / "out"
    first, _ = run(disk / "music", out, spy)
    assert first.returncode == 0
    subprocess.run(["umount", str(disk)], check=True)
    shutil.copytree(lib, disk / "music")  # the stale copy, same names and mtimes
    result, started = run(disk / "music", out, spy)
    one_line_error(result, "source looks unmounted", "on another file system than at the last run")
    assert started == []
    dry, _ = run(disk / "music", out, spy, "--dry-run")
    assert dry.returncode == 0 and "on another file system" in dry.stderr
    moved, _ = run(disk / "music", out, spy, "--allow-missing-sources")
    assert moved.returncode == 0 and statuses(moved) == {"SUCCESS (skipped: up to date)"}
    # The library has moved for good: the new file system is remembered.
    again, _ = run(disk / "music", out, spy)
    assert again.returncode == 0 and again.stderr == ""


def settings(tmp_path: Path) -> Settings:
    return Settings(input_dir=tmp_path / "in", outdir=tmp_path / "out", modes=("mp3",))


def records_for(tmp_path: Path, names: list[str]) -> dict[Path, Record]:
    facts = SourceFacts(1, 1, "md5", "t", "p")
    out = {}
    for name in names:
        output = tmp_path / "out" / "mp3" / f"{name}.mp3"
        out[output] = Record(output, tmp_path / "in" / f"{name}.flac", "mp3", facts, "h", 1, 1)
    return out


def tree_of(tmp_path: Path, names: list[str]) -> Tree:
    return Tree(flacs=[Source(tmp_path / "in" / f"{n}.flac", Path(f"{n}.flac"), 1, 1) for n in names])


@pytest.mark.parametrize("found, refused", [(0, True), (4, True), (5, False), (10, False)])
def test_fewer_than_half_of_the_known_sources_is_refused(tmp_path, found, refused):
    names = [str(n) for n in range(10)]
    (tmp_path / "in").mkdir()
    check = check_sources(settings(tmp_path), tree_of(tmp_path, names[:found]), records_for(tmp_path, names), None)
    assert bool(check.problem) is refused and check.complete is not refused


def test_a_new_mirror_is_never_unmounted(tmp_path):
    (tmp_path / "in").mkdir()
    assert check_sources(settings(tmp_path), Tree(), {}, None).problem == ""


def test_same_device_by_number_or_by_file_system_id():
    assert same_device("40:123", "40:999")  # a tmpfs remounted: a new id
    assert same_device("2049:123", "2065:123")  # a USB disk plugged in another order
    assert not same_device("2049:123", "40:999")
    assert not same_device("2049:0", "40:0")  # no id: the numbers decide
    assert same_device("", "40:1") and same_device("40:1", "")


def test_help_documents_the_allow_flags():
    help_text = run_flac2all("--help").stdout
    for flag in ("--allow-empty", "--allow-missing-sources"):
        entry = " ".join(help_text.split(f"\n  {flag}", 1)[1].split("\n  -", 1)[0].split())
        assert entry.startswith("run even if") and "(refused otherwise:" in entry, entry


def test_the_guards_start_no_process():
    """As docs/architecture.md says: guards.py only looks at files."""
    probe = (
        "import sys, flac2all.running.guards\n"
        "print('subprocess' in sys.modules or 'flac2all.running.procs' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == "False"


@pytest.fixture
def nine_albums(tmp_path: Path) -> Path:
    root = tmp_path / "nine"
    for n in range(9):
        make_flac(root / f"Artist {n}" / "Album" / "1.flac", seconds=0.1, tags={"TITLE": f"t{n}"})
    return root


@pytest.mark.slow
def test_delete_removes_one_album_of_a_small_library(nine_albums, tmp_path, spy):
    out = tmp_path / "out"
    assert run(nine_albums, out, spy)[0].returncode == 0
    shutil.rmtree(nine_albums / "Artist 3")
    result, _ = run(nine_albums, out, spy, "--delete")  # 2 of 18 outputs: not a missing library
    assert result.returncode == 0, result.stderr
    assert not (out / "mp3" / "Artist 3").exists() and (out / "mp3" / "Artist 4" / "Album" / "1.mp3").exists()
    for n in range(4, 8):
        shutil.rmtree(nine_albums / f"Artist {n}")
    refused, _ = run(nine_albums, out, spy, "--delete")  # 8 of 16: half of them
    line = one_line_error(refused, "--delete would remove 8 of the 16 outputs", "(half of them or more)")
    assert "those of 'Artist 4' (2), 'Artist 5' (2)" in line and "add --delete-anyway" in line


@pytest.mark.slow
def test_delete_anyway_says_delete_too(nine_albums, tmp_path, spy):
    out = tmp_path / "out"
    assert run(nine_albums, out, spy)[0].returncode == 0
    for n in range(6):
        shutil.rmtree(nine_albums / f"Artist {n}")
    result, _ = run(nine_albums, out, spy, "--delete-anyway", "--allow-missing-sources")
    assert result.returncode == 0, result.stderr
    assert sorted(p.parent.parent.name for p in (out / "mp3").rglob("*.mp3")) == ["Artist 6", "Artist 7", "Artist 8"]
    assert "12 orphans deleted" in result.stdout
