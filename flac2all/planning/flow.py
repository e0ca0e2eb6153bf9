"""The one flow of a run: its plan as a stream of folder plans.

Every run, re-run, no-op run and dry run is planned by one ``Planner`` and
consumed folder plan by folder plan, whichever executor runs it and whether
it executes or only lists (``running.listing.Listing`` is the dry run's
sink, ``running.execution.Run`` the real one's):

- ``Whole``: a plan made from the whole tree at once (playlists,
  ``--plan-json``, fat32 names and the flat layout, whose names clash
  across folders, and a small library, whose jobs go costliest first):
  one folder plan, the whole plan.
- ``Folders``: a first run of a large library planned as the walk goes.
  Its first window of sources is planned at once, costliest first; the
  rest follows in walk order, planned in a thread of its own ahead of the
  executor's slots, so the first encoder starts within a second or two of
  a million-source run.
- ``Mirror`` (``planning.mirror``): a re-run of a mirror past that size,
  planned folder by folder with one folder's state rows in memory, whole
  before any job (moves, orphans and the input's guard are known at the
  walk's end).

Nothing here starts a process: the notes (up-to-date or kept outputs) are
jobs for the consumer to record, as renames and deletions are.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flac2all.codecs.base import Codec
from flac2all.model import Action, Job, Layout, Names, Settings, Status, Task, TaskResult
from flac2all.planning import discovery, extras, plan
from flac2all.planning.planned import Plan
from flac2all.planning.selection import Selection
from flac2all.records import Record
from flac2all.skips import Skip, SkipLog
from flac2all.state import State

# Sources walked before a first run decides to stream its plan: a smaller
# library is planned whole (costliest jobs first). FLAC2ALL_STREAM_AFTER
# sets it (the tests stream tiny libraries with 1).
STREAM_AFTER = 2000


# Jobs a planning thread may hold ahead of the executor's slots: a first
# run of a million sources never holds a million jobs.
AHEAD = 50000


def stream_after() -> int:
    return int(os.environ.get("FLAC2ALL_STREAM_AFTER", STREAM_AFTER))


def streamable(settings: Settings, plan_json: Path | None) -> bool:
    """Whether this run's plan may be made folder by folder: nothing in it
    needs the whole tree but the state (an empty one: ``has_rows``)."""
    return (
        plan_json is None
        and not settings.playlists
        and settings.names is Names.POSIX
        and settings.layout is not Layout.FLAT
        and settings.path_format is None  # (names clash across folders)
    )


def has_rows(state: State) -> bool:
    """Whether the state records any output (one row read, not all)."""
    return state.db is not None and state.db.execute("SELECT 1 FROM outputs LIMIT 1").fetchone() is not None


class Head:
    """The start of the walk: listings taken until ``count`` FLAC sources
    (or the walk's end), then the rest as it comes."""

    def __init__(
        self, input_dir: Path, prune: frozenset[Path], count: int, select: Selection = discovery.EVERYTHING
    ) -> None:
        self.walk = discovery.walk(input_dir, prune, select)
        self.taken: list[discovery.Listing] = []
        self.flacs = 0
        self.ended = False
        while self.flacs < count:
            listing = next(self.walk, None)
            if listing is None:
                self.ended = True
                break
            self.taken.append(listing)
            self.flacs += len(listing.flacs)

    def listings(self) -> Iterator[discovery.Listing]:
        while self.taken:
            yield self.taken.pop(0)
        yield from self.walk


@dataclass
class FolderPlan:
    """One folder's plan (or a whole library's): the executor's jobs, the
    jobs the consumer does itself (notes; renames and deletions, before any
    encode can write beside them), what is known at once (folders that
    could not be read, refused tasks), the outputs up to date, the state rows to write
    or forget without any work, and the tasks in the order planned (what a
    listing shows)."""

    jobs: list[Job] = field(default_factory=list)
    here: list[Job] = field(default_factory=list)
    unread: list[TaskResult] = field(default_factory=list)
    refused: list[TaskResult] = field(default_factory=list)
    skips: list[Skip] | SkipLog = field(default_factory=list)
    refresh: list[Record] = field(default_factory=list)
    forget: list[Path] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)
    playlists: list[Task] = field(default_factory=list)
    sources: int = 0
    last: bool = False  # nothing more: the walk is over (an empty one, after the last folder)

    @property
    def issued(self) -> int:
        """The tasks it counts (the summary's and the display's)."""
        return len(self.tasks) + len(self.skips) + len(self.unread) + len(self.refused) + len(self.playlists)

    @property
    def encoding(self) -> set[str]:
        """The modes it encodes (whose options are tried before any job)."""
        return {t.mode for t in self.tasks if t.action is Action.ENCODE}

    @property
    def written(self) -> set[Path]:
        """The output folders its tasks write into (swept of a killed run's
        temporary files before they do)."""
        return {t.output.parent for t in self.tasks if t.action not in (Action.SKIP, Action.ORPHAN)}

    def add(self, other: FolderPlan) -> None:
        for name in ("jobs", "here", "unread", "refused", "refresh", "forget", "tasks", "playlists"):
            getattr(self, name).extend(getattr(other, name))
        self.sources += other.sources
        assert not other.skips, "a first run has no output up to date"


def unreadable(errors: list[tuple[Path, str]]) -> list[TaskResult]:
    """Folders that could not be listed, as failed results."""
    return [
        TaskResult(Task(path, "-", Path(""), Action.SKIP), Status.FAILED, f"cannot read folder: {cause}", 1)
        for path, cause in errors
    ]


def split(jobs: list[Job]) -> tuple[list[Job], list[Job]]:
    """(the executor's jobs, the consumer's own), each in the order given."""
    theirs, ours = [], []
    for job in jobs:
        (theirs if job.action.on_executor else ours).append(job)
    return theirs, ours


class Flow:
    """A run's plan as folder plans: ``first`` (the whole plan, or the
    first window), then ``rest`` as it is planned."""

    plan: Plan  # what the consumer asks of a plan (its covers, outputs)
    streaming = False  # planning goes on after ``first``
    warnings: list[str]

    def first(self) -> FolderPlan:
        raise NotImplementedError

    def rest(
        self, halt: threading.Event, post: Callable, take: Callable[[FolderPlan], None], sweep: Callable[[set], None]
    ) -> Iterator[Job]:
        """The later folders' jobs, for the executor to pull; each folder's
        plan goes to ``take`` (through ``post``, in the consumer's thread),
        and the folders its jobs write into to ``sweep`` (a killed run's
        temporary files removed), before its jobs can start."""
        return iter(())

    def folders(self) -> Iterator[FolderPlan]:
        """The later folder plans, planned here as they are asked (a dry run's)."""
        return iter(())

    def join(self) -> None:
        """Wait for the planning thread, if any (it stops once halted)."""

    def count_rest(self, take: Callable[[FolderPlan], None]) -> None:
        """Plan what is left without running it (a run halted by a full
        disk: the summary counts the tasks that were not started)."""


class Whole(Flow):
    """A plan made whole (``Planner.build``) as one folder plan."""

    def __init__(self, the_plan: Plan, tree: discovery.Tree) -> None:
        self.plan = the_plan
        self.warnings = the_plan.warnings
        the_plan.unread = list(tree.errors)  # (--plan-json names them)
        theirs, ours = split(the_plan.jobs)
        self.whole = FolderPlan(
            jobs=theirs,
            here=ours,
            unread=unreadable(tree.errors),
            refused=the_plan.refused,
            skips=the_plan.skips,
            refresh=the_plan.refresh,
            forget=the_plan.forget,
            tasks=the_plan.tasks,
            playlists=the_plan.playlists,
            sources=len(tree.flacs),
            last=True,
        )

    def first(self) -> FolderPlan:
        return self.whole


class Folders(Flow):
    """A first run's plan, folder by folder as the walk goes (a ``Planner``
    with no state records: every new output is an encode, no move nor
    orphan can be; outputs clash only within a folder)."""

    streaming = True

    def __init__(
        self, settings: Settings, codecs: tuple[Codec, ...], versions: dict[str, str], head: Head, refuse: bool = True
    ):
        self.settings = settings
        self.planner = plan.Planner(settings, codecs, {}, versions, refuse=refuse)
        if settings.embed_folder_art:
            self.planner.plan.covers = {}
        self.plan = self.planner.plan
        self.warnings = []
        self.cost = {c.name: c.cost for c in codecs}
        self.listings = head.listings()
        self.modes = {c.name for c in codecs}
        self.ended = False
        self.failure: BaseException | None = None
        self.thread: threading.Thread | None = None

    def next_folder(self, grouped: bool = True) -> FolderPlan | None:
        """The next folder's plan (None: the walk is over)."""
        listing = next(self.listings, None)
        if listing is None:
            self.ended = True
            return None
        return self.plan_folder(listing, grouped)

    def plan_folder(self, listing: discovery.Listing, grouped: bool = True) -> FolderPlan:
        """One folder's plan: its tasks in the order decided, its jobs
        costliest first (``grouped`` False: no jobs, for a listing). Nothing is kept of it (what it claimed is dropped:
        a million sources hold no million claims)."""
        planner, the_plan = self.planner, self.plan
        tree = discovery.Tree(listing.flacs, listing.others)
        if the_plan.covers is not None:
            the_plan.covers.update(extras.folder_covers(tree))
        fresh = planner.decide_all(listing.flacs, listing.sheets)
        extras.plan_others(planner, tree)
        for source, codec, output in fresh:
            planner.add(source, codec, output, Action.ENCODE)
        done = FolderPlan(tasks=the_plan.tasks, refresh=the_plan.refresh, sources=len(listing.flacs))
        done.unread, done.refused = unreadable(listing.errors), the_plan.refused
        the_plan.tasks, the_plan.refused, the_plan.refresh = [], [], []
        the_plan.unselected.clear()  # (only a whole plan's are shown: --plan-json)
        planner.claimed.clear()
        planner.fresh.clear()
        planner.forget_facts()
        if grouped:
            cost = self.cost
            ordered = sorted(done.tasks, key=lambda t: t.size * cost.get(t.mode, 1.0), reverse=True)
            done.jobs, done.here = split(planner.group(ordered, cost))
        return done

    def first(self) -> FolderPlan:
        """The first folders' plan, until ``stream_after()`` sources and an
        encode of every mode are planned (the encoders' options are tried
        before any job), or the walk's end; its jobs costliest first."""
        first = FolderPlan()
        count = stream_after()
        while not self.ended and (first.sources < count or not self.modes <= first.encoding):
            folder = self.next_folder()
            if folder is not None:
                first.add(folder)
        first.jobs.sort(key=lambda job: job.cost, reverse=True)
        first.last = self.ended
        return first

    def rest(
        self, halt: threading.Event, post: Callable, take: Callable[[FolderPlan], None], sweep: Callable[[set], None]
    ) -> Iterator[Job]:
        """Plan the rest in a thread of its own, ahead of the executor's
        slots by at most ``AHEAD`` jobs (a library of fewer sources is
        planned, and its total known, long before its run ends; a larger
        one's planning goes on, its memory bounded). Planning stops at a
        folder's end once ``halt`` is set; a failure of it halts the run,
        and ``join`` raises it."""
        jobs: queue.Queue[Job | None] = queue.Queue(maxsize=AHEAD)

        def put(job: Job | None) -> None:
            while not halt.is_set():
                try:
                    jobs.put(job, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def plan_rest() -> None:
            try:
                while not halt.is_set() and not self.ended:
                    folder = self.next_folder()
                    # Counted (in the consumer's thread) before its jobs can start.
                    post(take, folder or FolderPlan(last=True))
                    if folder is not None and folder.jobs:
                        sweep(folder.written)  # here: a slot may start its jobs before take is called
                    for job in folder.jobs if folder else ():
                        put(job)
            except BaseException as exc:
                self.failure = exc
                halt.set()
            finally:
                put(None)

        self.thread = threading.Thread(target=plan_rest, name="planner", daemon=True)
        self.thread.start()
        return planned(jobs, halt)

    def folders(self) -> Iterator[FolderPlan]:
        while (folder := self.next_folder(grouped=False)) is not None:
            yield folder

    def join(self) -> None:
        if self.thread is not None:
            self.thread.join()
        if self.failure is not None:
            raise self.failure

    def count_rest(self, take: Callable[[FolderPlan], None]) -> None:
        while (folder := self.next_folder()) is not None:
            take(folder)  # (its notes are recorded; its jobs never start)
        take(FolderPlan(last=True))


def planned(jobs: queue.Queue[Job | None], halt: threading.Event) -> Iterator[Job]:
    """The jobs of a planning thread as it puts them, until it ends (None)
    or the run is halted."""
    while True:
        try:
            job = jobs.get(timeout=0.1)
        except queue.Empty:
            if halt.is_set():
                return
            continue
        if job is None:
            return
        yield job
