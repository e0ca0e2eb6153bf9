"""Output staging: temp names, stage, commit, sweep.

An output is written under a hidden temporary name beside its final name
(keeping the extension: encoders and mutagen choose the format by it) and
renamed into place only when complete, so a file under a final name is
always complete. The folder is held by descriptor (``dirs``): the temp
file is made, checked and renamed relative to it, never through a link;
one that encoders or the tagger open by name is in a 0700 folder of its
own, given to them through its descriptor.
Imports nothing of flac2all's but its errors and ``dirs``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from flac2all import dirs
from flac2all.errors import TaskError, describe_oserror

log = logging.getLogger("flac2all")

TEMP_PREFIX = ".flac2all-tmp-"
COPY_CHUNK = 1024 * 1024
TEMP_NAME = re.compile(r"\.flac2all-tmp-[0-9a-f]{12}(\.[^/]*)?")


class TempPath(type(Path())):  # type: ignore[misc]
    """A staged output's temp name, as encoders and mutagen are given it
    (a Path), with what ``commit`` needs (``stage``)."""

    stage: Stage


class Stage:
    """Where a temp file is: a folder of its own (``room``, 0700: nobody
    else can put a link or another file under its name) made in the final
    name's folder (``dir_fd``), both held by descriptor, or that folder
    itself (``room`` None: a file never opened by its name); and the file
    made there: by us (``fd``, made O_EXCL without following links), or
    else by the encoder it is given to."""

    def __init__(self, dir_fd: int, room: str | None, room_fd: int, name: str, fd: int | None) -> None:
        self.dir_fd, self.room, self.room_fd, self.name, self.fd = dir_fd, room, room_fd, name, fd

    def is_ours(self) -> bool:
        """The temp name names a regular file, not a link, of one name
        only, and the very one we made if we made it."""
        try:
            st = os.stat(self.name, dir_fd=self.room_fd, follow_symlinks=False)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            return False
        return self.fd is None or dirs.same_file(st, os.fstat(self.fd))


def temp_name(final: Path, dir_fd: int | None = None) -> str:
    """A hidden name for ``final``'s temp file that ends with its name, so
    that it keeps its extension (encoders and mutagen choose the format by
    it) and an encoder's messages name the file; with the extension alone
    where that would be too long for the folder, and none where even that
    would be (the temp name must fit wherever the final name fits)."""
    name = f"{TEMP_PREFIX}{secrets.token_hex(6)}"
    longest = 255
    if dir_fd is not None:
        with suppress(OSError, ValueError):
            longest = os.fpathconf(dir_fd, "PC_NAME_MAX")
    for ending in (f".{final.name}", final.suffix):
        if len(os.fsencode(name + ending)) <= longest:
            return name + ending
    return name


def through(dir_fd: int, folder: Path, name: str) -> TempPath:
    """The path the encoders are given for ``name`` in the held folder:
    through the descriptor itself where the system has /proc (a folder
    swapped for a link meanwhile is never followed), else ``folder``/name
    (``commit`` still refuses a temp file that is not the one made)."""
    via = Path(f"/proc/{os.getpid()}/fd/{dir_fd}")
    try:
        if dirs.same_file(os.stat(via), os.fstat(dir_fd)):
            return TempPath(via, name)
    except OSError:
        pass
    return TempPath(folder, name)


@contextmanager
def staged(final: Path, top: Path | None = None, made: bool = False, fd_only: bool = False) -> Iterator[TempPath]:
    """Yield a temp path for ``final``; whatever is left there afterwards is
    removed. ``final``'s folder is held by descriptor, opened (and made)
    level by level from ``top`` (the output folder) without following
    links. ``made``: the temp file is made here (O_EXCL, no link followed)
    for the caller to write through ``stage.fd``; else the encoder makes
    it (flac will not write over a file). A temp file opened by its name
    (by an encoder, the tagger) is in a folder of its own (``Stage``); one
    written only through ``stage.fd`` (``fd_only``) needs none."""
    top = final.parent if top is None else top  # a caller that knows no output folder
    with dirs.held(final.parent, top, create=True) as dir_fd:
        room = None if fd_only else f"{TEMP_PREFIX}{secrets.token_hex(6)}"
        room_fd = dir_fd if room is None else dirs.open_private(dir_fd, room, final.parent / room)
        name = temp_name(final, room_fd)
        fd = None
        try:
            if made or fd_only:
                try:
                    fd = dirs.create_file(name, room_fd)
                except OSError as exc:
                    raise TaskError(f"cannot write in {final.parent}: {describe_oserror(exc)}") from None
            # Where nobody opens it by name, its plain path will do.
            tmp = TempPath(final.parent, name) if room is None else through(room_fd, final.parent / room, name)
            tmp.stage = Stage(dir_fd, room, room_fd, name, fd)
            yield tmp
        finally:
            if fd is not None:
                os.close(fd)
            if room is None:
                with suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dir_fd)
            else:
                clear(room_fd)
                os.close(room_fd)
                with suppress(OSError):
                    os.rmdir(room, dir_fd=dir_fd)


def clear(fd: int) -> int:
    """Remove the temp files in the folder ``fd``; how many."""
    removed = 0
    for name in os.listdir(fd):
        if TEMP_NAME.fullmatch(name):
            with suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
                removed += 1
    return removed


def copy_data(src: int, dst: int, size: int) -> int:
    """Copy the first ``size`` bytes of ``src`` into the new file ``dst``,
    holes as holes where the system says where they are (SEEK_DATA and
    SEEK_HOLE, as ``cp --sparse=auto``). Returns how many bytes were
    missing (the source shrank)."""
    pos = 0
    while pos < size:
        try:
            data = os.lseek(src, pos, os.SEEK_DATA)
            hole = os.lseek(src, data, os.SEEK_HOLE)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole up to the end
                break
            data, hole = pos, size  # no SEEK_DATA here: all of it
        except AttributeError:
            data, hole = pos, size
        pos = data
        end = min(hole, size)
        while pos < end:
            chunk = memoryview(os.pread(src, min(COPY_CHUNK, end - pos), pos))
            if not chunk:
                return size - pos
            while chunk:  # a write may be short (a disk filling up): the rest again, which says why
                done = os.pwrite(dst, chunk, pos)
                chunk, pos = chunk[done:], pos + done
    shrunk = size - os.fstat(src).st_size
    if shrunk > 0:
        return shrunk
    os.ftruncate(dst, size)  # a trailing hole, kept a hole
    return 0


def fill(tmp: TempPath, src: int, st: os.stat_result) -> int:
    """Copy ``src`` (``st``: its stat when looked at) into a temp file
    ``staged`` made, through its own descriptor: its data (``copy_data``;
    the bytes missing returned) and its permissions, without setuid, setgid
    or sticky bit, nor any extended attribute."""
    left = copy_data(src, tmp.stage.fd, st.st_size)
    os.fchmod(tmp.stage.fd, st.st_mode & 0o777)
    return left


def emptied(tmp: Path) -> None:
    """Clear a staged temp file for another try: removed for the encoder
    to make it anew, or emptied if we made it (``commit`` takes only that
    one)."""
    stage = getattr(tmp, "stage", None)
    if stage is None:
        tmp.unlink(missing_ok=True)
    elif stage.fd is None:
        with suppress(FileNotFoundError):
            os.unlink(stage.name, dir_fd=stage.room_fd)
    else:
        os.ftruncate(stage.fd, 0)


def remove_stale_temps(folders: set[Path]) -> int:
    """Delete the temp files a killed run (or a killed worker) left in
    ``folders``; call it only when nothing else writes there. The engine
    passes the folders its tasks write into: a killed task's output is not
    committed (or its row not updated), so the next run with the same
    settings has a task that writes in its folder; a no-op run lists none."""
    removed = 0
    for folder in folders:
        try:
            # Not through a link: one put where a folder was would have us
            # delete in its target.
            fd = os.open(folder, dirs.FOLDER_FLAGS)
        except (FileNotFoundError, NotADirectoryError):  # not made yet: nothing left in it
            continue
        except OSError as exc:
            log.warning("cannot look for temp files left in %s: %s", folder, describe_oserror(exc))
            continue
        try:
            stale = [name for name in os.listdir(fd) if TEMP_NAME.fullmatch(name)]
            for name in stale:
                try:
                    removed += remove_temp(name, fd)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning(
                        "cannot remove the temp file %s left by an earlier run: %s",
                        folder / name,
                        describe_oserror(exc),
                    )
        except OSError as exc:
            log.warning("cannot look for temp files left in %s: %s", folder, describe_oserror(exc))
        finally:
            os.close(fd)
    return removed


def remove_temp(name: str, dir_fd: int) -> int:
    """Remove a temp file, or a temp file's folder and what is in it (never
    following a link); how many temp files were removed."""
    if not stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return 1
    room = os.open(name, dirs.FOLDER_FLAGS, dir_fd=dir_fd)
    try:
        removed = clear(room)
    finally:
        os.close(room)
    os.rmdir(name, dir_fd=dir_fd)
    return removed


def commit(tmp: Path, final: Path) -> None:
    """Atomically put a finished temp file under its final name: in the
    folder ``staged`` holds, and only if the temp name still names the file
    it made there (not a link or another file put in its place)."""
    stage = getattr(tmp, "stage", None)
    try:
        if stage is None:
            os.replace(tmp, final)
            return
        if not stage.is_ours():
            raise TaskError(f"cannot write {final}: its temp file was replaced while being written")
        os.replace(stage.name, final.name, src_dir_fd=stage.room_fd, dst_dir_fd=stage.dir_fd)
    except OSError as exc:
        raise TaskError(f"cannot write {final}: {describe_oserror(exc)}") from None


def remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents while empty, never ``top`` itself
    (each through its parent held from ``top``: never through a link)."""
    dirs.remove_empty(folder, top)
