"""``--on-done CMD``: a command run once at the end of all the runs (the
profiles, in turn), with their summary as JSON on its standard input; for a
notification, or an rsync to the device.

The command is split like a shell would split it, but no shell runs it
(``sh -c '...'`` gives one). It runs in its own process group, with a time
limit, and is killed with its children if flac2all is stopped.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from flac2all.errors import ExitStatus
from flac2all.model import Settings
from flac2all.report import Report

# A hook that copies a library to a slow stick may take long, but not forever.
HOOK_TIMEOUT = 6 * 3600.0
# Failures listed in the JSON (the CSV log has them all).
MAX_FAILURES = 100


@dataclass
class Outcome:
    """How one run (one profile) ended, for the hook."""

    profile: str | None
    settings: Settings
    on_done: str | None
    report: Report | None = None
    error: str | None = None  # a run refused before any work
    exit_status: int = ExitStatus.OK

    def as_json(self) -> dict:
        s = self.settings
        entry: dict = {
            "profile": self.profile,
            "input": os.fsdecode(s.input_dir),
            "outdir": os.fsdecode(s.outdir),
            "modes": list(s.modes),
            "exit_status": int(self.exit_status),
            "error": self.error,
        }
        report = self.report
        if report is not None:
            counts = report.counts()
            entry.update(
                sources=report.sources,
                tasks=counts.total,
                failed=counts.failed,
                done={action.value: n for action, n in counts.done.items()},
                wall_time=round(report.wall_time, 3),
                log=os.fsdecode(report.log_path) if report.log_path else None,
                failures=[
                    {"source": os.fsdecode(r.task.source), "mode": r.task.mode, "message": r.message}
                    for r in report.failures[:MAX_FAILURES]
                ],
                summary=report.summary().strip("\n"),
            )
        return entry


def describe(settings: Settings) -> str:
    return f"{os.fsdecode(settings.input_dir)} -> {os.fsdecode(settings.outdir)} ({','.join(settings.modes)})"


def by_command(outcomes: list[Outcome]) -> dict[str, list[Outcome]]:
    """The runs each distinct command is told about (one call each)."""
    grouped: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.on_done:
            grouped.setdefault(outcome.on_done, []).append(outcome)
    return grouped


def payload(outcomes: list[Outcome]) -> dict:
    return {
        "version": 1,
        "exit_status": max((int(o.exit_status) for o in outcomes), default=0),
        "runs": [o.as_json() for o in outcomes],
    }


def on_done(
    command: str, outcomes: list[Outcome], stop: threading.Event | None = None, stdout: int | None = None
) -> str | None:
    """Run ``command`` with the runs' summary on stdin (``stdout``: the
    descriptor its output goes to, else ours); a sentence saying what went
    wrong, or None."""
    # '~' is the user's home, as a shell would have it (no shell runs it).
    argv = [os.path.expanduser(word) if word.startswith("~") else word for word in shlex.split(command)]
    data = json.dumps(payload(outcomes), indent=1, ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n"
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=stdout, start_new_session=True)
    except OSError as exc:
        return f"--on-done {argv[0]}: cannot run it: {exc.strerror or exc}"
    deadline = time.monotonic() + HOOK_TIMEOUT
    sending: bytes | None = data
    try:
        while True:
            try:
                # Once started, communicate() resumes where it was: given the data again, it raises.
                proc.communicate(sending, timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                sending = None
                if stop is not None and stop.is_set():
                    kill(proc)
                    return f"--on-done {argv[0]}: stopped by a signal"
                if time.monotonic() > deadline:
                    kill(proc)
                    return f"--on-done {argv[0]}: still running after {HOOK_TIMEOUT / 3600:.0f} hours; stopped"
    except BaseException:
        kill(proc)
        raise
    if proc.returncode != 0:
        return f"--on-done {argv[0]}: exited with status {proc.returncode}"
    return None


def kill(proc: subprocess.Popen) -> None:
    """Kill the hook and its children (its own process group), and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()
