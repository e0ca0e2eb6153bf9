"""A first run planned folder by folder as the walk goes, its jobs handed to
the local pool as they are planned: on a library of a million sources the
first encoder starts within a second or two instead of after the whole walk
and plan (issue 16).

Only where nothing needs the whole tree: an empty state (no output can be a
move, none an orphan: nothing to rename or delete), output names that can
only clash within one folder (POSIX names, a tree layout), no playlists
(they need every output), no --plan-json, and the local pool (a cluster or
Dask gets the whole plan). A library of fewer than ``stream_after()``
sources is planned whole as before (its jobs costliest first); past that,
the first window of sources is planned and sorted by cost, and the rest
follows in walk order. Everything else (the guards, the state, the CSV
log, the summary) is the same as for a whole plan of the same library.
The dry run of such a library is planned and listed the same way, folder
by folder (``DryRun``).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flac2all.codecs.base import Codec
from flac2all.executors.local import LocalPool
from flac2all.model import Action, Job, Layout, Names, Settings, Status, Task, TaskResult
from flac2all.planning import discovery, extras, plan
from flac2all.running import outputs, runner
from flac2all.running.listing import chunks, count_lines, heading, refusal_line, task_line
from flac2all.running.procs import ProcessGroup
from flac2all.state import Record, State

# Sources walked before a run decides to stream: a smaller library is
# planned whole (costliest jobs first, as always). The environment variable
# is for tests, which stream tiny libraries.
STREAM_AFTER = 2000


def stream_after() -> int:
    return int(os.environ.get("FLAC2ALL_STREAM_AFTER", STREAM_AFTER))


def may_stream(settings: Settings, executor: object, plan_json: Path | None) -> bool:
    """Whether this run may be planned as it goes (before the state is
    known: an empty one is the last condition, ``Stream``)."""
    return isinstance(executor, LocalPool) and streamable(settings, plan_json)


def streamable(settings: Settings, plan_json: Path | None) -> bool:
    """Whether the plan of this run (or dry run) may be made folder by
    folder: nothing in it needs the whole tree but the state."""
    return (
        plan_json is None
        and not settings.playlists
        and settings.names is Names.POSIX
        and settings.layout is not Layout.FLAT
    )


class Head:
    """The start of the walk: listings taken until ``count`` FLAC sources
    (or the walk's end), then the rest as it comes."""

    def __init__(self, input_dir: Path, prune: frozenset[Path], count: int) -> None:
        self.walk = discovery.walk(input_dir, prune)
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
class Planned:
    """One folder's plan: the executor's jobs, and what the engine records
    at once (notes, refusals, a folder that could not be read, state rows
    of adopted outputs)."""

    jobs: list[Job] = field(default_factory=list)
    results: list[TaskResult] = field(default_factory=list)
    refresh: list[Record] = field(default_factory=list)
    issued: int = 0
    sources: int = 0
    encoding: set[str] = field(default_factory=set)  # modes with an encode
    last: bool = False  # nothing more: the walk is over (an empty one, after the last folder)

    def add(self, other: Planned) -> None:
        self.jobs += other.jobs
        self.results += other.results
        self.refresh += other.refresh
        self.issued += other.issued
        self.sources += other.sources
        self.encoding |= other.encoding


class Stream:
    """The plan of a first run, folder by folder (``Planner`` with no state
    records), for the engine: ``window`` in its thread, then the rest in a
    planning thread (``start``) whose jobs the pool's slots pull; what is not
    a job goes through ``post`` to the engine's thread."""

    def __init__(self, settings: Settings, codecs: tuple[Codec, ...], versions: dict[str, str], head: Head):
        self.settings = settings
        self.planner = plan.Planner(settings, codecs, {}, versions)
        if settings.embed_folder_art:
            self.planner.plan.covers = {}
        self.cost = {c.name: c.cost for c in codecs}
        self.listings = head.listings()
        self.ended = False
        self.failure: BaseException | None = None
        self.processes = ProcessGroup()  # notes start none, but the runner asks
        # Where the bookkeeping of a folder goes: (callback, Planned), run in
        # the engine's thread (the pool's event loop while it runs).
        self.post: Callable[[Callable[[Planned], None], Planned], None] = lambda cb, p: cb(p)
        self.take: Callable[[Planned], None] = lambda p: None

    @property
    def plan(self) -> plan.Plan:
        """What ``execution.remember`` asks of a plan (its covers)."""
        return self.planner.plan

    def next_folder(self) -> Planned | None:
        """The next folder's plan (None: the walk is over)."""
        listing = next(self.listings, None)
        if listing is None:
            self.ended = True
            return None
        return self.plan_folder(listing)

    def folder(self, listing: discovery.Listing) -> tuple[list[Task], list[TaskResult], list[Record]]:
        """``Planner.build`` for one folder with no state records: every new
        output is an encode (a move needs an orphan, and there is none).
        Its tasks in the order they were decided, its refusals and state
        rows; nothing is kept of it (outputs clash only within a folder:
        what it claimed is dropped, so that a million sources hold no
        million claims)."""
        planner = self.planner
        the_plan = planner.plan
        tree = discovery.Tree(listing.flacs, listing.others)
        if the_plan.covers is not None:
            the_plan.covers.update(extras.folder_covers(tree))
        fresh = planner.decide_all(listing.flacs)
        extras.plan_others(planner, tree)
        for source, codec, output in fresh:
            planner.add(source, codec, output, Action.ENCODE)
        planned = the_plan.tasks, the_plan.refused, the_plan.refresh
        the_plan.tasks, the_plan.refused, the_plan.refresh = [], [], []
        planner.claimed.clear()
        planner.fresh.clear()
        planner._facts_cache.clear()
        return planned

    def plan_folder(self, listing: discovery.Listing) -> Planned:
        """One folder's plan for the run: its jobs costliest first, its
        notes done, its stale temporary files swept."""
        done = Planned(sources=len(listing.flacs))
        tasks, refused, done.refresh = self.folder(listing)
        tasks.sort(key=lambda t: t.size * self.cost.get(t.mode, 1.0), reverse=True)
        done.issued = len(tasks) + len(refused) + len(listing.errors)
        done.results = [
            TaskResult(Task(path, "-", Path(""), Action.SKIP), Status.FAILED, f"cannot read folder: {cause}", 1)
            for path, cause in listing.errors
        ]
        done.results += refused
        for job in self.planner.group(tasks, self.cost):
            if job.action.on_executor:
                done.jobs.append(job)
            else:  # notes only: no state, so no move nor delete
                assert job.action in runner.NOTES, job.action
                done.results += runner.execute_batch(job.tasks, self.settings, self.processes)
        done.encoding = {t.mode for t in tasks if t.action is Action.ENCODE}
        if tasks:
            # Before an encode writes there, as a whole plan does for all.
            outputs.remove_stale_temps({t.output.parent for t in tasks})
        return done

    def window(self, count: int, modes: set[str]) -> Planned:
        """The first folders' plan, in the engine's thread, until ``count``
        sources and an encode of every mode of ``modes`` are planned (the
        encoders' options are checked before any job), or the walk's end;
        its jobs costliest first."""
        first = Planned()
        while not self.ended and (first.sources < count or not modes <= first.encoding):
            folder = self.next_folder()
            if folder is not None:
                first.add(folder)
        first.jobs.sort(key=lambda job: job.cost, reverse=True)
        return first

    def start(self, halt: threading.Event) -> Iterator[Job]:
        """Plan the rest in a thread of its own, ahead of the pool's slots
        (the walk ends, and the total is known, long before the run does);
        return the jobs as they are planned, for the slots to pull. Planning
        stops at a folder's end once ``halt`` is set; a failure of it halts
        the run, and the engine raises it (``join``)."""
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.halt = halt
        self.thread = threading.Thread(target=self.plan_rest, name="planner", daemon=True)
        self.thread.start()
        return self.planned_jobs()

    def plan_rest(self) -> None:
        try:
            while not self.halt.is_set() and not self.ended:
                folder = self.next_folder()
                # Counted (in the engine's thread) before its jobs can start.
                self.post(self.take, folder or Planned(last=True))
                for job in folder.jobs if folder else ():
                    self.queue.put(job)
        except BaseException as exc:
            self.failure = exc
            self.halt.set()
        finally:
            self.queue.put(None)

    def planned_jobs(self) -> Iterator[Job]:
        while True:
            try:
                job = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self.halt.is_set():
                    return
                continue
            if job is None:
                return
            yield job

    def join(self) -> None:
        """Wait for the planning thread (it stops once ``halt`` is set)."""
        self.thread.join()

    def rest(self) -> None:
        """Plan what is left without running it (a run halted by a full
        disk: the summary counts the tasks that were not started)."""
        while (folder := self.next_folder()) is not None:
            self.take(folder)
        self.take(Planned(last=True))


def has_rows(state: State) -> bool:
    """Whether the state records any output (one row read, not all)."""
    return state.db is not None and state.db.execute("SELECT 1 FROM outputs LIMIT 1").fetchone() is not None


class DryRun:
    """A dry run's plan listed as it is made, folder by folder (a library
    past ``stream_after()`` sources, no state rows, a plan ``streamable``):
    a million sources are never held at once. The listing has the whole
    plan's lines, but each action's files come in the order of the walk,
    a folder's actions in ``Action`` order, an action's heading again
    wherever another action (or a refusal) came between, and the counts
    at the end (they are known only then)."""

    NOTE = "  (listed as planned, folder by folder: each action's files in the order of the walk; counts at the end)"

    def __init__(self, the_stream: Stream) -> None:
        self.stream = the_stream

    def describe(self, settings: Settings) -> str:
        return "\n".join(self.describe_lines(settings))

    def describe_chunks(self, settings: Settings, lines: int = 10000) -> Iterator[str]:
        """The listing in pieces of ``lines`` lines, as the plan is made."""
        return chunks(self.describe_lines(settings), lines)

    def describe_lines(self, settings: Settings) -> Iterator[str]:
        yield heading(settings)
        yield self.NOTE
        counts = dict.fromkeys(Action, 0)
        refused = 0
        current: Action | None = None
        order = {action: n for n, action in enumerate(Action)}
        while (listing := next(self.stream.listings, None)) is not None:
            tasks, refusals, _ = self.stream.folder(listing)
            tasks.sort(key=lambda t: order[t.action])
            for task in tasks:
                counts[task.action] += 1
                if task.action is not current:
                    current = task.action
                    yield f"{current.value}:"
                yield task_line(task)
            for result in refusals:
                refused += 1
                current = None
                yield refusal_line(result)
        self.stream.ended = True
        yield "counts:"
        yield from count_lines(counts, refused)
