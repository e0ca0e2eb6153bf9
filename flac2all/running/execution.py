"""The executing part of a run (``Run``): the flow's folder plans are
taken as they come (counts, state rows, what is known at once: refusals,
skips, notes), their jobs go to the executor, and the results to the
report, the state and the display."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from flac2all.csvlog import LOG_NAME
from flac2all.errors import DISK_FULL
from flac2all.executors import Executor
from flac2all.face.console import Display
from flac2all.model import Action, AlbumBy, Job, OpusGain, Settings, Status, Task, TaskResult
from flac2all.planning import albums, plan, planned, playlists
from flac2all.planning.flow import Flow, FolderPlan
from flac2all.records import Record
from flac2all.report import Report
from flac2all.running import outputs, runner
from flac2all.running.procs import ProcessGroup
from flac2all.state import STATE_DIR, State
from flac2all.tags import gain

log = logging.getLogger("flac2all")


class Halt(threading.Event):
    """What stops the executor: the caller's stop (a signal), or the run
    itself (set: the disk is full)."""

    def __init__(self, outer: threading.Event) -> None:
        super().__init__()
        self.outer = outer

    def is_set(self) -> bool:
        return super().is_set() or self.outer.is_set()


def remember(state: State, result: TaskResult, the_plan: planned.Plan | None = None) -> None:
    """Record a committed output in the state, right after its result
    (with the folder cover its plan saw, ``Plan.cover``)."""
    task = result.task
    if result.status is not Status.SUCCESS:
        return
    if task.action is Action.DELETE:
        state.forget(task.output)
        return
    if task.action is Action.MOVE and task.previous is not None:
        state.forget(task.previous)
    st = plan.stat_or_none(task.output)
    if result.facts is not None and st is not None:
        art = the_plan.cover(task.source) if the_plan is not None else ""
        state.put(Record.made(task.output, task.source, task.mode, result.facts, task.settings_hash, st, art))
    if result.loudness is not None and result.facts is not None:
        state.put_loudness(task.source, result.facts.audio_md5, result.loudness)


Key = tuple[Path, str, Path]


def key(task: Task) -> Key:
    """A task among those handed out or running: its source, mode and output."""
    return task.source, task.mode, task.output


class Run:
    """The executing part of a run: the flow's folder plans, and the
    results of their jobs, go to the report, the state and the display as
    they come."""

    def __init__(self, settings: Settings, state: State, report: Report, display: Display, stop: threading.Event):
        self.settings, self.state, self.report, self.display, self.stop = settings, state, report, display, stop
        self.halt = Halt(stop)
        self.here = socket.gethostname()
        self.plan: planned.Plan | None = None
        self.reserved = 0
        # The tasks handed out and not done yet: those a halt leaves are
        # logged as not started (Report.add_not_started).
        self.pending: dict[Key, Task] = {}
        self.processes = ProcessGroup()  # the jobs done here start none, but the runner asks
        self.albums = albums.Albums() if settings.replaygain.measures else None
        # The Opus modes whose outputs an earlier run tagged under another --opus-gain: retagged at the end
        self.opus_modes = gain.header_modes(settings.modes) if self.opus_gain_changed() else set()
        self.written: set[str] = set()  # the Opus outputs written by this run (under its --opus-gain)
        # The output folders of tasks that failed, and the tasks started and
        # not finished: their folders are removed at the run's end if that
        # left them empty (Run.tidy).
        self.unfinished: set[Path] = set()
        self.running: dict[Key, Task] = {}

    def execute(self, flow: Flow, first: FolderPlan, executor: Executor) -> None:
        """``first`` (the whole plan, or a first window of folders) taken
        at once; its jobs, then the rest's as the flow plans them, run by
        the executor; playlists last (they point at the outputs written)."""
        settings = self.settings
        self.plan = flow.plan
        if flow.streaming:  # before begin: its first frame says whether planning goes on
            self.display.grow(first.issued, (), not first.last)
        self.display.begin(first.issued, executor.hosts, settings.input_dir, first.jobs)
        try:
            self.take(first, begun=True)
            planning = Halt(self.halt)  # set: the planning thread stops at a folder's end
            try:
                later = flow.rest(
                    planning,
                    executor.post,
                    self.take,
                    lambda written: outputs.remove_stale_temps(written, settings.outdir),
                )
                jobs = itertools.chain(first.jobs, later)
                executor.run(jobs, settings, self.started, self.record, self.halt)
            finally:
                planning.set()
                try:
                    flow.join()
                finally:
                    executor.drain()  # what the planning thread posted after the executor's last turn
            if self.report.halted_by is not None and not self.stop.is_set():
                flow.count_rest(self.take)  # what was not started is counted in the summary
            if not self.halt.is_set():
                self.regain_opus()
            if self.albums is not None and not self.halt.is_set():
                self.retag_albums(self.albums)
            for task in first.playlists:
                if not self.halt.is_set():
                    self.record(playlists.write(task, settings.input_dir, flow.plan.outputs))
                elif self.report.halted_by is not None:
                    self.report.add_not_started(task)
            if self.report.halted_by is not None:
                for task in self.pending.values():
                    self.report.add_not_started(task)
                self.pending.clear()
        finally:
            self.ended(executor)
            self.tidy(executor.needs_local_encoders)

    def started(self, task: Task) -> None:
        self.running[key(task)] = task
        self.display.started(task)

    def tidy(self, all_ended: bool) -> None:
        """Remove the output folders of outputs this run did not finish (a
        failure, a stop, a full disk) where that left them empty, and their
        parents while empty: a failed or interrupted album leaves no empty
        folder. ``all_ended``: nothing runs any more (this machine's
        slots); else (a cluster's or Dask's workers, which a stop may leave
        running a while) the folders of tasks still out are left alone."""
        out = {task.output.parent for task in self.running.values()}
        folders = self.unfinished | out if all_ended else self.unfinished - out
        for folder in sorted(folders, reverse=True):
            outputs.remove_empty_folders(folder, self.settings.outdir)
        self.unfinished.clear()
        self.running.clear()

    def ended(self, executor: Executor) -> None:
        """The display closed; for the summary, the hosts that got no work
        and why (a cluster's unhealthy or quarantined workers), and the
        signal that stopped the run."""
        report = self.report
        self.display.end()
        report.host_problems = {row.host: row.problem for row in executor.hosts() if row.problem}
        report.host_abouts = {row.host: row.about for row in executor.hosts() if row.about}
        report.by_host = not executor.needs_local_encoders
        if self.stop.is_set():
            report.interrupted_by = getattr(self.stop, "signum", 2)

    def take(self, folder: FolderPlan, begun: bool = False) -> None:
        """A folder's plan (or the whole plan), in this thread: its counts,
        state rows, the results known without running anything, and the
        jobs done here (notes; renames and deletions of outputs, before
        any encode can write beside them)."""
        report = self.report
        report.issued += folder.issued
        report.sources += folder.sources
        if report.issued > self.reserved:
            # The log's room, set aside as the plan grows (Report.reserve).
            self.reserved = report.issued + report.issued // 4
            Report.reserve(self.settings.outdir / LOG_NAME, LOG_RESERVE + LOG_ROW * self.reserved)
        if not begun:
            # Not the walk's state now (the planning thread runs ahead of
            # this thread's events) but the folder's: the total is final
            # with the last one.
            self.display.grow(report.issued, folder.jobs, not folder.last)
        self.keep(folder.refresh, folder.forget)
        for result in [*folder.unread, *folder.refused]:
            self.record(result)
        if folder.skips:  # counted and shown as they are: nothing to run, nothing to remember
            report.add_skipped(folder.skips, self.here)
            skips = iter(folder.skips)  # (a SkipLog's are read from disk a piece at a time)
            while piece := list(itertools.islice(skips, SKIPS_SHOWN)):
                self.display.skipped(piece)
        if begun and folder.tasks:  # (the later folders' are swept as they are planned: Flow.rest)
            outputs.remove_stale_temps(folder.written, self.settings.outdir)  # before an encode writes there
        for job in folder.jobs:
            self.handed_out(job, self.report.halted_by is None)
        for job in folder.here:
            runs = job.action in runner.NOTES or not self.halt.is_set()
            self.handed_out(job, runs)
            if runs:
                for result in runner.execute_batch(job.tasks, self.settings, self.processes):
                    self.record(result)

    def regain_opus(self) -> None:
        """The Opus outputs that were tagged under another --opus-gain than
        this run's (the state's meta says which; r128 when it does not, the
        only way before the option) retagged, never re-encoded, with the
        gains the state recorded of their source; the album step then
        gives them the album gain. Recorded once all are done."""
        settings, state = self.settings, self.state
        if not self.opus_modes or self.report.state_error is not None or state.readonly:
            return
        wanted = settings.opus_gain.value
        try:
            stale = [
                (Path(out), row)
                for mode in sorted(self.opus_modes)
                for out, row in state.rows_of_mode(mode).items()
                if out not in self.written
            ]
        except sqlite3.Error as exc:
            self.report.state_error = state_lost(self.settings, exc)
            return
        complete = True
        for output, row in sorted(stale, key=lambda item: os.fsencode(item[0])):
            if self.halt.is_set():
                return
            source = Path(row.source)
            task = Task(source, row.mode, output, Action.RETAG, settings_hash=row.settings_hash)
            track = state.loudness(source, row.audio_md5) if self.albums is not None else None
            try:
                note, facts = runner.retag(task, settings, self.processes, None if track is None else (track, None))
            except Exception as exc:  # as an album retag: the output stands, with its old gains
                log.warning("%s: not retagged for --opus-gain %s: %s", output, wanted, exc)
                complete = False
                continue
            result = TaskResult(task, Status.SUCCESS, note, facts=facts, loudness=track)
            self.remember(result)
            if self.albums is not None:
                self.albums.add(result)
        if complete:
            self.remember(None, functools.partial(state.set_meta, OPUS_GAIN_KEY, wanted))

    def opus_gain_changed(self) -> bool:
        try:
            recorded = self.state.meta(OPUS_GAIN_KEY) or OpusGain.R128.value
        except sqlite3.Error:
            return False
        return recorded != self.settings.opus_gain.value

    def left(self, previous: Path) -> None:
        """The album of the folder a source moved out of (its output's row
        names it until ``remember`` moves that row) judged again."""
        assert self.albums is not None
        if self.report.state_error is not None:
            return
        try:
            source = self.state.source_of(previous)
        except sqlite3.Error as exc:
            self.report.state_error = state_lost(self.settings, exc)
            return
        if source is not None:
            self.albums.touch(source.parent)

    def retag_albums(self, collected: albums.Albums) -> None:
        """Each measured album's outputs retagged with its album gain (and
        the state told of their new size and time, and of the album gain
        they carry); the log keeps the encodes' rows, and a failure here is
        a warning: the output stands, with its track gain."""
        if self.report.state_error is not None:
            return
        try:
            done = self.albums_to_retag(collected)
        except sqlite3.Error as exc:
            self.report.state_error = state_lost(self.settings, exc)
            return
        state = self.state
        for album in done:
            complete = True
            for task, track in album.outputs:
                if self.halt.is_set():
                    return
                try:
                    note, facts = runner.retag(task, self.settings, self.processes, (track, album.album))
                except Exception as exc:  # a bad file (or a bug) costs its album gain, never the run's log
                    log.warning("%s: album gain not written: %s", task.output, exc)
                    complete = False
                    continue
                self.remember(TaskResult(task, Status.SUCCESS, note, facts=facts))
            if complete:  # ("": no album gain, judged: not looked at again until a track changes)
                self.remember(None, functools.partial(state.put_album_tags, album.key, album.tags))
                if self.settings.album_by is AlbumBy.TAGS:
                    self.remember(None, functools.partial(state.put_members, album.key, list(album.members)))

    def albums_to_retag(self, collected: albums.Albums) -> list[albums.AlbumRetag]:
        """The albums to retag (--album-by folder or tags): those of this
        run's folders, and those the state has to judge (again). When the
        last album step was by the other grouping, every album is to be
        judged again, and that is recorded at once: an album whose retag
        fails is the only one the next run takes up again."""
        state, by_tags = self.state, self.settings.album_by is AlbumBy.TAGS
        if (state.meta(ALBUM_BY_KEY) or AlbumBy.FOLDER.value) != (grouping := albums.grouping(self.settings.album_by)):
            state.judge_again()
            state.set_meta(ALBUM_BY_KEY, grouping)
        for folder in state.folders_without_album(by_tags):
            collected.touch(folder)
        if by_tags:
            return collected.tag_retags(state, state.album_tags)
        return collected.retags(state.rows_from, state.loudness, state.album_tags)

    def remember(self, result: TaskResult | None, write: Callable[[], None] | None = None) -> None:
        """``result`` (or ``write``) into the state, unless it was lost."""
        if self.report.state_error is not None:
            return
        try:
            if result is not None:
                remember(self.state, result, self.plan)
            if write is not None:
                write()
        except sqlite3.Error as exc:
            self.report.state_error = state_lost(self.settings, exc)

    def handed_out(self, job: Job, runs: bool) -> None:
        """A job's tasks, pending until their results come; one that will
        not run (the run halted) logged as not started at once (the rest of
        a library, on a disk that filled early, is not kept in memory)."""
        for task in job.tasks:
            if runs:
                self.pending[key(task)] = task
            elif self.report.halted_by is not None:
                self.report.add_not_started(task)

    def keep(self, refresh: list[Record], forget: list[Path]) -> None:
        """State rows known without any work: outputs adopted or touched,
        outputs gone."""
        if self.report.state_error is not None:
            return
        try:
            for row in refresh:
                self.state.put(row)
            for output in forget:
                self.state.forget(output)
        except sqlite3.Error as exc:
            self.report.state_error = state_lost(self.settings, exc)

    def record(self, result: TaskResult) -> None:
        report = self.report
        task = result.task
        if task.mode in self.opus_modes and task.action in WRITES and result.status is Status.SUCCESS:
            self.written.add(os.fspath(task.output))
        if not result.host:  # done here (a local run, or the master's own bookkeeping)
            result = replace(result, host=self.here)
        report.add(result)
        if self.albums is not None:
            self.albums.add(result)
            if task.action is Action.MOVE and task.previous is not None and result.status is Status.SUCCESS:
                self.left(task.previous)
        self.pending.pop(key(task), None)
        self.running.pop(key(task), None)
        if result.status is Status.FAILED and task.action in MAKES:
            self.unfinished.add(task.output.parent)
        if result.cause == DISK_FULL and report.halted_by is None:
            report.halted_by = result.message
            self.halt.set()  # finish or drop what runs, start nothing more
        self.remember(result)
        self.display.finished(result)


WRITES = (Action.ENCODE, Action.RETAG, Action.MOVE)  # the actions that write an output's tags
MAKES = (Action.ENCODE, Action.CONVERT, Action.COPY)  # the actions that make an output where there was none
# The state's meta key of the --opus-gain its Opus outputs were tagged under.
OPUS_GAIN_KEY = "opus_gain"
# The state's meta key of the --album-by every album was last judged by
# (albums.grouping; none: folder, the only way before the option); a change
# marks every album to be judged again (state_gains.STALE).
ALBUM_BY_KEY = "album_by"
# Skips shown at once (a no-op re-run has millions).
SKIPS_SHOWN = 10000
# Bytes set aside for the log before the run (Report.reserve): a fixed part
# and a row's worth per task.
LOG_RESERVE = 64 * 1024
LOG_ROW = 400


def state_lost(settings: Settings, exc: Exception) -> str:
    return (
        f"the state in {settings.outdir / STATE_DIR} could not be updated ({exc}); it is only a cache: "
        "the next run adopts the outputs written now by their provenance tags"
    )
