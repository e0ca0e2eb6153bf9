"""Output staging: temp names, stage, commit, sweep.

An output is written under a hidden temporary name beside its final name
(keeping the extension: encoders and mutagen choose the format by it) and
renamed into place only when complete, so a file under a final name is
always complete. The folder is held by descriptor (``dirs``): the temp
file is made, checked and renamed relative to it, never through a link;
one that encoders or the tagger open by name is in a 0700 folder of its
own, given to them through its descriptor.
The rooms are ``rooms``'s; a copy's bytes are written by ``copies``. Imports
nothing of flac2all's but its errors, ``dirs`` and ``rooms``.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from flac2all import dirs
from flac2all.errors import TaskError, describe_oserror
from flac2all.running.rooms import TEMP_NAME, TEMP_PREFIX, Room, Rooms, clear, held_here

log = logging.getLogger("flac2all")


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
        self.committed = False  # renamed onto its final name: nothing left under the temp name

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


def temp_name(final: Path, longest: int | None = None, dir_fd: int | None = None) -> str:
    """A hidden name for ``final``'s temp file that ends with its name, so
    that it keeps its extension (encoders and mutagen choose the format by
    it) and an encoder's messages name the file; with the extension alone
    where that would be too long for the folder (``longest`` bytes, else
    asked of ``dir_fd``), and none where even that would be (the temp name
    must fit wherever the final name fits)."""
    name = f"{TEMP_PREFIX}{secrets.token_hex(6)}"
    if longest is None:
        longest = 255
        if dir_fd is not None:
            with suppress(OSError, ValueError):
                longest = os.fpathconf(dir_fd, "PC_NAME_MAX")
    for ending in (f".{final.name}", final.suffix):
        if len(os.fsencode(name + ending)) <= longest:
            return name + ending
    return name


ROOMS_KEPT = 16
_kept: Rooms | None = None
_kept_lock = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child keeps none of its parent's rooms: they are the
    parent's to remove."""
    global _kept, _kept_lock
    _kept, _kept_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


@contextmanager
def reusing() -> Iterator[None]:
    """Within it, this process's encodes share their temp folders and the
    output folder's descriptor (``Rooms``); all are removed at its end
    (those a killed process leaves are swept as its temp files are)."""
    global _kept
    with _kept_lock:
        if _kept is None:
            _kept = Rooms(ROOMS_KEPT)
        else:
            _kept.scopes += 1
        kept = _kept
    try:
        yield
    finally:
        with _kept_lock:
            kept.scopes -= 1
            last = kept.scopes == 0
            if last and _kept is kept:
                _kept = None
        if last:
            kept.close()


@contextmanager
def staged(final: Path, top: Path | None = None, made: bool = False, fd_only: bool = False) -> Iterator[TempPath]:
    """Yield a temp path for ``final``; whatever is left there afterwards is
    removed. ``final``'s folder is held by descriptor, opened (and made)
    level by level from ``top`` (the output folder) without following
    links. ``made``: the temp file is made here (O_EXCL, no link followed)
    for the caller to write through ``stage.fd``; else the encoder makes
    it (flac will not write over a file). A temp file opened by its name
    (by an encoder, the tagger) is in a folder of its own (``Room``: one
    per encode, or kept for the next ones within ``reusing``); one written
    only through ``stage.fd`` (``fd_only``) needs none."""
    kept = _kept if top is not None else None  # a caller that knows no output folder keeps nothing
    top = final.parent if top is None else top
    top_fd = kept.top(top) if kept is not None else None
    with dirs.held(final.parent, top, create=True, top_fd=top_fd) as dir_fd:
        room = None
        if not fd_only:
            room = kept.take(dir_fd, final.parent) if kept is not None else Room(dir_fd, final.parent)
        room_fd = dir_fd if room is None else room.fd
        name = temp_name(final, None if room is None else room.name_max, room_fd)
        fd, stage = None, None
        try:
            if made or fd_only:
                try:
                    fd = dirs.create_file(name, room_fd)
                except OSError as exc:
                    raise TaskError(f"cannot write in {final.parent}: {describe_oserror(exc)}") from None
            # Where nobody opens it by name, its plain path will do.
            tmp = TempPath(final.parent, name) if room is None else TempPath(room.base, name)
            tmp.stage = stage = Stage(dir_fd, None if room is None else room.name, room_fd, name, fd)
            yield tmp
        finally:
            if fd is not None:
                os.close(fd)
            # (Committed, the name is gone: an unlink that finds nothing
            # still costs tens of microseconds on ext4, two a source.)
            if stage is None or not stage.committed:
                with suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=room_fd)
            if room is not None:
                if kept is not None:
                    kept.give_back(room)
                else:
                    room.remove()


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


def remove_stale_temps(folders: set[Path], top: Path) -> int:
    """Delete the temp files a killed run (or a killed worker) left in
    ``folders``, each held from ``top`` (the output folder) level by level
    without following links: a link put where a folder was would have us
    delete in its target. Call it only when nothing else writes there but
    this process (its own temp folders are left). The engine passes the
    folders its tasks write into: a killed task's output is not committed
    (or its row not updated), so the next run with the same settings has a
    task that writes in its folder; a no-op run lists none."""
    removed = 0
    for folder in folders:
        try:
            fd = dirs.open_folder(folder, top)
        except (FileNotFoundError, NotADirectoryError):  # not made yet: nothing left in it
            continue
        except TaskError as exc:
            log.warning("cannot look for temp files left in %s: %s", folder, exc)
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
        if held_here(room):  # this process's, in use or kept
            return 0
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
        stage.committed = True
    except OSError as exc:
        raise TaskError(f"cannot write {final}: {describe_oserror(exc)}") from None


def remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents while empty, never ``top`` itself
    (each through its parent held from ``top``: never through a link)."""
    kept = _kept
    if kept is not None:  # a room kept in it would keep it
        kept.drop_idle()
    dirs.remove_empty(folder, top)
