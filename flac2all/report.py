"""Results -> the summary, the CSV log and the exit status."""

from __future__ import annotations

import csv
import heapq
import json
import os
import sqlite3
import statistics
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from flac2all import dirs
from flac2all.errors import ExitStatus
from flac2all.lines import VERBS, printable
from flac2all.model import Action, Status, Task, TaskResult
from flac2all.skips import UP_TO_DATE, Skip, SkipLog

# The first six columns are the original's; the host that ran each task is
# appended, so that existing parsers and grep -v SUCCESS keep working.
CSV_HEADER = ("infile", "outfile", "format", "conversion_status", "return_code", "execution_time", "host")
LOG_NAME = "conversion_results.log"


# The actions in the order the summary lists them: what was made, then
# what was left as it was, then the orphans; each counted under its one
# verb (lines.VERBS), after what it acts on where the verb alone is unclear.
ACTION_ORDER = (
    Action.ENCODE,
    Action.CONVERT,
    Action.RETAG,
    Action.MOVE,
    Action.COPY,
    Action.PLAYLIST,
    Action.SKIP,
    Action.ORPHAN,
    Action.DELETE,
)
ACTION_NOUNS = {Action.PLAYLIST: "playlist", Action.ORPHAN: "orphan", Action.DELETE: "orphan"}
# Listed only when some were done (runs without device-profile options have none).
OPTIONAL_ACTIONS = {Action.CONVERT, Action.PLAYLIST}


def action_words(n: int, action: Action) -> str:
    """``n`` tasks of ``action`` as the summary counts them: '3 encoded',
    '1 playlist written', '2 orphans kept'."""
    noun = ACTION_NOUNS.get(action)
    return f"{plural(n, noun) if noun else n} {VERBS[action]}"


def first(item: tuple) -> object:
    return item[0]


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


class RowLog:
    """CSV rows kept on disk, in a private temporary SQLite database, and
    read back by source then mode."""

    def __init__(self) -> None:
        self.db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE rows (key BLOB, mode TEXT, row TEXT)")
        self.pending: list[tuple[bytes, str, str]] = []

    def add(self, key: bytes, mode: str, row: tuple) -> None:
        self.pending.append((key, mode, json.dumps(row)))  # (ASCII: surrogate-escaped names survive)
        if len(self.pending) >= 10000:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT INTO rows VALUES (?, ?, ?)", self.pending)
            self.db.execute("COMMIT")
            self.pending = []

    def by_source(self) -> Iterator[tuple[tuple[bytes, str], tuple]]:
        """((source as bytes, mode), row), in that order (ties as added)."""
        self.flush()
        for key, mode, row in self.db.execute("SELECT key, mode, row FROM rows ORDER BY key, mode, rowid"):
            yield (key, mode), tuple(json.loads(row))


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
        """Set aside ``size`` bytes for the log before the run, so that a
        disk the run fills still has room for it (write_csv writes into
        the reserved file)."""
        folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = dirs.open_temp(log_temp(path).name, folder, keep=True)
        finally:
            os.close(folder)
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError:  # no room even now, or a file system without it: write_csv tries anyway
            pass
        finally:
            os.close(fd)

    def write_csv(self, path: Path) -> None:
        """The CSV log (RFC 4180), written atomically (into the space
        ``reserve`` set aside, if it did); rows sorted by source then mode
        so that two runs compare with diff."""
        times: dict[float, str] = {}  # each time formatted once
        rows = [csv_row(r, times) for r in self.results]
        # An output up to date: a SUCCESS on the skip host, -1 s, return code 0.
        status, elapsed, host = f"SUCCESS ({UP_TO_DATE})", f"{-1.0:.3f}", self.skip_host
        rows += [(s.source, s.output, s.mode, status, 0, elapsed, host) for s in self.skipped]
        keyed = sorted(((log_key(row), row) for row in rows), key=first)
        if self.skip_log is not None:
            logged = (
                ((key, mode), (source, output, mode, status, 0, elapsed, host))
                for key, mode, source, output in self.skip_log.by_source()
            )
            keyed = heapq.merge(keyed, logged, key=first)
        if self.row_log is not None:
            keyed = heapq.merge(keyed, self.row_log.by_source(), key=first)
        rows = (row for _, row in keyed)
        # Into the space ``reserve`` set aside (kept, truncated to the rows
        # at the end); surrogateescape writes undecodable file names back as
        # their bytes. Never through a link planted under either name.
        with (
            dirs.written(path, path.parent, log_temp(path).name, keep=True) as fd,
            open(fd, "w", newline="", encoding="utf-8", errors="surrogateescape", closefd=False) as f,
        ):
            writer = csv.writer(f)
            writer.writerow(CSV_HEADER)
            writer.writerows(rows)
            f.truncate()
        self.log_path = path

    def counts(self) -> Counts:
        kept, tally = Counts.of(self.results, self.skips), self.tally
        if not tally.total:
            return kept
        done = {action: n + tally.done[action] for action, n in kept.done.items()}
        times = {mode: [*kept.encode_times.get(mode, []), *tally.encode_times.get(mode, [])] for mode in self.modes}
        return Counts(kept.total + tally.total, kept.failed + len(tally.failures), done, times)

    def summary(self, profile: str | None = None) -> str:
        """The text printed at the end: the original 5.4's lines, then what
        was done by action, the time per mode, and the failures; for a run
        with nothing to do, one line saying so. ``profile``: the profile
        the run is, named in the heading."""
        c = self.counts()
        title = f"| Summary of profile {profile} " if profile is not None else "| Summary "
        heading = ["", title + "=" * max(3, 80 - len(title))]
        if self.nothing_to_do(c):
            kept = c.done[Action.ORPHAN]
            orphans = f" ({action_words(kept, Action.ORPHAN)}: --delete removes them)" if kept else ""
            return "\n".join(
                [
                    *heading,
                    f"    nothing to do: {plural(c.done[Action.SKIP], 'output')} up to date{orphans}"
                    f" (checked in {format_duration(self.wall_time)})",
                    *(self.host_lines() if self.by_host or self.host_problems else []),
                    *self.log_lines(),
                ]
            )
        rate = 100.0 * c.total / self.issued if self.issued else 100.0
        error_rate = 100.0 * c.failed / c.total if c.total else 0.0
        lines = [
            *heading,
            # The original 5.4's lines, with what they count named.
            f"    Total files on input: {self.sources} FLAC files ({plural(self.issued, 'task')}"
            f" in {plural(len(self.modes), 'mode')})",
            f"    Total files actually processed: {plural(c.total, 'task')}",
            "    --",
            f"    Execution rate: {rate:.2f}%",
            f"    Files we managed to convert successfully: {plural(c.done[Action.ENCODE], 'task')}",
            f"    Files we failed to convert due to errors: {plural(c.failed, 'task')}",
            "    --",
            f"    Conversion error rate: {error_rate:.2f}%",
            # Every task once: failed, or under its action.
            "    Tasks by action: "
            + ", ".join(
                action_words(c.done[action], action)
                for action in ACTION_ORDER
                if c.done[action] or action not in OPTIONAL_ACTIONS
            )
            + f", {c.failed} failed",
            f"    Wall time: {format_duration(self.wall_time)}",
        ]
        lines += self.mode_lines(c)
        lines += self.trouble_lines(c)
        failed = c.failed
        if self.failures:
            lines.append(f"    Failed ({failed}):")
            causes = same_causes(self.failures, self.modes)
            lines += [f"        {printable(source)} [{modes}]: {message}" for source, modes, message in causes[:20]]
            if len(causes) > 20:
                more = sum(len(modes.split(", ")) for _, modes, _ in causes[20:])
                lines.append(f"        ... and {more} more (grep -v SUCCESS on the log)")
        if self.by_host or self.host_problems:
            lines += self.host_lines()
        lines += self.log_lines()
        return "\n".join(lines)

    def trouble_lines(self, c: Counts) -> list[str]:
        """Why tasks have no result: the run stopped, was interrupted, or
        results went missing."""
        lines = []
        if self.halted_by is not None:
            lines.append(
                f"    STOPPED after: {self.halted_by}; {self.issued - c.total} task(s) not started: make room and run"
                " again to finish them"
            )
        elif not self.complete and self.interrupted_by is None:
            lines.append(f"    ERROR: {self.issued} tasks were issued but {c.total} results came back")
        if self.interrupted_by is not None:
            lines.append(f"    Interrupted: {self.issued - c.total} task(s) did not run; run again to finish them")
        return lines

    def log_lines(self) -> list[str]:
        """Where the log is, and what could not be written."""
        lines = []
        if self.log_path is not None:
            lines.append(f"    Log written to: {printable(self.log_path)}")
        lines += self.write_errors()
        return lines

    def write_errors(self) -> list[str]:
        lines = []
        if self.log_error is not None:
            lines.append(f"    ERROR: {self.log_error}")
        if self.state_error is not None:
            lines.append(f"    WARNING: {self.state_error}")
        return lines

    def nothing_to_do(self, c: Counts) -> bool:
        """Every task was an output up to date or an orphan kept, and the run
        went to its end: nothing changed, nothing failed."""
        left = c.done[Action.SKIP] + c.done[Action.ORPHAN]
        return c.total == left and not c.failed and self.complete and not self.trouble_lines(c)

    def brief(self, profile: str | None = None) -> str:
        """-q's summary: "" when nothing changed and nothing went wrong;
        else one line, named after ``profile``: what was done by action
        (up-to-date outputs left out), failures, and what went wrong."""
        c = self.counts()
        trouble = [line.strip() for line in [*self.trouble_lines(c), *self.write_errors()]]
        if self.nothing_to_do(c) and not trouble:
            return ""
        done = [action for action in ACTION_ORDER if c.done[action] and action is not Action.SKIP]
        parts = [action_words(c.done[action], action) for action in done]
        if c.failed:
            where = f" (grep -v SUCCESS {printable(self.log_path)})" if self.log_path is not None else ""
            parts.append(f"{c.failed} failed{where}")
        text = "; ".join([", ".join(parts), *trouble] if parts else trouble)
        return f"{profile}: {text}" if profile is not None else text

    def mode_lines(self, c: Counts) -> list[str]:
        """The original's time per mode, of the encodes that ran."""
        lines = []
        for mode in self.modes:
            times = c.encode_times.get(mode)
            lines.append(f"    For mode: {mode}")
            if not times:
                lines.append("        No data")
                continue
            lines += [
                f"        Total execution time: {format_duration(sum(times))}",
                "        Per file conversion:",
                f"            Mean execution time: {statistics.fmean(times):.4f} seconds",
                f"            Median execution time: {statistics.median(times):.4f} seconds",
            ]
        return lines

    def host_lines(self) -> list[str]:
        """Per host: tasks done and failed, and why a host got no (more)
        work (unhealthy before work, or quarantined)."""
        done: dict[str, int] = {}
        failed: dict[str, int] = {}
        for r in self.results:
            counts = failed if r.status is Status.FAILED else done
            counts[r.host] = counts.get(r.host, 0) + 1
        for (host, was_failed), n in self.tally.hosts.items():
            counts = failed if was_failed else done
            counts[host] = counts.get(host, 0) + n
        if self.skips:
            done[self.skip_host] = done.get(self.skip_host, 0) + self.skips
        hosts = sorted({*done, *failed, *self.host_problems})
        if not hosts:  # stopped before any result came
            return ["    By host: no task finished"]
        lines = ["    By host:"]
        for host in hosts:
            about = f" ({self.host_abouts[host]})" if host in self.host_abouts else ""
            line = f"        {host or '?'}{about}: {done.get(host, 0)} done, {failed.get(host, 0)} failed"
            if host in self.host_problems:
                line += f"; {self.host_problems[host]}"
            lines.append(line)
        return lines


def same_causes(failures: list[TaskResult], order: tuple[str, ...] = ()) -> list[tuple[Path, str, str]]:
    """(source, its modes, message) of ``failures``, the modes of one source
    that failed for one cause (its decoder's) on one line, in the run's
    ``order`` of modes."""
    grouped: dict[tuple[Path, str], list[str]] = {}
    for r in failures:
        grouped.setdefault((r.task.source, r.message), []).append(r.task.mode)
    rank = {mode: i for i, mode in enumerate(order)}
    return [
        (source, ", ".join(sorted(modes, key=lambda m: rank.get(m, len(rank)))), message)
        for (source, message), modes in grouped.items()
    ]


def csv_row(r: TaskResult, times: dict[float, str]) -> tuple:
    """A result's row of the CSV log (``times``: each time formatted once)."""
    # (An output of Path(""), text ".": a folder that could not be read.)
    return (
        os.fspath(r.task.source),
        "" if (out := os.fspath(r.task.output)) == "." else out,
        r.task.mode,
        r.status_text,
        r.returncode,
        times.get(r.elapsed) or times.setdefault(r.elapsed, f"{r.elapsed:.3f}"),
        r.host,
    )


def log_key(row: tuple) -> tuple[bytes, str]:
    """Where a CSV row goes in the log: by source as os.fsencode's bytes
    (without its call), then mode."""
    return row[0].encode(FS_ENCODING, "surrogateescape"), row[2]


FS_ENCODING = sys.getfilesystemencoding()


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def log_temp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def format_duration(seconds: float) -> str:
    if seconds < 600:
        return f"{seconds:.4f} seconds"
    if seconds < 3600:
        return f"{seconds / 60:.4f} minutes"
    return f"{seconds / 3600:.4f} hours"


# The word each action's line starts with: what was done to the output.
