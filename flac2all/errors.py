"""The error classes and exit statuses of flac2all.

Exceptions are raised inside; ``cli.main`` is the one place that turns them
into messages and exit statuses.
"""

from __future__ import annotations

import errno
import os
import re
from enum import IntEnum
from pathlib import Path


class ExitStatus(IntEnum):
    """What the ``flac2all`` process returns."""

    OK = 0
    FAILURES = 1
    USAGE = 2
    SIGHUP = 128 + 1
    SIGINT = 128 + 2
    SIGTERM = 128 + 15


class Flac2allError(Exception):
    """An error with a message meant for the user."""

    exit_status = ExitStatus.USAGE


class UsageError(Flac2allError):
    """A wrong option, mode or path on the command line."""


class MissingProgramError(Flac2allError):
    """An encoder program needed by the requested modes is not installed."""


class OutdirBusyError(Flac2allError):
    """Another flac2all run is writing into the same output folder."""


class TaskError(Exception):
    """One task failed; becomes a failed TaskResult, never stops the run.

    ``returncode`` is the failing program's exit status, or 1 when no program
    failed (for example a source that is not a FLAC file). ``kind`` names a
    cause the run as a whole cares about (``DISK_FULL``), else is empty.
    """

    def __init__(self, message: str, returncode: int = 1, kind: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.returncode = returncode
        self.kind = kind
        self.stderr = ""  # the failing program's stderr (tail), when a program failed


def describe_oserror(exc: OSError) -> str:
    """'Permission denied' rather than '[Errno 13] Permission denied: ...'."""
    return exc.strerror or str(exc)


# A task's kind of failure when the output's filesystem takes no more data:
# every task after it would fail the same way.
DISK_FULL = "disk-full"

# What the user is told for each errno that means the output's filesystem
# takes no more data, and the words (their strerror) programs print for it.
FULL_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
}
FULL_WORDS = {
    "no space left on device": errno.ENOSPC,
    "disk quota exceeded": errno.EDQUOT,
    "read-only file system": errno.EROFS,
}
FULL_TEXT = re.compile("|".join(FULL_WORDS), re.IGNORECASE)
# What the encoders print when a write failed, without saying why: lame
# ("Error writing mp3 output"), oggenc ("Failed writing data to output
# stream"), opusenc ("Encoding aborted: write failed"), flac ("An error
# occurred while writing; the most common cause is that the disk is full.").
WRITE_FAILED = re.compile(
    r"error writing (mp3 output|id3v[12] tag|lame-tag)|failed writing .* to output stream"
    r"|write failed|error occurred while writing"
    # Or could not make the output file at all: lame's "Can't init outfile";
    # or SQLite's words for a write that failed (the state).
    r"|can't init outfile|disk i/o error|database or disk is full",
    re.IGNORECASE,
)
# Below this much free space, a write that failed without saying why is
# taken for a full disk (an encode needs at least its source's size or so).
NEARLY_FULL = 16 * 1024 * 1024
# Below this many free inodes, a filesystem takes no more files (an encode
# makes one or two: its temp file, a folder): "no space left on device"
# with bytes free.
NEARLY_NO_INODES = 64


def full_errno(exc: BaseException, depth: int = 0) -> int | None:
    """The ENOSPC/EDQUOT/EROFS behind an exception: its own errno, or that
    of an exception it wraps (mutagen's errors carry the OSError in their
    args; ours keep it as their context)."""
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return exc.errno
    if depth > 4:
        return None
    inner = [a for a in exc.args if isinstance(a, BaseException)] + [exc.__cause__, exc.__context__]
    for e in inner:
        if e is not None and (code := full_errno(e, depth + 1)) is not None:
            return code
    return None


def filesystem_of(folder: Path) -> os.statvfs_result | None:
    """``folder``'s filesystem (its nearest existing parent's, if it does
    not exist yet), or None if that cannot be known."""
    for place in (folder, *folder.parents):
        try:
            return os.statvfs(place)
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


def takes_no_more(folder: Path, needed: int = 0, message: str = "") -> bool:
    """Whether ``folder``'s filesystem, as this host sees it, is read-only
    or nearly full (less than ``needed`` bytes or NEARLY_FULL free, or out
    of inodes where it counts them); True when that cannot be known, and
    for a quota (``message`` says so), which statvfs does not show. A
    cluster's master asks it of a worker's full disk: if not, the fault is
    that worker's own mount."""
    if FULL_ERRNOS[errno.EDQUOT] in message:
        return True
    st = filesystem_of(folder)
    if st is None:
        return True
    return bool(st.f_flag & os.ST_RDONLY) or out_of_inodes(st) or st.f_bavail * st.f_frsize < max(needed, NEARLY_FULL)


def disk_full_cause(problem: BaseException | str, folder: Path, needed: int = 0) -> str | None:
    """One message for a filesystem that takes no more data, wherever it
    surfaced in a task (an OSError, a mutagen error wrapping one, an
    encoder's last words), or None when ``problem`` is something else.

    A write that failed without saying why (most encoders) counts only when
    ``folder``'s filesystem is nearly full: less than ``needed`` bytes (or
    NEARLY_FULL) free.
    """
    text = problem if isinstance(problem, str) else str(problem)
    code = None if isinstance(problem, str) else full_errno(problem)
    if code is None and (m := FULL_TEXT.search(text)):
        code = FULL_WORDS[m.group(0).lower()]
    fs = filesystem_of(folder)
    free = None if fs is None else fs.f_bavail * fs.f_frsize
    no_inodes = out_of_inodes(fs)
    nearly_full = no_inodes or (free is not None and free < max(needed, NEARLY_FULL))
    if code is None and WRITE_FAILED.search(text) and nearly_full:
        code = errno.ENOSPC
    if code is None:
        return None
    if code == errno.EROFS:
        return f"{FULL_ERRNOS[code]} ({folder})"
    if free is None:
        return f"{FULL_ERRNOS[code]} ({folder}'s filesystem)"
    mb = f"{free / 1e6:.1f}" if free < 10e6 else f"{free / 1e6:.0f}"
    if code == errno.ENOSPC and no_inodes:
        # Bytes free, but no file can be made: the one cause is the inodes.
        return f"no free inodes ({folder}'s filesystem: no more files can be made there, although {mb} MB are free)"
    return f"{FULL_ERRNOS[code]} ({folder}'s filesystem: {mb} MB free)"


def out_of_inodes(fs: os.statvfs_result | None) -> bool:
    """Whether a filesystem that counts its inodes has (nearly) none left
    (f_files 0: not counted there, as on btrfs)."""
    return fs is not None and fs.f_files > 0 and fs.f_favail < NEARLY_NO_INODES
