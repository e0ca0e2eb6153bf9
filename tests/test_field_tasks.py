"""Tasks as they fail in the field: a wrong encoder option behind an adapter
stage, a -c copy of a device or a FIFO, an output that only breaks once
tagged, a full disk. Real encoders, real files, tiny real fakes on PATH."""

from __future__ import annotations

import errno
import os
import re
import subprocess
from pathlib import Path

import pytest
from mutagen import MutagenError

from flac2all.errors import TaskError, disk_full_cause

# -- one cause for a full disk -------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 300 KiB tmpfs (needs root, as CI has)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        if os.environ.get("CI") == "true" and os.geteuid() == 0:
            pytest.fail(f"cannot mount a tmpfs: {proc.stderr!r}")
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


FULL = r"no space left on device \({folder}'s filesystem: \d+\.\d MB free\)"


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
