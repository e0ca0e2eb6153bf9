"""Tasks as they fail in the field: a wrong encoder option behind an adapter
stage, a -c copy of a device or a FIFO, an output that only breaks once
tagged, a full disk. Real encoders, real files, tiny real fakes on PATH."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from mutagen import MutagenError
from mutagen.flac import FLAC
from mutagen.mp3 import MP3

from flac2all.errors import DISK_FULL, TaskError, disk_full_cause
from flac2all.model import Action, Settings, Status, Task
from flac2all.running.blame import blame
from flac2all.running.procs import ProcessGroup
from flac2all.running.runner import execute_batch
from tests.conftest import decodes, make_flac, read_log, run_flac2all, temp_files

BAD_OPTION = "ERROR: lame exited with status 1: lame: unrecognized option --V"


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    """A stereo source (lame reads it directly), a 5.1 one and a 96 kHz one
    (an ffmpeg stage adapts them for lame). Long enough that the adapter's
    output does not fit in a pipe before lame exits."""
    root = tmp_path / "in"
    make_flac(root / "stereo.flac", seconds=0.5)
    make_flac(root / "surround.flac", seconds=3, channels=6)
    make_flac(root / "hires.flac", seconds=2, rate=96000, bits=24)
    return root


@pytest.mark.parametrize("modes", ["mp3", "mp3,opus"])
def test_a_bad_lame_option_is_blamed_on_lame_behind_an_adapter(shapes, tmp_path, modes, fake_bin):
    # One mode: a plain pipe; two: one decoder feeding both (the fan-out).
    # The real lame, refusing an option only when it encodes (a refused
    # --lame-options is caught before the run: tests/test_field_options.py).
    path = fake_bin("lame", f'exec -a lame {shutil.which("lame")} --V 2 "$@"\n')
    out = tmp_path / "out"
    run = run_flac2all(modes, "-o", out, shapes, path_prefix=path, timeout=60)
    assert run.returncode == 1
    rows = read_log(out)
    mp3 = [r for r in rows if r["format"] == "mp3"]
    assert len(mp3) == 3
    for row in mp3:
        assert row["conversion_status"] == BAD_OPTION, row
        assert row["return_code"] == "1"
    assert all(r["conversion_status"] == "SUCCESS" for r in rows if r["format"] == "opus")
    assert "Broken pipe" not in run.stdout
    assert temp_files(out) == []


def test_an_encoder_exiting_at_once_is_blamed_not_the_adapter_feeding_it(shapes, tmp_path, fake_bin):
    path = fake_bin("lame", "echo 'lame: out of patience' >&2\nexit 3\n")
    out = tmp_path / "out"
    run = run_flac2all("mp3", "-o", out, shapes, path_prefix=path, timeout=60)
    assert run.returncode == 1
    rows = read_log(out)
    assert len(rows) == 3
    for row in rows:
        assert row["conversion_status"] == "ERROR: lame exited with status 3: lame: out of patience", row
        assert row["return_code"] == "3"


PIPE = -signal.SIGPIPE
FFMPEG_EPIPE = "av_interleaved_write_frame(): Broken pipe\nError closing file pipe:1: Broken pipe\n"
ADAPTED = ("flac", "ffmpeg", "lame")


@pytest.mark.parametrize(
    "programs,codes,stderrs,expected",
    [
        pytest.param(ADAPTED, [0, 0, 0], ["", "", ""], None, id="success"),
        pytest.param(
            ADAPTED,
            [PIPE, 1, 1],
            ["", FFMPEG_EPIPE, "lame: unrecognized option --V\n"],
            "lame exited with status 1: lame: unrecognized option --V",
            id="encoder-behind-adapter",
        ),
        pytest.param(
            ADAPTED,
            [1, 0, 1],
            ["flac: ERROR while decoding data\n", "", "lame: input ended early, error\n"],
            "flac exited with status 1: flac: ERROR while decoding data",
            id="decoder-first-then-truncated-input",
        ),
        pytest.param(
            ("flac", "lame"),
            [PIPE, 0],
            ["", ""],
            "lame exited with status 0 before reading all its input",
            id="only-a-symptom-is-left: its reader left early",
        ),
        pytest.param(
            ("flac", "ffmpeg", "lame"),
            [0, PIPE, 0],
            ["", "", ""],
            "lame exited with status 0 before reading all its input",
            id="the adapter's reader left early",
        ),
        pytest.param(
            ("flac", "ffmpeg"),
            [0, 0],
            ["", "Error writing trailer of file:/o/x.m4a: No space left on device\n"],
            "ffmpeg reported: Error writing trailer of file:/o/x.m4a: No space left on device",
            id="ffmpeg-exits-0-on-a-full-disk",
        ),
        pytest.param(
            ADAPTED,
            [PIPE, 1, 1],
            ["", FFMPEG_EPIPE, "lame: some progress\nError writing mp3 output\nlame: bye\n"],
            "lame exited with status 1: Error writing mp3 output",
            id="write-failure-line-preferred",
        ),
    ],
)
def test_blame_names_the_stage_that_failed_first(programs, codes, stderrs, expected):
    failure = blame(list(programs), codes, stderrs)
    assert (failure.message if failure else None) == expected


# -- one cause for a full disk -------------------------------------------------


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


# -- safe copies ----------------------------------------------------------------


@pytest.fixture
def hostile_extras(tmp_path: Path) -> Path:
    """An album whose extras include a link to /dev/zero named like cover
    art and a FIFO nobody writes to."""
    root = tmp_path / "in"
    make_flac(root / "album" / "01.flac")
    (root / "album" / "cover.jpg").symlink_to("/dev/zero")
    os.mkfifo(root / "album" / "notes.txt")
    (root / "album" / "booklet.pdf").write_bytes(b"%PDF-1.4 booklet\n" * 100)
    return root


def test_copy_takes_regular_files_only(hostile_extras, tmp_path):
    out = tmp_path / "out"
    run = run_flac2all("mp3", "-c", "-o", out, hostile_extras, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    status = {Path(r["infile"]).name: r["conversion_status"] for r in read_log(out)}
    assert status == {
        "01.flac": "SUCCESS",
        "booklet.pdf": "SUCCESS (copied)",
        "cover.jpg": "ERROR: not a regular file (character device)",
        "notes.txt": "ERROR: not a regular file (FIFO)",
    }
    copied = out / "mp3" / "album" / "booklet.pdf"
    assert copied.read_bytes() == (hostile_extras / "album" / "booklet.pdf").read_bytes()
    assert not (out / "mp3" / "album" / "cover.jpg").exists()
    assert not (out / "mp3" / "album" / "notes.txt").exists()
    assert temp_files(out) == []


def test_folder_art_that_is_not_a_regular_file_is_not_read(hostile_extras, tmp_path):
    out = tmp_path / "out"
    run = run_flac2all("mp3", "--embed-folder-art", "-o", out, hostile_extras, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert [r["conversion_status"] for r in read_log(out)] == ["SUCCESS"]
    assert not MP3(out / "mp3" / "album" / "01.mp3").tags.getall("APIC")


# -- outputs checked as they will be renamed into place ---------------------------


def flac_test(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["flac", "--test", "--silent", str(path)], capture_output=True, text=True)


def test_the_provenance_tag_never_pushes_a_flac_over_its_comment_limit(tmp_path):
    # libFLAC takes 100,000 comments and refuses 100,001 (checked with flac
    # itself below): the provenance tag would be the 100,001st.
    src = make_flac(tmp_path / "in" / "many.flac")
    audio = FLAC(src)
    audio.tags.extend([("NOTE", str(i)) for i in range(100_000)])
    audio.save()
    assert flac_test(src).returncode == 0
    out = tmp_path / "out"
    run = run_flac2all("flac", "-o", out, tmp_path / "in", timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    [row] = read_log(out)
    assert row["conversion_status"] == "SUCCESS (provenance tag left out: FLAC allows at most 100000 comments)"
    output = out / "flac" / "many.flac"
    assert flac_test(output).returncode == 0
    tags = FLAC(output).tags
    assert len(tags) == 100_000 and "FLAC2ALL_SOURCE" not in tags
    # The state knows the output all the same: the next run leaves it alone.
    before = output.stat()
    again = run_flac2all("flac", "-o", out, tmp_path / "in", timeout=60)
    assert again.returncode == 0
    assert not again.rows()[0]["conversion_status"].startswith("ERROR")
    after = output.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_flac_output_that_fails_its_test_once_tagged_is_not_kept(tmp_path, fake_bin):
    # Stands for any way tagging could spoil a file: flac --test says no.
    make_flac(tmp_path / "in" / "a.flac")
    real = shutil.which("flac")
    path = fake_bin(
        "flac",
        f"""
if [ "$1" = "--test" ]; then
  echo "$(basename "${{@: -1}}"): ERROR while decoding metadata" >&2
  exit 1
fi
exec {real} "$@"
""",
    )
    out = tmp_path / "out"
    run = run_flac2all("flac", "-o", out, tmp_path / "in", path_prefix=path, timeout=60)
    assert run.returncode == 1
    [row] = read_log(out)
    assert row["conversion_status"] == (
        "ERROR: output fails its check once tagged: flac exited with status 1: a.flac: ERROR while decoding metadata"
    )
    assert not (out / "flac" / "a.flac").exists()
    assert temp_files(out) == []


# -- a full disk, for real ----------------------------------------------------------

# Seconds of audio whose output in each mode takes about 260 KB: on a 400 KiB
# disk at most one fits, and what it leaves holds the state and the log.
FILLING = {"mp3": 16, "vorbis": 26, "opus": 28, "flac": 3, "aac": 11}


def full_disk_status(outdir: Path) -> str:
    return rf"ERROR: no space left on device \({re.escape(str(outdir))}'s filesystem: \d+(\.\d)? MB free\)"


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
    failed = [r for r in rows if r["conversion_status"] != "SUCCESS"]
    assert failed and len(rows) - len(failed) <= 1, rows
    # After the first, the run starts nothing more (test_a_full_disk_halts_the_run).
    assert len(rows) == 3 or f"{3 - len(rows)} task(s) not started" in run.stdout
    for row in failed:
        assert re.fullmatch(full_disk_status(small_disk), row["conversion_status"]), row
        assert not Path(row["outfile"]).exists()
    for row in rows:
        if row not in failed:
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
    status = {Path(r["infile"]).name: r["conversion_status"] for r in read_log(small_disk)}
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


def test_a_full_disk_halts_the_run_with_one_message(tmp_path, small_disk):
    root = tmp_path / "in"
    for i in range(6):
        make_flac(root / f"{i}.flac", seconds=FILLING["opus"])
    run = run_flac2all("opus", "-t", "1", "-o", small_disk, root, timeout=90)
    assert run.returncode == 1, run.stdout + run.stderr
    rows = read_log(small_disk)  # written although the disk is full: its room was set aside
    failed = [r for r in rows if r["conversion_status"] != "SUCCESS"]
    assert len(failed) == 1 and len(rows) <= 2, rows
    assert re.fullmatch(full_disk_status(small_disk), failed[0]["conversion_status"])
    stopped = [line for line in run.stdout.splitlines() if "STOPPED after" in line]
    assert len(stopped) == 1 and "no space left on device" in stopped[0]
    assert f"{6 - len(rows)} task(s) not started" in stopped[0]
    assert temp_files(small_disk) == []
