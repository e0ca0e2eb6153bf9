"""A copy's bytes and permissions into a staged temp file, through its own
descriptor: holes kept as holes, no setuid, setgid or sticky bit."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flac2all.running.outputs import TempPath

COPY_CHUNK = 1024 * 1024


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
