"""Results -> what a run produced (Report), how they add up (Counts) and
the exit status; the summary's text is ``summary``'s, the CSV log
``csvlog``'s."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from flac2all import csvlog
from flac2all.csvlog import RowLog, csv_row, log_key
from flac2all.errors import ExitStatus
from flac2all.model import Action, Status, Task, TaskResult
from flac2all.skips import Skip, SkipLog
from flac2all.summary import brief_line, summary_text


@dataclass(frozen=True)
class Counts:
    """How results add up: each one counted exactly once, as failed or
    under its action (so ``total == failed + sum(done.values())``)."""

    total: int
    failed: int
    done: dict[Action, int]  # results that did not fail, by action
    encode_times: dict[str, list[float]]  # mode -> seconds of each encode that ran

    @classmethod
    def of(cls, results: list[TaskResult], skipped: int = 0) -> Counts:
        """The counts of ``results`` and of ``skipped`` outputs that were
        up to date (``Report.skipped``)."""
        done = dict.fromkeys(Action, 0)
        done[Action.SKIP] = skipped
        failed = 0
        times: dict[str, list[float]] = {}
        FAILED, ENCODE = Status.FAILED, Action.ENCODE  # (looked up once: a no-op run has a million results)
        for r in results:
            action = r.task.action
            if r.status is FAILED:
                failed += 1
            else:
                done[action] += 1
            if action is ENCODE and r.elapsed >= 0:  # (-1: it never ran)
                times.setdefault(r.task.mode, []).append(r.elapsed)
        return cls(len(results) + skipped, failed, done, times)


# Results a Report keeps in memory; past that, each one's row goes to disk
# and only what the summary needs of it stays (a first run of a million
# sources has two million).
KEPT = 100_000


@dataclass
class Tally:
    """What the summary needs of results no longer kept: counts by action,
    failures, encode times, tasks per host."""

    total: int = 0
    done: dict[Action, int] = field(default_factory=lambda: dict.fromkeys(Action, 0))
    failures: list[TaskResult] = field(default_factory=list)
    encode_times: dict[str, list[float]] = field(default_factory=dict)
    hosts: dict[tuple[str, bool], int] = field(default_factory=dict)  # (host, failed) -> tasks

    def add(self, r: TaskResult) -> None:
        self.total += 1
        failed = r.status is Status.FAILED
        if failed:
            self.failures.append(r)
        else:
            self.done[r.task.action] += 1
        if r.task.action is Action.ENCODE and r.elapsed >= 0:
            self.encode_times.setdefault(r.task.mode, []).append(r.elapsed)
        self.hosts[r.host, failed] = self.hosts.get((r.host, failed), 0) + 1


@dataclass
class Report:
    """Everything a run produced, and what to make of it. ``results``: the
    first ``KEPT`` results; the later ones are in ``tally`` and, as CSV
    rows, in ``row_log`` (the log has them all)."""

    modes: tuple[str, ...]
    sources: int = 0  # FLAC files found on input
    issued: int = 0  # tasks issued (all results expected)
    results: list[TaskResult] = field(default_factory=list)
    # Outputs found up to date, each one result more (a SUCCESS on skip_host):
    # kept apart, as text (Skip), not as a million TaskResults.
    skipped: list[Skip] = field(default_factory=list)
    # Or, for a plan made folder by folder, on disk (as many as a no-op
    # re-run of a million sources has).
    skip_log: SkipLog | None = None
    skip_host: str = ""
    wall_time: float = 0.0
    interrupted_by: int | None = None  # signal number
    halted_by: str | None = None  # the run-wide failure after which no more work started
    log_path: Path | None = None
    log_error: str | None = None
    state_error: str | None = None  # the state could not be updated (a cache: outputs are adopted next run)
    by_host: bool = False  # list tasks per host in the summary (a cluster run)
    host_problems: dict[str, str] = field(default_factory=dict)  # host -> why it got no (more) work
    host_abouts: dict[str, str] = field(default_factory=dict)  # host -> what it runs on, its encoders' versions
    tally: Tally = field(default_factory=Tally)
    row_log: RowLog | None = None

    def add(self, result: TaskResult) -> None:
        if len(self.results) < KEPT:
            self.results.append(result)
            return
        self.tally.add(result)
        if self.row_log is None:
            self.row_log = RowLog()
        row = csv_row(result, {})
        self.row_log.add(*log_key(row), row)

    def add_not_started(self, task: Task) -> None:
        """A planned task that never started (the run halted by
        ``halted_by``): a row of the log, not a result (the summary counts
        it among those not started)."""
        if self.row_log is None:
            self.row_log = RowLog()
        row = (os.fspath(task.source), os.fspath(task.output), task.mode, f"NOT STARTED: {self.halted_by}", "", "", "")
        self.row_log.add(*log_key(row), row)

    def add_skipped(self, skips: list[Skip] | SkipLog, host: str) -> None:
        """Up-to-date outputs, each a result of its own (done on ``host``)."""
        if isinstance(skips, SkipLog):
            self.skip_log = skips
        else:
            self.skipped += skips
        self.skip_host = host

    @property
    def skips(self) -> int:
        """How many outputs were up to date."""
        return len(self.skipped) + (len(self.skip_log) if self.skip_log is not None else 0)

    def every_result(self) -> list[TaskResult]:
        """``results`` with a TaskResult made for each skip (for tests and
        callers that want them all alike; past ``KEPT`` results, the kept
        ones: the log has them all)."""
        skips: Iterable[Skip] = self.skipped if self.skip_log is None else [*self.skipped, *self.skip_log]
        return [*self.results, *(s.result(self.skip_host) for s in skips)]

    @property
    def failures(self) -> list[TaskResult]:
        return [r for r in self.results if r.status is Status.FAILED] + self.tally.failures

    @property
    def complete(self) -> bool:
        """Every task issued has exactly one result."""
        return len(self.results) + self.tally.total + self.skips == self.issued

    @property
    def exit_status(self) -> ExitStatus:
        if self.interrupted_by is not None:
            return ExitStatus(128 + self.interrupted_by)
        if self.failures or not self.complete or self.log_error:
            return ExitStatus.FAILURES
        return ExitStatus.OK

    @staticmethod
    def reserve(path: Path, size: int) -> None:
        """Room for the log set aside before the run (``csvlog.reserve``)."""
        csvlog.reserve(path, size)

    def write_csv(self, path: Path) -> None:
        """The CSV log (``csvlog.write``), named in the summary after."""
        csvlog.write(path, self)
        self.log_path = path

    def counts(self) -> Counts:
        kept, tally = Counts.of(self.results, self.skips), self.tally
        if not tally.total:
            return kept
        done = {action: n + tally.done[action] for action, n in kept.done.items()}
        times = {mode: [*kept.encode_times.get(mode, []), *tally.encode_times.get(mode, [])] for mode in self.modes}
        return Counts(kept.total + tally.total, kept.failed + len(tally.failures), done, times)

    def summary(self, profile: str | None = None) -> str:
        """The text printed at the end (``summary.summary_text``), its
        heading naming ``profile``."""
        return summary_text(self, profile)

    def brief(self, profile: str | None = None) -> str:
        """-q's summary (``summary.brief_line``): "" when nothing changed
        and nothing went wrong."""
        return brief_line(self, profile)
