"""A full disk is one cause, however it surfaces (an encoder's own words, a
copy, a write that failed without saying why), and halts the run with one
message; quota and read-only are named as what they are."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mutagen import MutagenError

from flac2all.errors import DISK_FULL, TaskError, disk_full_cause
from flac2all.model import Action, Settings, Status, Task
from flac2all.running.procs import ProcessGroup
from flac2all.running.runner import execute_batch
from tests.conftest import decodes, make_flac, read_log, run_flac2all, status_by_name, temp_files


@pytest.fixture
def tiny_disk(tmpfs) -> Path:
    return tmpfs(300)


@pytest.fixture
def small_disk(tmpfs) -> Path:
    """Room for about one of the outputs FILLING makes, plus the state and the log."""
    return tmpfs(400)


FULL = r"no space left on device \({folder}'s filesystem: \d+(\.\d)? MB free\)"


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/out/x.mp3")


def wrapped_in_a_task_error() -> TaskError:
    try:
        try:
            raise enospc()
        except OSError as exc:
            raise TaskError(f"cannot write /out/x.mp3: {exc.strerror}") from None
    except TaskError as exc:
        return exc


@pytest.mark.parametrize(
    "problem",
    [
        pytest.param(enospc(), id="oserror"),
        pytest.param(MutagenError(enospc()), id="mutagen-wrapping-it"),
        pytest.param(wrapped_in_a_task_error(), id="task-error-from-it"),
        pytest.param(
            "ffmpeg exited with status 1: Error closing file file:/o/x.m4a: No space left on device", id="text"
        ),
    ],
)
def test_a_full_disk_is_one_cause_however_it_surfaces(tmp_path, problem):
    cause = disk_full_cause(problem, tmp_path)
    assert cause is not None and re.fullmatch(FULL.format(folder=re.escape(str(tmp_path))), cause), cause


def test_quota_and_read_only_are_named_as_what_they_are(tmp_path):
    quota = disk_full_cause(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), tmp_path)
    assert quota is not None and quota.startswith(f"disk quota exceeded ({tmp_path}'s filesystem: ")
    assert disk_full_cause("cannot create folder /o/a: Read-only file system", tmp_path) == (
        f"read-only file system ({tmp_path})"
    )


@pytest.mark.parametrize(
    "problem",
    [
        OSError(errno.EACCES, "Permission denied"),
        OSError(errno.EFBIG, "File too large"),
        "lame was killed by SIGXFSZ",
        "lame exited with status 1: lame: unrecognized option --V",
        # A write that failed without saying why, on a filesystem with room:
        # not called a full disk.
        "lame exited with status 1: Error writing mp3 output",
        "opusenc exited with status 1: Encoding aborted: write failed",
    ],
)
def test_other_failures_are_not_a_full_disk(tmp_path, problem):
    assert disk_full_cause(problem, tmp_path) is None


@pytest.mark.parametrize(
    "said",
    [
        "lame exited with status 1: Error writing mp3 output",
        "oggenc exited with status 1: Failed writing data to output stream",
        "opusenc exited with status 1: Encoding aborted: write failed",
        "flac exited with status 1: An error occurred while writing; the most common cause is that the disk is full.",
    ],
)
def test_a_write_that_failed_without_saying_why_on_a_full_disk_is_one(tiny_disk, said):
    with pytest.raises(OSError):
        (tiny_disk / "filler").write_bytes(b"\0" * 400 * 1024)
    cause = disk_full_cause(said, tiny_disk)
    assert cause is not None and re.fullmatch(FULL.format(folder=re.escape(str(tiny_disk))), cause), cause


# Seconds of audio whose output in each mode takes about 260 KB: on a 400 KiB
# disk at most one fits, and what it leaves holds the state and the log.
FILLING = {"mp3": 16, "vorbis": 26, "opus": 28, "flac": 3, "aac": 11}


def full_disk_status(outdir: Path) -> str:
    return rf"ERROR: no space left on device \({re.escape(str(outdir))}'s filesystem: \d+(\.\d)? MB free\)"


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(FILLING))
def test_a_full_disk_is_one_cause_whatever_the_encoder_says(tmp_path, small_disk, mode):
    # lame, oggenc, opusenc and flac each say a write failed in their own
    # words (most without saying why); ffmpeg says "No space left" and may
    # still exit 0. The user reads one cause.
    root = tmp_path / "in"
    for i in range(3):
        make_flac(root / f"{i}.flac", seconds=FILLING[mode])
    run = run_flac2all(mode, "-o", small_disk, root, timeout=90)
    assert run.returncode == 1, run.stdout + run.stderr
    rows = read_log(small_disk)
    failed = [r for r in rows if r["conversion_status"].startswith("ERROR")]
    not_started = [r for r in rows if r["conversion_status"].startswith("NOT STARTED: no space left on device")]
    assert failed and len(rows) - len(failed) - len(not_started) <= 1, rows
    # After the first, the run starts nothing more (test_a_full_disk_halts_the_run).
    assert len(rows) == 3 and (not not_started or f"{len(not_started)} task(s) not started" in run.stdout)
    for row in failed:
        assert re.fullmatch(full_disk_status(small_disk), row["conversion_status"]), row
        assert not Path(row["outfile"]).exists()
    for row in rows:
        if row not in failed and row not in not_started:
            assert decodes(Path(row["outfile"]))
    assert temp_files(small_disk) == []


def test_a_copy_onto_a_full_disk_says_so(tmp_path, small_disk):
    root = tmp_path / "in"
    # The costliest job first, one at a time: the encode, then the copy that
    # fills the disk (after which nothing more would start).
    make_flac(root / "a.flac", seconds=8)
    (root / "booklet.pdf").write_bytes(os.urandom(500 * 1024))
    run = run_flac2all("opus", "-c", "-t", "1", "-o", small_disk, root, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    status = status_by_name(small_disk)
    assert status["a.flac"] == "SUCCESS"
    assert re.fullmatch(full_disk_status(small_disk), status["booklet.pdf"]), status
    assert temp_files(small_disk) == []


def test_the_result_of_a_task_on_a_full_disk_is_marked_for_the_engine(tmp_path, small_disk):
    src = make_flac(tmp_path / "in" / "a.flac", seconds=FILLING["mp3"])
    settings = Settings(tmp_path / "in", small_disk, ("mp3",), threads=1)
    with pytest.raises(OSError):
        (small_disk / "filler").write_bytes(b"\0" * 500 * 1024)
    (small_disk / "filler").write_bytes(b"\0" * 300 * 1024)  # 100 KiB left: not enough
    task = Task(src, "mp3", small_disk / "mp3" / "a.mp3", Action.ENCODE, src.stat().st_size)
    [result] = execute_batch((task,), settings, ProcessGroup())
    assert result.status is Status.FAILED
    assert result.cause == DISK_FULL
    assert re.fullmatch(full_disk_status(small_disk), result.status_text)


@pytest.mark.slow
def test_a_full_disk_halts_the_run_with_one_message(tmp_path, small_disk):
    root = tmp_path / "in"
    for i in range(6):
        make_flac(root / f"{i}.flac", seconds=FILLING["opus"])
    run = run_flac2all("opus", "-t", "1", "-o", small_disk, root, timeout=90)
    assert run.returncode == 1, run.stdout + run.stderr
    rows = read_log(small_disk)  # written although the disk is full: its room was set aside
    failed = [r for r in rows if r["conversion_status"].startswith("ERROR")]
    done = [r for r in rows if r["conversion_status"] == "SUCCESS"]
    assert len(failed) == 1 and len(done) <= 1, rows
    assert re.fullmatch(full_disk_status(small_disk), failed[0]["conversion_status"])
    # Every task has its row: those never started say so, and why.
    assert len(rows) == 6
    not_started = [r for r in rows if r not in failed and r not in done]
    assert {r["conversion_status"] for r in not_started} == {f"NOT STARTED: {failed[0]['conversion_status'][7:]}"}
    stopped = [line for line in run.stdout.splitlines() if "STOPPED after" in line]
    assert len(stopped) == 1 and "no space left on device" in stopped[0]
    assert f"{len(not_started)} task(s) not started" in stopped[0]
    assert temp_files(small_disk) == []


def test_a_disk_full_at_the_log_leaves_no_stale_summary_and_a_row_per_task(tmp_path, tmpfs, fake_bin):
    """An encoder that fills OUTDIR's disk to the last byte (a download, a
    backup writing beside it): the log goes into the room set aside for it,
    every task has its row, and the previous run's summary does not stand
    as this one's."""
    disk = tmpfs(1024)
    root = tmp_path / "in"
    for i in range(3):
        make_flac(root / f"{i}.flac")
    assert run_flac2all("mp3", "-q", "-o", disk, root, timeout=60).returncode == 0
    summary = disk / ".flac2all" / "last-summary.txt"
    assert "STOPPED" not in summary.read_text()
    fills = fake_bin(
        "lame", f'cat /dev/zero > {disk / "filler"} 2>/dev/null\necho "Error writing mp3 output" >&2\nexit 1\n'
    )
    run = run_flac2all("mp3", "-f", "-t", "1", "-o", disk, root, path_prefix=fills, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    rows = read_log(disk)
    assert len(rows) == 3, rows
    statuses = sorted(r["conversion_status"] for r in rows)
    assert re.fullmatch(full_disk_status(disk), statuses[0])
    assert statuses[1:] == [f"NOT STARTED: {statuses[0][7:]}"] * 2
    assert not summary.exists() or "STOPPED after" in summary.read_text()


def test_no_free_inodes_is_one_cause_named_as_such(tmp_path, tmpfs, fake_bin):
    """A filesystem out of inodes with bytes to spare: lame's own "Can't
    init outfile" and "no space left (N MB free)" each told half of it."""
    disk = tmpfs(64 * 1024)
    subprocess.run(["mount", "-o", "remount,nr_inodes=200", str(disk)], check=True)
    root = tmp_path / "in"
    for i in range(3):
        make_flac(root / f"{i}.flac")
    (disk / "fill").mkdir()
    # Before the real lame runs, the disk's inodes are taken to the last one.
    lame = shutil.which("lame")
    body = f'i=0; while : > {disk}/fill/$i 2>/dev/null; do i=$((i+1)); done\nexec {lame} "$@"\n'
    folder = fake_bin("lame", body)
    run = run_flac2all("mp3", "-t", "1", "-o", disk, root, path_prefix=folder, timeout=120)
    assert run.returncode == 1, run.stdout + run.stderr
    statuses = sorted(r["conversion_status"] for r in read_log(disk))
    fs = re.escape(f"{disk}'s filesystem")
    cause = rf"no free inodes \({fs}: no more files can be made there, although \d+ MB are free\)"
    assert re.fullmatch(f"ERROR: {cause}", statuses[0]), statuses
    # Not started after the halt (one already handed to the slot may have run into it too).
    assert all(re.fullmatch(f"(NOT STARTED|ERROR): {cause}", s) for s in statuses[1:]), statuses
    assert "init outfile" not in run.stdout and "no space left" not in run.stdout
