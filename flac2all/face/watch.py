"""``--watch``: after the run, the mirror follows the library.

A batch is one more run of the mirror (``engine.run``, the path of every
run: its state makes the folders that did not change no-ops, and moves,
retags and ``--delete``'s orphans and guards are as in a re-run), started
once the input has been quiet for ``--settle`` seconds: an album copied
file by file is converted once, whole. Changes are seen through watchdog
(inotify on Linux, kqueue on FreeBSD) and by a rescan every
``--rescan-every`` seconds, which sees what events miss (other NFS
clients); when the kernel's watches run out, it is said once and rescans
alone follow the library. An input refused by the run's guards (gone,
emptied, an empty mount point) changes nothing; the watcher says so once
and waits for it to come back.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flac2all import codecs, csvlog
from flac2all.csvlog import LOG_NAME
from flac2all.errors import ExitStatus, Flac2allError, OutdirBusyError
from flac2all.face import hooks
from flac2all.lines import shown
from flac2all.model import Request
from flac2all.running import engine, guards
from flac2all.summary import kept_orphans

# The longest time between two looks at an input's folder itself (a disk
# mounted or unmounted over it, the folder made again): one stat.
ROOT_CHECK = 10.0
WATCH_LOCK = "watch"  # in OUTDIR's state folder: one --watch per OUTDIR
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_watches")
# A user namespace's own limit (a container's), below the machine's.
NAMESPACE_LIMIT = Path("/proc/sys/user/max_inotify_watches")

Say = Callable[[str], None]
Batch = Callable[[Request], hooks.Outcome]


def snapshot(root: Path, prune: frozenset[Path]) -> dict[str, bytes] | None:
    """Each folder under ``root`` (relative path) -> a digest of its files'
    names, sizes and times: two equal snapshots mean nothing changed
    between them. None: ``root`` is no folder."""
    folders: dict[str, bytes] = {}
    pending = [root]
    if not root.is_dir():
        return None
    while pending:
        folder = pending.pop()
        digest = hashlib.blake2b(digest_size=16)
        try:
            with os.scandir(folder) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    try:
                        st = entry.stat(follow_symlinks=False)
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if Path(entry.path) in prune:
                        continue  # the outputs' folder, the log: each batch's writes change them
                    if is_dir:
                        pending.append(Path(entry.path))
                    digest.update(os.fsencode(entry.name) + b"\0%d\0%d\0%d\n" % (st.st_size, st.st_mtime_ns, is_dir))
        except OSError as exc:
            digest.update(f"unreadable {exc.errno}".encode())
        folders[os.fsdecode(folder.relative_to(root))] = digest.digest()
    return folders


def read_limit(path: Path) -> int | None:
    try:
        with open(path, "rb") as f:  # a sysctl's one number: read with a bound
            return int(f.read(64).split()[0])
    except (OSError, ValueError, IndexError):
        return None


def root_id(root: Path) -> tuple[int, int] | None:
    """The input folder's identity (device, inode): another disk mounted
    over it, or the folder made again, is another folder to watch."""
    try:
        st = os.stat(root)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def own_log(request: Request) -> frozenset[Path]:
    """The log's files, when OUTDIR is the input itself: each batch writes them."""
    inp = request.settings.input_dir
    if request.settings.outdir.resolve() != inp.resolve():
        return frozenset()
    log = inp / LOG_NAME
    return frozenset({log, csvlog.log_temp(log), log.with_name(f"{LOG_NAME}.previous")})


@dataclass(eq=False)
class Followed:
    """One run that --watch follows (a profile, or the command line)."""

    request: Request
    prune: frozenset[Path]
    snapshot: dict[str, bytes] | None = None
    root: tuple[int, int] | None = None
    changed_at: float | None = None  # monotonic time of its input's last change not yet run
    verify: dict[str, bytes] | None = None  # a rescan's view, to be seen again unchanged before its batch
    next_rescan: float = 0.0
    next_root_check: float = 0.0
    refused: str | None = None  # what its last run refused, said once
    watch: object | None = None  # its watchdog ObservedWatch
    name: str = field(init=False)
    holders: frozenset[Path] = field(init=False)  # the folders holding what ``prune`` names

    def __post_init__(self) -> None:
        request = self.request
        self.name = request.profile or os.fsdecode(request.settings.input_dir)
        self.holders = frozenset(p.parent for p in self.prune)

    @property
    def input(self) -> Path:
        return self.request.settings.input_dir

    @property
    def settle(self) -> float:
        assert self.request.watch is not None
        return self.request.watch.settle

    @property
    def rescan_every(self) -> float:
        assert self.request.watch is not None
        return self.request.watch.rescan_every

    def covers(self, path: str) -> bool:
        """Whether a change at ``path`` is one of its input's (its own
        outputs, inside the input, are not)."""
        p = Path(path)
        return p.is_relative_to(self.input) and not any(p.is_relative_to(q) for q in self.prune)

    def look(self) -> dict[str, bytes] | None:
        return snapshot(self.input, self.prune)


class WatchLimit(logging.Handler):
    """watchdog's word that a folder found later could not be watched (the
    kernel's watches ran out): a flag, the rescans then follow the library."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reached: OSError | None = None

    def emit(self, record: logging.LogRecord) -> None:
        error = next((a for a in record.args or () if isinstance(a, OSError)), None)
        if error is not None and error.errno in (errno.ENOSPC, errno.EMFILE):
            self.reached = error


class Changes:
    """The watchdog handler: each event's paths mark the runs whose input
    holds them as changed (time of the last event)."""

    def __init__(self, followed: list[Followed]) -> None:
        self.followed = followed
        self.lock = threading.Lock()

    def dispatch(self, event: object) -> None:
        paths = [os.fsdecode(p) for p in (getattr(event, "src_path", ""), getattr(event, "dest_path", "")) if p]
        # A folder's own 'modified' says a name in it changed, which that name's event says too: the
        # folder holding the outputs (or the log) has one at each batch's writes, a batch of nothing.
        folder = getattr(event, "event_type", "") == "modified" and getattr(event, "is_directory", False)
        now = time.monotonic()
        with self.lock:
            for f in self.followed:
                if any(f.covers(p) and not (folder and Path(p) in f.holders) for p in paths):
                    f.changed_at = now


class Watcher:
    """Follows the runs of ``requests`` that ask for --watch: ``start``
    before their first run (what changes during it is seen), ``follow``
    after it, until ``stop``."""

    def __init__(self, requests: list[Request], say: Say, warn: Say) -> None:
        self.followed = [
            Followed(r, engine.prune_set(r.settings, tuple(codecs.resolve(m) for m in r.settings.modes)) | own_log(r))
            for r in requests
            if r.watch is not None
        ]
        self.say, self.warn = say, warn
        self.changes = Changes(self.followed)
        self.limit = WatchLimit()
        self.observer: object | None = None
        self.status = ExitStatus.OK

    def __bool__(self) -> bool:
        return bool(self.followed)

    def start(self) -> None:
        """The watches set (or the fallback said), each input's snapshot."""
        from watchdog.observers import Observer

        for name in ("watchdog.observers.inotify", "watchdog.observers.kqueue"):
            logger = logging.getLogger(name)
            logger.addHandler(self.limit)
            logger.propagate = False  # one sentence of ours, not a warning per folder left unwatched
        now = time.monotonic()
        if Observer.__name__ == "PollingObserver":
            # No inotify nor kqueue: watchdog would list the whole library every second.
            self.warn("flac2all: watch: this system tells no file changes; the library is rescanned instead")
        else:
            self.observer = Observer()
            self.observer.start()
        for f in self.followed:
            f.snapshot, f.root = f.look(), root_id(f.input)
            f.next_rescan, f.next_root_check = now + f.rescan_every, now + min(f.settle, ROOT_CHECK)
            self.schedule(f)

    def schedule(self, f: Followed) -> None:
        """Watch ``f``'s input (again: it may be another folder now)."""
        if self.observer is None:
            return  # rescans only
        from watchdog.events import (
            DirCreatedEvent,
            DirDeletedEvent,
            DirModifiedEvent,
            DirMovedEvent,
            FileClosedEvent,
            FileCreatedEvent,
            FileDeletedEvent,
            FileModifiedEvent,
            FileMovedEvent,
        )

        if f.watch is not None:
            try:
                self.observer.unschedule(f.watch)
            except KeyError:
                pass
            f.watch = None
        if f.root is None:
            return  # watched once it is back
        # Changes only: a file opened and read (by this run's decoders) is none.
        changes = [
            FileCreatedEvent,
            FileDeletedEvent,
            FileModifiedEvent,
            FileMovedEvent,
            FileClosedEvent,
            DirCreatedEvent,
            DirDeletedEvent,
            DirModifiedEvent,
            DirMovedEvent,
        ]
        try:
            f.watch = self.observer.schedule(self.changes, os.fspath(f.input), recursive=True, event_filter=changes)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EMFILE):
                self.warn(
                    f"flac2all: watch: cannot watch {shown(os.fsdecode(f.input))}: {exc.strerror or exc};"
                    f" rescanning it every {f.rescan_every:g} s"
                )
                return
            self.fall_back(exc)

    def fall_back(self, exc: OSError) -> None:
        """The kernel's watches ran out: said once, with what to raise;
        rescans alone follow the library from now on (no change missed,
        seen later)."""
        if self.observer is None:
            return
        observer, self.observer = self.observer, None
        observer.stop()
        observer.join()
        for f in self.followed:
            f.watch = None
        every = ", ".join(sorted({f"{f.rescan_every:g} s" for f in self.followed}))
        folders = sum(len(f.snapshot or ()) for f in self.followed)
        if exc.errno == errno.ENOSPC and INOTIFY_LIMIT.exists():
            now, here = read_limit(INOTIFY_LIMIT) or 8192, read_limit(NAMESPACE_LIMIT)
            wanted = math.ceil((now + 2 * folders) / 65536) * 65536
            namespace = f", and user.max_inotify_watches = {here} in this user namespace" if here and here < now else ""
            self.warn(
                f"flac2all: watch: the kernel's inotify watches ran out (fs.inotify.max_user_watches = {now}"
                f"{namespace}; the library has {folders} folders): raise it to {wanted} (sysctl"
                f" fs.inotify.max_user_watches={wanted}, and in /etc/sysctl.d/ to keep it); until then the library is"
                f" rescanned every {every}"
            )
        else:
            self.warn(
                f"flac2all: watch: out of file descriptors for the library's watches ({exc.strerror or exc}; the"
                f" library has {folders} folders): raise the open-file limit (ulimit -n, kern.maxfiles); until then"
                f" the library is rescanned every {every}"
            )

    def close(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join()
            self.observer = None

    def follow(self, stop: threading.Event, run_batch: Batch, first: dict[int, str | None]) -> ExitStatus:
        """Batches until ``stop``; the highest exit status of theirs.
        ``first``: what each request's first run refused (id -> message)."""
        for f in self.followed:
            f.refused = first.get(id(f.request))
        with contextlib.ExitStack() as held:
            self.hold(held)
            return self.loop(stop, run_batch)

    def hold(self, held: contextlib.ExitStack) -> None:
        """Each OUTDIR's watch lock, held until the watcher stops: an
        OUTDIR another --watch follows already (one started again by cron)
        is left to it, said unless -q."""
        for f in list(self.followed):
            try:
                held.enter_context(guards.outdir_lock(f.request.settings.outdir, WATCH_LOCK))
            except OutdirBusyError:
                with self.changes.lock:
                    self.followed.remove(f)
                if not f.request.display.quiet:
                    self.say(f"watch: {shown(f.name)}: another flac2all --watch follows its OUTDIR already")
            except Flac2allError:
                pass  # OUTDIR not written yet (its first run refused): its batches say why

    def loop(self, stop: threading.Event, run_batch: Batch) -> ExitStatus:
        try:
            while self.followed and not stop.is_set():
                if self.limit.reached is not None:
                    self.fall_back(self.limit.reached)
                    self.limit.reached = None
                for f in self.followed:
                    if stop.is_set():
                        break
                    if self.due(f, time.monotonic()):
                        self.batch(f, stop, run_batch)
                stop.wait(max(0.05, min(self.deadline(f) for f in self.followed) - time.monotonic()))
        finally:
            self.close()
        return self.status

    def due(self, f: Followed, now: float) -> bool:
        """Whether ``f``'s batch runs now: its input changed (an event, a
        rescan, another folder in its place) and has been quiet since."""
        if now >= f.next_root_check:
            f.next_root_check = now + min(f.settle, ROOT_CHECK)
            root = root_id(f.input)
            if root != f.root:
                f.root, f.changed_at = root, now
                self.schedule(f)
        if now >= f.next_rescan:
            f.next_rescan = now + f.rescan_every
            seen = f.look()
            if seen != f.snapshot and seen != f.verify:  # (the same change seen again is no new one)
                f.changed_at, f.verify = now, seen
        if f.changed_at is None or now - f.changed_at < f.settle:
            return False
        if f.verify is not None or self.observer is None:
            # A change events did not report: quiet only if it looks the same a settle time later.
            seen = f.look()
            if seen != f.verify:
                f.changed_at, f.verify = now, seen
                return False
        return True

    def deadline(self, f: Followed) -> float:
        times = [f.next_root_check, f.next_rescan]
        if f.changed_at is not None:
            times.append(f.changed_at + f.settle)
        return min(times)

    def batch(self, f: Followed, stop: threading.Event, run_batch: Batch) -> None:
        """One more run of ``f``'s mirror; its line, its hook."""
        f.changed_at, f.verify = None, None
        f.snapshot = f.look()  # what this batch sees: later changes are another batch's
        outcome = run_batch(f.request)
        self.status = max(self.status, ExitStatus(outcome.exit_status))
        quiet = f.request.display.quiet
        if outcome.report is None:
            if outcome.error == f.refused:
                return  # said once
            f.refused = outcome.error
            self.warn(
                f"flac2all: watch: {shown(f.name)}: {shown(outcome.error or '?')}; nothing changed or deleted:"
                " waiting for it to come back"
            )
        else:
            if f.refused is not None:
                self.say(f"watch: {shown(f.name)}: the input is back")
                f.refused = None
            line = outcome.report.brief(f.request.profile)
            if line:
                self.say(f"watch: {line}")
            elif not quiet:
                self.say(f"watch: {shown(f.name)}: nothing to do{kept_orphans(outcome.report.counts())}")
        if f.request.on_done and not stop.is_set():
            problem = hooks.on_done(f.request.on_done, [outcome], stop)
            if problem:
                self.warn(f"flac2all: error: {shown(problem)}")
                self.status = max(self.status, ExitStatus.FAILURES)
