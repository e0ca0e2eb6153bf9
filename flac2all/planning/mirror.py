"""A mirror's re-run planned folder by folder as the walk goes, with
bounded memory: a no-op re-run of a million sources holds one folder's
state rows at a time, and its outputs up to date are kept on disk."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from flac2all.codecs.base import Codec
from flac2all.model import Action, Settings, Task, TaskResult
from flac2all.planning import discovery, extras, plan
from flac2all.planning.flow import Flow, FolderPlan, split, unreadable
from flac2all.planning.moves import settle
from flac2all.records import FolderRecords, Record
from flac2all.skips import SkipLog
from flac2all.state import State


class Mirror(Flow):
    """A mirror's re-run planned folder by folder as the walk goes: one
    source folder's state rows in memory at a time (``FolderRecords``),
    the outputs up to date on disk (``SkipLog``), the rest of the work,
    the new outputs and the orphans held. Whole before any job: a new
    output may be an orphan moved, and what is an orphan, like whether
    the input looks unmounted (``check``: found, known), is known at the
    walk's end."""

    def __init__(
        self,
        settings: Settings,
        codecs: tuple[Codec, ...],
        versions: dict[str, str],
        state: State,
        listings: Iterator[discovery.Listing],
        check: Callable[[int, int], None],
        refuse: bool = True,
    ):
        self.settings = settings
        self.records = FolderRecords(state)
        self.planner = plan.Planner(settings, codecs, self.records, versions, refuse=refuse)
        if settings.embed_folder_art:
            self.planner.plan.covers = {}
        self.plan = self.planner.plan
        self.warnings = self.plan.warnings
        self.listings = listings
        self.check = check
        self.modes = {c.name: n for n, c in enumerate(codecs)}
        self.whole: FolderPlan | None = None

    def first(self) -> FolderPlan:
        if self.whole is None:
            self.whole = self.plan_all()
        return self.whole

    def plan_all(self) -> FolderPlan:
        planner, the_plan = self.planner, self.plan
        skips = SkipLog(self.modes)
        fresh: list[tuple[discovery.Source, Codec, Path]] = []
        unclaimed: list[Record] = []
        unread: list[tuple[Path, str]] = []
        found, sources = 0, 0
        absent: set[str] = set()  # sources the state records that are gone
        elsewhere: set[str] = set()  # and those found outside the folder of their rows
        refused: list[list[TaskResult]] = [[], []]  # while deciding the FLACs' outputs, the other files'
        places: dict[str, bytes] = {}  # each source's place among the relative paths: what orders ties
        for listing in self.listings:
            unread += listing.errors
            sources += len(listing.flacs)
            tree = discovery.Tree(listing.flacs, listing.others)
            if the_plan.covers is not None:
                the_plan.covers.update(extras.folder_covers(tree))
            if listing.flacs:  # each mode's output folder read at once
                self.records.read_folders(*(planner.folder(listing.flacs[0], c)[2] for c in planner.codecs))
            new = planner.decide_all(listing.flacs, listing.sheets)
            fresh += new
            refused[0] += the_plan.refused
            the_plan.refused = []
            extras.plan_others(planner, tree)
            refused[1] += the_plan.refused
            the_plan.refused = []
            if the_plan.skips:
                places = {os.fspath(s.path): place(s.rel) for s in listing.flacs}
                skips.add(the_plan.skips, places)
                the_plan.skips = []
            here = {os.fspath(s.path) for s in itertools.chain(listing.flacs, listing.others)}
            left, read = self.records.done({*planner.claimed, *(os.fspath(output) for _, _, output in new)})
            planner.claimed.clear()
            planner.forget_facts()
            the_plan.unselected.clear()  # (only a whole plan's are shown: --plan-json)
            found += len(read & here)
            for source in read - here:  # another folder's (an output moved by hand, a layout changed)
                (elsewhere if os.path.lexists(source) else absent).add(source)
            # An orphan: a row no task claimed whose mode the run makes, or whose source is gone.
            unclaimed += (rec for rec in left if rec.mode in self.modes or gone(os.fspath(rec.source), here))
        unclaimed += self.never_read(absent, elsewhere)
        found += len(elsewhere)
        self.check(found, found + len(absent))
        if unread:  # a source in a folder that could not be read may well be there
            folders = [folder for folder, _ in unread]
            unclaimed = [rec for rec in unclaimed if not any(rec.source.is_relative_to(f) for f in folders)]
        settle(planner, fresh, unclaimed)
        # As a plan of the whole tree refuses them: the FLACs' outputs decided,
        # the other files', the new outputs; each by relative path.
        inside = len(self.settings.input_dir.parts)
        for phase in refused[:2]:
            phase.sort(key=lambda result: place_of(result.task.source.parts[inside:]))
        the_plan.refused = [*refused[0], *refused[1], *the_plan.refused]
        return self.folder_plan(skips, unread, sources)

    def never_read(self, absent: set[str], elsewhere: set[str]) -> list[Record]:
        """The orphans among the rows of folders never read (the outputs of
        folders gone, or of modes not made now); their sources into
        ``absent`` or ``elsewhere``."""
        orphans = []
        for rec in self.records.rest():
            source = os.fspath(rec.source)
            if not os.path.lexists(source):
                absent.add(source)
                orphans.append(rec)
            else:
                elsewhere.add(source)
                if rec.mode in self.modes:
                    orphans.append(rec)
        return orphans

    def folder_plan(self, skips: SkipLog, unread: list[tuple[Path, str]], sources: int) -> FolderPlan:
        """The whole plan, its tasks costliest first; ties in the order a
        plan of the whole tree has them (the FLACs' outputs decided, the
        other files', the new outputs, the orphans; each by relative path,
        then mode)."""
        the_plan, modes = self.plan, self.modes
        cost = the_plan.costs = {c.name: c.cost for c in self.planner.codecs}
        inside = len(self.settings.input_dir.parts)
        new = self.planner.fresh

        def place_in_plan(task: Task) -> tuple:
            """Where a plan of the whole tree decides ``task``."""
            if task.action in (Action.DELETE, Action.ORPHAN):
                return 3, os.fsencode(task.output), 0
            if not discovery.is_flac_name(task.source.name):
                phase = 1
            else:
                phase = 2 if os.fspath(task.output) in new else 0
            return phase, place_of(task.source.parts[inside:]), modes.get(task.mode, -1)

        def order(task: Task) -> tuple:
            return -task.size * cost.get(task.mode, 1.0), *place_in_plan(task)

        the_plan.tasks.sort(key=order)
        theirs, ours = split(self.planner.group(the_plan.tasks, cost))
        return FolderPlan(
            jobs=theirs,
            here=ours,
            unread=unreadable(unread),
            refused=the_plan.refused,
            skips=skips,
            refresh=the_plan.refresh,
            forget=the_plan.forget,
            tasks=the_plan.tasks,
            sources=sources,
            last=True,
        )


def gone(source: str, here: set[str]) -> bool:
    """Whether a source is not in the input: not among the folder's files
    (``here``) nor anywhere else on disk."""
    return source not in here and not os.path.lexists(source)


def place(rel: Path) -> bytes:
    """Where a relative path stands in the order of relative paths, as
    bytes that sort alike (its parts joined by NUL, which sorts first)."""
    return place_of(rel.parts)


def place_of(parts: tuple[str, ...]) -> bytes:
    return os.fsencode("\0".join(parts) + "\0")
