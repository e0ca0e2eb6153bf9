"""Rooms: folders of our own (0700) for the temp files encoders and the
tagger open by name, made in an output folder and held by descriptor;
``Rooms``, the few a process keeps between its encodes, one per output
folder; and the rooms this process holds now, which the sweep leaves.
Imports nothing of flac2all's but ``dirs``.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from collections import OrderedDict
from contextlib import suppress
from pathlib import Path

from flac2all import dirs

# Temp files and rooms alike are named so (the sweep finds both by it).
TEMP_PREFIX = ".flac2all-tmp-"
TEMP_NAME = re.compile(r"\.flac2all-tmp-[0-9a-f]{12}(\.[^/]*)?")


def clear(fd: int) -> int:
    """Remove the temp files in the folder ``fd``; how many."""
    removed = 0
    for name in os.listdir(fd):
        if TEMP_NAME.fullmatch(name):
            with suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
                removed += 1
    return removed


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


_live: set[tuple[int, int]] = set()  # the rooms this process holds (the sweep leaves them)
_live_lock = threading.Lock()


def held_here(fd: int) -> bool:
    """Whether the folder ``fd`` is a room of this process's, in use or
    kept."""
    with _live_lock:
        return dev_ino(os.fstat(fd)) in _live


def _forget_after_fork() -> None:
    """A forked child holds nothing of its parent's: the rooms are the
    parent's to remove."""
    global _live_lock
    _live_lock = threading.Lock()
    _live.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
