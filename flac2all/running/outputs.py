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
import threading
from collections import OrderedDict
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


# Where a process's descriptors are paths that lead to what they hold, not
# to a name: Linux's /proc/PID/fd/N. FreeBSD has none (docs/cluster.md).
PROC = Path("/proc")


def through(dir_fd: int, folder: Path) -> Path:
    """The path the encoders are given for the held folder ``folder``:
    through the descriptor itself where the system shows it in /proc (a
    folder swapped for a link meanwhile is never followed), else
    ``folder`` itself (``commit`` still refuses a temp file that is not
    the one made). Tried each time: /proc may be missing or not mounted."""
    via = PROC / str(os.getpid()) / "fd" / str(dir_fd)
    try:
        # A name looked up below it (not only itself: fdescfs shows the
        # folder's stat on a node nothing can be found in).
        if dirs.same_file(os.stat(via / "."), os.fstat(dir_fd)):
            return via
    except OSError:
        pass
    return folder


class Room:
    """A folder of our own (0700) for temp files opened by name, made in an
    output folder and held open (``fd``), with that folder (``parent_fd``);
    ``base``: the path encoders reach it by (``through``); ``users``: the
    encodes staged in it now."""

    def __init__(self, dir_fd: int, folder: Path) -> None:
        self.name = f"{TEMP_PREFIX}{secrets.token_hex(6)}"
        self.fd = dirs.open_private(dir_fd, self.name, folder / self.name)
        try:
            self.parent_fd = os.dup(dir_fd)
        except BaseException:
            self.remove(dir_fd)
            raise
        self.id = dev_ino(os.fstat(self.fd))
        self.base = through(self.fd, folder / self.name)
        self.name_max = 255
        with suppress(OSError, ValueError):
            self.name_max = os.fpathconf(self.fd, "PC_NAME_MAX")
        self.users = 0
        with _live_lock:
            _live.add(self.id)

    def remove(self, dir_fd: int | None = None) -> None:
        """Close it and remove it (and any temp file left in it)."""
        with suppress(OSError):
            clear(self.fd)
        os.close(self.fd)
        parent = self.parent_fd if dir_fd is None else dir_fd
        with suppress(OSError):
            os.rmdir(self.name, dir_fd=parent)
        if dir_fd is None:
            os.close(self.parent_fd)
            with _live_lock:
                _live.discard(self.id)

    def usable(self) -> bool:
        """Not removed meanwhile (anyone who may write its folder can
        remove it while it is empty). Its folder is not either: it would
        have to be empty first; so a room found by its folder's id is in
        the folder of that id."""
        try:
            return os.fstat(self.fd).st_nlink > 0
        except OSError:
            return False


def dev_ino(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


class Rooms:
    """What a process keeps between its encodes (``reusing``): the output
    folder held once (by its path: the user's choice), and a few rooms,
    one per output folder, each used by every encode into that folder
    instead of a room made and removed for each. A room is looked up by
    the output folder opened anew for each output (level by level from
    the held output folder, without following links), so a folder swapped
    for a link is refused as before; the oldest idle room goes when more
    than ``size`` are kept, all of them when the last ``reusing`` ends."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.tops: dict[str, int] = {}
        self.rooms: OrderedDict[tuple[int, int], Room] = OrderedDict()  # by their output folder's id
        self.scopes = 1
        self.closed = False

    def top(self, top: Path) -> int:
        key = os.path.normpath(top)
        with self.lock:
            fd = self.tops.get(key)
        if fd is None:
            fd = dirs.open_top(top, create=True)
            with self.lock:
                if key in self.tops:
                    os.close(fd)
                fd = self.tops.setdefault(key, fd)
        return fd

    def take(self, dir_fd: int, folder: Path) -> Room:
        """The room in the folder ``dir_fd``, made if there is none."""
        key = dev_ino(os.fstat(dir_fd))
        with self.lock:
            room = self.rooms.get(key)
            if room is not None and room.usable():
                self.rooms.move_to_end(key)
                room.users += 1
                return room
        room = Room(dir_fd, folder)
        room.users = 1
        with self.lock:
            stale = self.rooms.pop(key, None)
            self.rooms[key] = room
            dropped = self.trim()
        if stale is not None and stale.users == 0:
            dropped.append(stale)  # (one in use goes when given back)
        for old in dropped:
            old.remove()
        return room

    def give_back(self, room: Room) -> None:
        with self.lock:
            room.users -= 1
            kept = not self.closed and any(r is room for r in self.rooms.values())
            dropped = self.trim() if kept else ([room] if room.users == 0 else [])
        for old in dropped:
            old.remove()

    def trim(self) -> list[Room]:
        """The idle rooms beyond ``size``, oldest first, taken out (under
        the lock)."""
        dropped = []
        for key in list(self.rooms):
            if len(self.rooms) <= self.size:
                break
            if self.rooms[key].users == 0:
                dropped.append(self.rooms.pop(key))
        return dropped

    def drop_idle(self) -> None:
        """Remove the idle rooms now (a folder is about to be removed if
        empty)."""
        with self.lock:
            idle = [key for key, room in self.rooms.items() if room.users == 0]
            dropped = [self.rooms.pop(key) for key in idle]
        for room in dropped:
            room.remove()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            rooms = [room for room in self.rooms.values() if room.users == 0]
            self.rooms.clear()
            tops, self.tops = list(self.tops.values()), {}
        for room in rooms:
            room.remove()
        for fd in tops:
            os.close(fd)


ROOMS_KEPT = 16
_kept: Rooms | None = None
_kept_lock = threading.Lock()
_live: set[tuple[int, int]] = set()  # the rooms this process holds (the sweep leaves them)
_live_lock = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child holds nothing of its parent's: the rooms are the
    parent's to remove."""
    global _kept, _kept_lock, _live_lock
    _kept, _kept_lock, _live_lock = None, threading.Lock(), threading.Lock()
    _live.clear()


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
        fd = None
        try:
            if made or fd_only:
                try:
                    fd = dirs.create_file(name, room_fd)
                except OSError as exc:
                    raise TaskError(f"cannot write in {final.parent}: {describe_oserror(exc)}") from None
            # Where nobody opens it by name, its plain path will do.
            tmp = TempPath(final.parent, name) if room is None else TempPath(room.base, name)
            tmp.stage = Stage(dir_fd, None if room is None else room.name, room_fd, name, fd)
            yield tmp
        finally:
            if fd is not None:
                os.close(fd)
            with suppress(FileNotFoundError):
                os.unlink(name, dir_fd=room_fd)
            if room is not None:
                if kept is not None:
                    kept.give_back(room)
                else:
                    room.remove()


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
        with _live_lock:
            if dev_ino(os.fstat(room)) in _live:  # this process's, in use or kept
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
    except OSError as exc:
        raise TaskError(f"cannot write {final}: {describe_oserror(exc)}") from None


def remove_empty_folders(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents while empty, never ``top`` itself
    (each through its parent held from ``top``: never through a link)."""
    kept = _kept
    if kept is not None:  # a room kept in it would keep it
        kept.drop_idle()
    dirs.remove_empty(folder, top)
