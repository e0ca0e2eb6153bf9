"""Folders held by descriptor: every write below the output folder is made
relative to a directory descriptor opened level by level from it without
following links, as CPython's ``shutil.rmtree`` walks against symlink
attacks. A check by path followed by a write by path is a race: anyone who
can write in the output tree could swap a folder for a link between the
two, and the write would land in the link's target.

The output folder itself (the user's own choice) may be reached through
links; below it, a link where a folder should be is refused with an error
naming it. Imports nothing of flac2all's but its errors.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from flac2all.errors import TaskError, describe_oserror

FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# ELOOP on Linux, EMLINK on FreeBSD: O_NOFOLLOW met a link.
LINK_ERRORS = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)


def below(path: Path, top: Path) -> tuple[str, ...]:
    """The names leading from ``top`` to ``path``; TaskError if ``path`` is
    not below ``top`` (as text: no '..' may climb out of it)."""
    try:
        parts = Path(os.path.normpath(path)).relative_to(os.path.normpath(top)).parts
    except ValueError:
        raise TaskError(f"{path} is outside the output folder {top}") from None
    if any(part in ("..", ".") for part in parts):
        raise TaskError(f"{path} is outside the output folder {top}")
    return parts


def refusal(path: Path, exc: OSError, dir_fd: int, name: str) -> TaskError:
    """Why ``name`` (in ``dir_fd``) could not be opened as a folder."""
    if exc.errno in LINK_ERRORS:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode):
            return TaskError(f"{path} is a symbolic link: refusing to write through it")
        if st is not None and not stat.S_ISDIR(st.st_mode):
            return TaskError(f"{path} is {'a file, not' if stat.S_ISREG(st.st_mode) else 'not'} a folder")
    return TaskError(f"cannot open folder {path}: {describe_oserror(exc)}")


def open_child(dir_fd: int, name: str, path: Path | str, create: bool) -> int:
    """Open the folder ``name`` of ``dir_fd`` (made if missing and
    ``create``) without following a link, and check that the name still
    names what was opened. ``path``: its path, for the messages."""
    try:
        fd = os.open(name, FOLDER_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
        try:
            os.mkdir(name, 0o777, dir_fd=dir_fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise TaskError(f"cannot create folder {path}: {describe_oserror(exc)}") from None
        return open_child(dir_fd, name, path, create=False)
    except OSError as exc:
        raise refusal(path, exc, dir_fd, name) from None
    try:
        held, now = os.fstat(fd), os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino):
            raise TaskError(f"{path} was replaced while being opened: refusing to write in it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(dir_fd: int, name: str, path: Path) -> int:
    """Make the folder ``name`` of ``dir_fd``, ours alone (0700), and open
    it; TaskError if what is opened under that name is not ours (someone
    swapped it meanwhile): its owner must be the one of a file we make in
    it (not our uid: an NFS export may map us to another). Nobody else can
    add, remove or replace a name in it."""
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    except OSError as exc:
        raise TaskError(f"cannot write in {path.parent}: {describe_oserror(exc)}") from None
    fd = open_child(dir_fd, name, path, create=False)
    try:
        probe = name + ".owner"
        os.close(create_file(probe, fd, 0o600))
        try:
            mine = os.stat(probe, dir_fd=fd, follow_symlinks=False).st_uid
        finally:
            os.unlink(probe, dir_fd=fd)
        st = os.fstat(fd)
        if st.st_uid != mine or st.st_mode & 0o077:
            raise TaskError(f"{path} was replaced while being made: refusing to write in it")
    except OSError as exc:
        os.close(fd)
        raise TaskError(f"cannot write in {path}: {describe_oserror(exc)}") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


# Output folders that must be this folder (st_dev, st_ino) when opened: a
# cluster worker pins the run's at the welcome, so that the folder swapped
# for a link since leads nowhere else.
PINNED: dict[str, tuple[int, int]] = {}


# Where a cluster worker's copied sources must be (the real path of the
# run's input folder), checked on the opened file; None: anywhere (a local
# run reads what its user named).
SOURCES_IN: str | None = None
# Where the system shows a descriptor's path (Linux); FreeBSD mounts no /proc.
PROC = Path("/proc")


def check_source(fd: int, path: Path) -> None:
    """TaskError if the source opened as ``fd`` is outside SOURCES_IN (a
    folder swapped for a link after the worker's checks). Where /proc shows
    the descriptor's path (Linux), that path; elsewhere (FreeBSD), the file
    opened must be the one its name leads to now, and that inside."""
    if SOURCES_IN is None:
        return
    try:
        real = os.readlink(PROC / "self" / "fd" / str(fd))
    except OSError:
        try:
            real = os.path.realpath(path)
            now = os.stat(real)
        except OSError as exc:
            raise TaskError(f"cannot check where {path} was opened: {describe_oserror(exc)}") from None
        held = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            real = ""  # what was opened is not what the name leads to: a link swapped meanwhile
    if real != SOURCES_IN and not real.startswith(SOURCES_IN.rstrip("/") + "/"):
        raise TaskError(f"{path} was opened outside the run's input folder (a link swapped in?): refusing to copy it")


def open_top(top: Path, create: bool = False) -> int:
    """A descriptor of the output folder itself: the user's own choice,
    reached by its path (links and all), made if missing and ``create``."""
    try:
        try:
            return os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if not create:
                raise
            Path(top).mkdir(parents=True, exist_ok=True)
            return os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise TaskError(f"cannot open the output folder {top}: {describe_oserror(exc)}") from None


def open_folder(folder: Path, top: Path, create: bool = False, top_fd: int | None = None) -> int:
    """A descriptor of ``folder``, opened level by level from ``top``
    without following links (made where missing if ``create``). The caller
    closes it. ``top_fd``: ``top`` already held (``open_top``), the walk
    starts there. TaskError if a level is a link or not a folder;
    FileNotFoundError if one is missing (and not ``create``)."""
    parts = below(folder, top)
    fd = open_top(top, create) if top_fd is None else top_fd
    path = os.fspath(top)
    if (pinned := PINNED.get(path)) is not None and pinned != ((st := os.fstat(fd)).st_dev, st.st_ino):
        if fd != top_fd:
            os.close(fd)
        raise TaskError(f"the output folder {top} was replaced (by a link?): refusing to write in it")
    if not parts and fd == top_fd:
        return os.dup(fd)
    try:
        for name in parts:
            path = os.path.join(path, name)
            child = open_child(fd, name, path, create)
            if fd != top_fd:
                os.close(fd)
            fd = child
    except BaseException:
        if fd != top_fd:
            os.close(fd)
        raise
    return fd


@contextmanager
def held(folder: Path, top: Path, create: bool = False, top_fd: int | None = None) -> Iterator[int]:
    """``open_folder`` for the time of a ``with``."""
    fd = open_folder(folder, top, create, top_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def create_file(name: str, dir_fd: int, mode: int = 0o666) -> int:
    """A new file ``name`` in ``dir_fd``, open for writing: never an
    existing file, never through a link planted under that name."""
    return os.open(name, NEW_FILE_FLAGS, mode, dir_fd=dir_fd)


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def remove_file(path: Path, top: Path) -> bool:
    """Unlink ``path`` (a file or link, never followed) through its folder
    held from ``top``. False if it was not there."""
    try:
        with held(path.parent, top) as fd:
            os.unlink(path.name, dir_fd=fd)
    except FileNotFoundError:
        return False
    return True


def remove_empty(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents while empty, never ``top`` itself,
    each through its parent held from ``top``."""
    try:
        parts = below(folder, top)
    except TaskError:
        return
    while parts:
        try:
            with held(Path(top, *parts[:-1]), top) as fd:
                os.rmdir(parts[-1], dir_fd=fd)
        except (OSError, TaskError):
            return
        parts = parts[:-1]


def rename(old: Path, new: Path, top: Path) -> None:
    """Move ``old`` to ``new`` (both below ``top``), each through its folder
    held from ``top`` (``new``'s made where missing)."""
    with held(old.parent, top) as old_fd, held(new.parent, top, create=True) as new_fd:
        os.replace(old.name, new.name, src_dir_fd=old_fd, dst_dir_fd=new_fd)


def open_temp(name: str, dir_fd: int, keep: bool = False) -> int:
    """The temp file ``name`` of ``dir_fd``, open for writing: made anew
    (O_EXCL, no link followed) after whatever was under that name is
    removed; with ``keep``, one already there is kept (its blocks set
    aside earlier) if it is a regular file of that one name."""
    if keep:
        with suppress(OSError):
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
                if same_file(os.fstat(fd), st):
                    return fd
                os.close(fd)
    with suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)
    return create_file(name, dir_fd)  # 0o666 less the umask, as open() makes a file


@contextmanager
def written(path: Path, top: Path, temp: str, keep: bool = False, create: bool = True) -> Iterator[int]:
    """Write ``path`` whole or not at all: a descriptor of the temp file
    ``temp`` beside it (``open_temp``), in its folder held from ``top``,
    renamed over ``path`` there when the block ends well, else removed.
    A link planted under either name is replaced, never followed.
    ``create``: make the folder where missing."""
    with held(path.parent, top, create) as dir_fd:
        fd = open_temp(temp, dir_fd, keep)
        try:
            yield fd
            os.replace(temp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise
        finally:
            os.close(fd)
