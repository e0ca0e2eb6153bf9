"""The checks the master makes itself before it believes a worker: a claimed
output must be there, written since the job was handed out, and carry this
task's provenance tag; a worker's word that the disk is full, or that a
source is missing, is checked against what the master sees."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import mutagen
import mutagen.flac

from flac2all import codecs
from flac2all.audio.decoding import Expected
from flac2all.cluster.leases import Entry, audio_seconds
from flac2all.errors import FULL_ERRNOS, TaskError, takes_no_more
from flac2all.model import Action, Task
from flac2all.running.runner import check_output


def identity(path: Path) -> tuple | None:
    """What tells one version of a file from the next (an atomic rename
    gives it a new inode), without comparing clocks of different hosts."""
    try:
        return stat_version(os.lstat(path))
    except OSError:
        return None


def stat_version(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def disbelief(entry: Entry) -> str | None:
    """Why the master does not believe a worker's success for this task, or
    None: the output must be a regular, non-empty file under its final
    name, not the one that was there when the task was handed out, a copy
    as large as its source is now, a tagged output must carry the
    provenance tag of this task's settings, and an encode must last as long
    as its source."""
    task = entry.task
    try:
        st = os.lstat(task.output)
    except OSError as exc:
        return f"the master does not see the output ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "the output is not a regular file"
    if st.st_size == 0 and not (task.action is Action.COPY and task.size == 0):  # an empty file copied is empty
        return "the output is empty"
    if stat_version(st) == entry.before:
        return "the output was not written since the task was handed out"
    if task.action is Action.COPY:  # its bytes are the source's: as many of them, at least
        try:
            size = os.stat(task.source).st_size
        except OSError:
            size = task.size
        return None if st.st_size == size else f"the copy has {st.st_size} bytes, its source {size}"
    codec = codecs.resolve(task.mode)
    if codec.tagged and codec.tag_family.carries_tags:
        provenance = codec.tag_family.read_provenance(task.output)
        if provenance is None or provenance.get("settings") != task.settings_hash:
            return "the output lacks the provenance tag of this task's settings"
    # A tag is easily copied: the audio must also last as long as the
    # source's (its CUE track's), as the local runner checks its own outputs.
    length = expected_seconds(task)
    if length and codec.checks_length:
        try:
            check_output(codec, task.output, None, Expected(length))
        except TaskError as exc:
            return f"the output fails the master's own check ({exc})"
    return None


def expected_seconds(task: Task) -> float:
    """How long an output must last: its source, or the CUE track of it the
    output holds (0: unknown)."""
    length = audio_seconds(task.source)
    if not length or task.track is None:
        return length
    try:
        rate = mutagen.flac.FLAC(task.source).info.sample_rate
    except (OSError, mutagen.MutagenError):
        return 0.0
    return task.track.samples / rate if rate else 0.0


QUOTA_PROBE = 64 * 1024  # bytes the master writes to see a quota for itself


def full_here(folder: Path, needed: int) -> bool:
    """Whether the master itself finds ``folder``'s filesystem full,
    read-only or over quota (a worker's word that it is would halt the
    run): statvfs first, then, since a quota shows only when written to, a
    small write of its own (an unnamed file, gone when closed)."""
    if takes_no_more(folder, needed):
        return True
    place = next((p for p in (folder, *folder.parents) if p.is_dir()), None)
    if place is None:
        return True
    try:
        with tempfile.TemporaryFile(dir=place) as f:
            f.write(bytes(QUOTA_PROBE))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        return exc.errno in FULL_ERRNOS
    return False


# The master's own want of resources: a check that failed for one of these
# says nothing about the worker.
OWN_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS)


def out_of_descriptors() -> bool:
    """Whether this process cannot open a file just now."""
    try:
        os.close(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        return exc.errno in OWN_ERRNOS
    return False


def source_visible(path: Path) -> bool:
    """Whether the master itself can read a source (a worker that cannot is
    the one at fault; when neither can, the file is)."""
    return os.access(path, os.R_OK)
