"""A report's summary as text: the lines printed at the end of a run, and
-q's one line."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from flac2all.lines import VERBS, printable
from flac2all.model import Action, Status, TaskResult

if TYPE_CHECKING:
    from flac2all.report import Counts, Report

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


def kept_orphans(c: Counts) -> str:
    """The orphans a run kept, as the end of its nothing-to-do line: "" if none."""
    kept = c.done[Action.ORPHAN]
    return f" ({action_words(kept, Action.ORPHAN)}: --delete removes them)" if kept else ""


def summary_text(report: Report, profile: str | None = None) -> str:
    """The text printed at the end: the original 5.4's lines, then what was
    done by action, the time per mode, and the failures; for a run with
    nothing to do, one line saying so. ``profile``: the profile the run
    is, named in the heading."""
    c = report.counts()
    title = f"| Summary of profile {profile} " if profile is not None else "| Summary "
    heading = ["", title + "=" * max(3, 80 - len(title))]
    if nothing_to_do(report, c):
        orphans = kept_orphans(c)
        return "\n".join(
            [
                *heading,
                f"    nothing to do: {plural(c.done[Action.SKIP], 'output')} up to date{orphans}"
                f" (checked in {format_duration(report.wall_time)})",
                *(host_lines(report) if report.by_host or report.host_problems else []),
                *log_lines(report),
            ]
        )
    rate = 100.0 * c.total / report.issued if report.issued else 100.0
    error_rate = 100.0 * c.failed / c.total if c.total else 0.0
    lines = [
        *heading,
        # The original 5.4's lines, with what they count named.
        f"    Total files on input: {report.sources} FLAC files ({plural(report.issued, 'task')}"
        f" in {plural(len(report.modes), 'mode')})",
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
        f"    Wall time: {format_duration(report.wall_time)}",
    ]
    lines += mode_lines(report, c)
    lines += trouble_lines(report, c)
    failed = c.failed
    if report.failures:
        lines.append(f"    Failed ({failed}):")
        causes = same_causes(report.failures, report.modes)
        lines += [f"        {printable(source)} [{modes}]: {message}" for source, modes, message in causes[:20]]
        if len(causes) > 20:
            more = sum(len(modes.split(", ")) for _, modes, _ in causes[20:])
            lines.append(f"        ... and {more} more (grep -v SUCCESS on the log)")
    if report.by_host or report.host_problems:
        lines += host_lines(report)
    lines += log_lines(report)
    return "\n".join(lines)


def trouble_lines(report: Report, c: Counts) -> list[str]:
    """Why tasks have no result: the run stopped, was interrupted, or
    results went missing."""
    lines = []
    if report.halted_by is not None:
        lines.append(
            f"    STOPPED after: {report.halted_by}; {report.issued - c.total} task(s) not started: make room and run"
            " again to finish them"
        )
    elif not report.complete and report.interrupted_by is None:
        lines.append(f"    ERROR: {report.issued} tasks were issued but {c.total} results came back")
    if report.interrupted_by is not None:
        lines.append(f"    Interrupted: {report.issued - c.total} task(s) did not run; run again to finish them")
    return lines


def log_lines(report: Report) -> list[str]:
    """Where the log is, and what could not be written."""
    lines = []
    if report.log_path is not None:
        lines.append(f"    Log written to: {printable(report.log_path)}")
    lines += write_errors(report)
    return lines


def write_errors(report: Report) -> list[str]:
    lines = []
    if report.log_error is not None:
        lines.append(f"    ERROR: {report.log_error}")
    if report.state_error is not None:
        lines.append(f"    WARNING: {report.state_error}")
    return lines


def nothing_to_do(report: Report, c: Counts) -> bool:
    """Every task was an output up to date or an orphan kept, and the run
    went to its end: nothing changed, nothing failed."""
    left = c.done[Action.SKIP] + c.done[Action.ORPHAN]
    return c.total == left and not c.failed and report.complete and not trouble_lines(report, c)


def brief_line(report: Report, profile: str | None = None) -> str:
    """-q's summary: "" when nothing changed and nothing went wrong; else
    one line, named after ``profile``: what was done by action (up-to-date
    outputs left out), failures, and what went wrong."""
    c = report.counts()
    trouble = [line.strip() for line in [*trouble_lines(report, c), *write_errors(report)]]
    if nothing_to_do(report, c) and not trouble:
        return ""
    done = [action for action in ACTION_ORDER if c.done[action] and action is not Action.SKIP]
    parts = [action_words(c.done[action], action) for action in done]
    if c.failed:
        where = f" (grep -v SUCCESS {printable(report.log_path)})" if report.log_path is not None else ""
        parts.append(f"{c.failed} failed{where}")
    text = "; ".join([", ".join(parts), *trouble] if parts else trouble)
    return f"{profile}: {text}" if profile is not None else text


def mode_lines(report: Report, c: Counts) -> list[str]:
    """The original's time per mode, of the encodes that ran."""
    lines = []
    for mode in report.modes:
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


def host_lines(report: Report) -> list[str]:
    """Per host: tasks done and failed, and why a host got no (more) work
    (unhealthy before work, or quarantined)."""
    done: dict[str, int] = {}
    failed: dict[str, int] = {}
    for r in report.results:
        counts = failed if r.status is Status.FAILED else done
        counts[r.host] = counts.get(r.host, 0) + 1
    for (host, was_failed), n in report.tally.hosts.items():
        counts = failed if was_failed else done
        counts[host] = counts.get(host, 0) + n
    if report.skips:
        done[report.skip_host] = done.get(report.skip_host, 0) + report.skips
    hosts = sorted({*done, *failed, *report.host_problems})
    if not hosts:  # stopped before any result came
        return ["    By host: no task finished"]
    lines = ["    By host:"]
    for host in hosts:
        about = f" ({report.host_abouts[host]})" if host in report.host_abouts else ""
        line = f"        {host or '?'}{about}: {done.get(host, 0)} done, {failed.get(host, 0)} failed"
        if host in report.host_problems:
            line += f"; {report.host_problems[host]}"
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


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def format_duration(seconds: float) -> str:
    if seconds < 600:
        return f"{seconds:.4f} seconds"
    if seconds < 3600:
        return f"{seconds / 60:.4f} minutes"
    return f"{seconds / 3600:.4f} hours"
