"""The executing part of a run (``Run``): the results of the plan's jobs,
as they come from the executor or are known at once (skips, notes,
refusals), go to the report, the state and the display."""

from __future__ import annotations

import itertools
import socket
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from flac2all.codecs import Codec
from flac2all.errors import DISK_FULL
from flac2all.executors import Executor
from flac2all.executors.local import LocalPool
from flac2all.face.console import Display
from flac2all.model import Action, Job, Settings, Status, Task, TaskResult
from flac2all.planning import discovery, plan, playlists, stream
from flac2all.report import LOG_NAME, Report
from flac2all.running import preflight, runner
from flac2all.running.procs import ProcessGroup
from flac2all.state import STATE_DIR, Record, State


class Halt(threading.Event):
    """What stops the executor: the caller's stop (a signal), or the run
    itself (set: the disk is full)."""

    def __init__(self, outer: threading.Event) -> None:
        super().__init__()
        self.outer = outer

    def is_set(self) -> bool:
        return super().is_set() or self.outer.is_set()


def remember(state: State, result: TaskResult, the_plan: plan.Plan | None = None) -> None:
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


class Run:
    """The executing part of a run: results go to the report, the state and
    the display as they come."""

    def __init__(self, settings: Settings, state: State, report: Report, display: Display, stop: threading.Event):
        self.settings, self.state, self.report, self.display, self.stop = settings, state, report, display, stop
        self.halt = Halt(stop)
        self.here = socket.gethostname()
        self.plan: plan.Plan | None = None

    def execute(self, tree: discovery.Tree, the_plan: plan.Plan, executor: Executor) -> None:
        """Folders that could not be read and refused tasks are results at
        once; the jobs that are not the executor's are done here, the rest
        by it."""
        report, settings = self.report, self.settings
        errors = [
            TaskResult(Task(path, "-", Path(""), Action.SKIP), Status.FAILED, f"cannot read folder: {cause}", 1)
            for path, cause in tree.errors
        ]
        self.plan = the_plan
        report.issued = (
            len(the_plan.tasks) + len(the_plan.skips) + len(the_plan.refused) + len(errors) + len(the_plan.playlists)
        )
        self.display.begin(report.issued, executor.hosts, settings.input_dir, the_plan.jobs)
        Report.reserve(settings.outdir / LOG_NAME, LOG_RESERVE + LOG_ROW * report.issued)
        for result in [*errors, *the_plan.refused]:
            self.record(result)
        # Counted and shown as they are (nothing to run, nothing to remember),
        # before the other notes.
        report.add_skipped(the_plan.skips, self.here)
        self.display.skipped(the_plan.skips)
        try:
            remote = run_here(the_plan.jobs, settings, self.record, self.halt)
            executor.run(remote, settings, self.display.started, self.record, self.halt)
            # Last: they point at the outputs just written.
            for task in the_plan.playlists:
                if not self.halt.is_set():
                    self.record(playlists.write(task, settings.input_dir, the_plan.outputs))
        finally:
            self.ended(executor)

    def ended(self, executor: Executor) -> None:
        """The display closed; for the summary, the hosts that got no work
        and why (a cluster's unhealthy or quarantined workers), and the
        signal that stopped the run."""
        report = self.report
        self.display.end()
        report.host_problems = {row.host: row.problem for row in executor.hosts() if row.problem}
        report.by_host = not executor.needs_local_encoders
        if self.stop.is_set():
            report.interrupted_by = getattr(self.stop, "signum", 2)

    def execute_stream(self, the_stream: stream.Stream, executor: Executor, selected: tuple[Codec, ...]) -> None:
        """``execute`` for a plan made as the walk goes: a first window
        planned here (the encoders' options checked before any job), then
        the jobs of each folder handed to the local pool as its slots pull
        them, the counts growing on the display."""
        report, settings = self.report, self.settings
        self.plan = the_stream.plan
        first = the_stream.window(stream.stream_after(), {c.name for c in selected})
        if executor.needs_local_encoders:
            preflight.check_options(tuple(c for c in selected if c.name in first.encoding), settings)
        self.reserved = 0
        # Before begin: its first frame says whether planning goes on.
        self.display.grow(first.issued, (), not the_stream.ended)
        self.display.begin(first.issued, executor.hosts, settings.input_dir, first.jobs)
        the_stream.take = self.take_planned
        self.take_planned(first, begun=True)
        try:
            pool = executor if isinstance(executor, LocalPool) else None
            if pool is not None:
                the_stream.post = pool.post
            jobs = itertools.chain(first.jobs, the_stream.start(self.halt))
            try:
                executor.run(jobs, settings, self.display.started, self.record, self.halt)
            finally:
                self.halt.set()  # the planning thread stops (it has, unless the run was cut short)
                the_stream.join()
                the_stream.post = lambda callback, item: callback(item)
                if pool is not None:
                    pool.drain()  # what it planned after the pool's last event
            if the_stream.failure is not None:
                raise the_stream.failure
            if report.halted_by is not None and not self.stop.is_set():
                the_stream.rest()  # what was not started is counted in the summary
        finally:
            self.ended(executor)

    def take_planned(self, planned: stream.Planned, begun: bool = False) -> None:
        """A folder's plan, in this thread: its counts, state rows and the
        results known without running anything."""
        report = self.report
        report.issued += planned.issued
        report.sources += planned.sources
        if report.issued > self.reserved:
            # The log's room, set aside as the plan grows (Report.reserve).
            self.reserved = report.issued + report.issued // 4
            Report.reserve(self.settings.outdir / LOG_NAME, LOG_RESERVE + LOG_ROW * self.reserved)
        if not begun:
            # Not the walk's state now (the planning thread runs ahead of
            # this thread's events) but the folder's: the total is final
            # with the last one.
            self.display.grow(report.issued, planned.jobs, not planned.last)
        for row in planned.refresh:
            if report.state_error is None:
                try:
                    self.state.put(row)
                except sqlite3.Error as exc:
                    report.state_error = state_lost(self.settings, exc)
        for result in planned.results:
            self.record(result)

    def record(self, result: TaskResult) -> None:
        report = self.report
        if not result.host:  # done here (a local run, or the master's own bookkeeping)
            result = replace(result, host=self.here)
        report.add(result)
        if result.cause == DISK_FULL and report.halted_by is None:
            report.halted_by = result.message
            self.halt.set()  # finish or drop what runs, start nothing more
        if report.state_error is None:
            try:
                remember(self.state, result, self.plan)
            except sqlite3.Error as exc:
                report.state_error = state_lost(self.settings, exc)
        self.display.finished(result)


# Bytes set aside for the log before the run (Report.reserve): a fixed part
# and a row's worth per task.
LOG_RESERVE = 64 * 1024
LOG_ROW = 400


def state_lost(settings: Settings, exc: Exception) -> str:
    return (
        f"the state in {settings.outdir / STATE_DIR} could not be updated ({exc}); it is only a cache: "
        "the next run adopts the outputs written now by their provenance tags"
    )


def run_here(
    jobs: list[Job], settings: Settings, record: Callable[[TaskResult], None], stop: threading.Event
) -> list[Job]:
    """Do the jobs that are not the executor's (notes; renames and deletions
    of outputs, on this machine, before any encode can write beside them);
    return the executor's."""
    processes = ProcessGroup()  # these start none, but the runner asks
    remote = []
    for job in jobs:
        if job.action.on_executor:
            remote.append(job)
        elif job.action in runner.NOTES or not stop.is_set():
            for result in runner.execute_batch(job.tasks, settings, processes):
                record(result)
    return remote
