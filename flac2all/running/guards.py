"""What must hold before a run changes anything: an output folder it can
create, write and lock, and an input that looks like the library the mirror
was made from (not empty, not the empty mount point of an unmounted disk).

Each problem is one sentence for the user (a UsageError, exit status 2),
found before any work; a dry run gets the input's as warnings instead.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flac2all import dirs
from flac2all.errors import OutdirBusyError, TaskError, UsageError, describe_oserror
from flac2all.model import Settings
from flac2all.planning.discovery import Tree
from flac2all.records import Record, Records, texts
from flac2all.state import STATE_DIR

# The state's meta key for the input folder's file system (see input_device).
DEVICE_KEY = "input_device"


def locked_folder(path: Path) -> Path | None:
    """The folder, among ``path``'s parents, that this user may not enter
    (no search permission: mode 700 and another owner), so that nothing
    below it can be seen; None when there is none."""
    for p in (*reversed(path.parents), path):
        try:
            os.lstat(p)
        except PermissionError:
            return p.parent
        except OSError:  # missing (made later) or in the way: the other checks say so
            return None
    return None


def check_reachable(path: Path, what: str) -> None:
    """Refuse ``path`` (``what``: "input folder", "output folder") when a
    folder above it cannot be entered: one line naming that folder, not a
    traceback from the first stat."""
    locked = locked_folder(path)
    if locked is not None:
        raise UsageError(
            f"cannot reach {what} {path}: permission denied on {locked} (this user may not enter it;"
            " change its permissions or run as a user who may)"
        )


def check_input_dir(input_dir: Path) -> None:
    """Refuse an INPUTDIR that is missing, no folder, or under a folder
    this user may not enter."""
    check_reachable(input_dir, "input folder")
    try:
        is_dir = input_dir.is_dir()
    except OSError as exc:
        raise UsageError(f"cannot read input folder {input_dir}: {describe_oserror(exc)}") from None
    if not is_dir:
        raise UsageError(f"input folder {input_dir} does not exist or is not a folder")


def not_a_folder(path: Path) -> Path | None:
    """The first of ``path`` and its parents that exists but is no folder."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return None if p.is_dir() else p
    return None


def why(path: Path, exc: OSError) -> str:
    """An OS error on ``path`` in a few words, naming a file in the way."""
    blocker = not_a_folder(path) if exc.errno in (errno.ENOTDIR, errno.EEXIST) else None
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    hint = " (a dry run, --dry-run, reads a read-only mirror)" if exc.errno == errno.EROFS else ""
    return describe_oserror(exc) + hint


def check_outdir(outdir: Path) -> None:
    """Refuse an OUTDIR that is, or lies under, a file or a folder this user
    may not enter (changes nothing)."""
    check_reachable(outdir, "output folder")
    if outdir.is_symlink() and not outdir.exists():  # an unmounted disk's mount point, linked to
        raise UsageError(f"output folder {outdir} is a link to {os.readlink(outdir)}, which does not exist")
    blocker = not_a_folder(outdir)
    if blocker == outdir:
        raise UsageError(f"output folder {outdir} is a file, not a folder")
    if blocker is not None:
        raise UsageError(f"cannot create output folder {outdir}: {blocker} is a file, not a folder")


def prepare_outdir(outdir: Path) -> None:
    """Make OUTDIR, with its missing parents, or say why it cannot be; then
    check that it can be written (its own files: the log, mode folders)."""
    check_outdir(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {outdir}: {why(outdir, exc)}") from None
    # access(2) changes nothing, and asks the file system (NFS, ACLs).
    if not os.access(outdir, os.W_OK | os.X_OK):
        cause = errno.EROFS if os.statvfs(outdir).f_flag & os.ST_RDONLY else errno.EACCES
        exc = OSError(cause, os.strerror(cause))
        raise UsageError(f"cannot write into output folder {outdir}: {why(outdir, exc)}")


@contextmanager
def outdir_lock(outdir: Path, name: str = "lock") -> Iterator[None]:
    """One run at a time per output folder (two would race on the same
    outputs and delete each other's temp files). Taking it is the first
    write into OUTDIR, so a read-only or unwritable one is refused here.
    ``name``: another lock of the state folder (one --watch per OUTDIR)."""
    folder = outdir / STATE_DIR
    lock = folder / name
    try:
        held = dirs.open_folder(folder, outdir, create=True)  # never through a link
    except TaskError as exc:
        raise UsageError(f"cannot write into output folder {outdir}: {exc}") from None
    try:
        # No O_TRUNC and no link followed: a "lock" planted as a link to
        # some file must not empty it; O_NONBLOCK: nor a FIFO hang the run.
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(lock.name, flags, 0o644, dir_fd=held)
    except OSError as exc:
        if exc.errno in (errno.EISDIR, errno.ELOOP, errno.ENXIO):
            raise UsageError(f"cannot lock {outdir}: {lock} is not a regular file (remove it)") from None
        raise UsageError(f"cannot write into output folder {outdir}: {why(lock, exc)}") from None
    finally:
        os.close(held)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"cannot lock {outdir}: {lock} is not a regular file (remove it)")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutdirBusyError(f"another flac2all run is writing into {outdir}; wait for it to finish") from None
        except OSError as exc:
            raise UsageError(f"cannot lock {lock}: {describe_oserror(exc)}") from None
        yield
    finally:
        os.close(fd)


def empty_input(settings: Settings, tree: Tree) -> str | None:
    """Why an input with no FLAC at all is refused (None: it has some, or
    --allow-empty)."""
    if tree.flacs or settings.allow_empty:
        return None
    unread = ""
    if tree.errors:
        folder, cause = tree.errors[0]
        unread = f" ({len(tree.errors)} folders could not be read; {folder}: {cause})"
    chosen = " that --include and --exclude select" if settings.include or settings.exclude else ""
    return f"no FLAC files under {settings.input_dir}{chosen}{unread}; add --allow-empty if that is right"


def input_device(folder: Path) -> str:
    """Which file system ``folder`` is on: its device number and the file
    system's id ("" when unknown). Either may change while the other holds
    (a USB disk plugged in another order, a remounted NFS share)."""
    try:
        return f"{os.stat(folder).st_dev}:{os.statvfs(folder).f_fsid}"
    except OSError:
        return ""


def same_device(now: str, before: str) -> bool:
    if not now or not before:
        return True  # unknown: no evidence of a change
    dev, _, fsid = now.partition(":")
    dev_before, _, fsid_before = before.partition(":")
    return dev == dev_before or (fsid == fsid_before and fsid not in ("", "0"))


@dataclass(frozen=True)
class SourceCheck:
    problem: str  # "" when the input looks like the library the state knows
    # Most of the state's sources are there: this input's device may be
    # recorded as the library's (not when an unmounted disk is overridden).
    complete: bool


def found_in(tree: Tree, records: Mapping[Path, Record]) -> tuple[int, int]:
    """(how many of the sources the state records are in ``tree`` or,
    left out of the walk (--exclude), on disk, as a mirror planned folder
    by folder finds them; how many it records)."""
    # As text: no Record or Path made for a million rows.
    known = Records.of(records).sources()
    present = texts(s.path for s in tree.flacs) | texts(s.path for s in tree.others)
    elsewhere = sum(1 for source in known - present if os.path.lexists(source))
    return len(known & present) + elsewhere, len(known)


def check_sources(
    settings: Settings, tree: Tree, records: Mapping[Path, Record], device_before: str | None
) -> SourceCheck:
    """``check_counts`` of the sources of ``tree`` against the ``records``."""
    return check_counts(settings, *found_in(tree, records), device_before)


def check_counts(settings: Settings, found: int, known: int, device_before: str | None) -> SourceCheck:
    """Does the input look like the library the mirror was made from
    (``found`` of the ``known`` sources the state records are in it)? An
    unmounted disk leaves an empty folder (or a stale one on another file
    system): every output would be an orphan, and --delete would wipe them."""
    if found * 2 < known:
        # --delete would then refuse to delete as many: both flags said at once.
        delete_too = (
            " (and --delete-anyway to delete their outputs)" if settings.delete and not settings.delete_anyway else ""
        )
        return SourceCheck(
            f"source looks unmounted: only {found} of the {known} sources recorded in the state of "
            f"{settings.outdir} are under {settings.input_dir}; mount it or check the path, "
            f"or add --allow-missing-sources if they are really gone{delete_too}",
            complete=False,
        )
    device = input_device(settings.input_dir)
    if device_before is not None and not same_device(device, device_before):
        return SourceCheck(
            f"source looks unmounted: {settings.input_dir} is on another file system than at the last run "
            f"(device {device.split(':')[0]}, was {device_before.split(':')[0]}); mount the right one, "
            "or add --allow-missing-sources if the library has moved",
            complete=True,
        )
    return SourceCheck("", complete=True)
