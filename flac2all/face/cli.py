"""The ``flac2all`` command: argv (parsed once) -> one Request per run -> engine.run -> exit status.

This is the one place where exceptions become messages and exit statuses.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading

from flac2all.__main__ import SIGNALS, EarlySignals
from flac2all.errors import ExitStatus, Flac2allError, UsageError
from flac2all.executors import Executor
from flac2all.executors.local import LocalPool
from flac2all.face import config, console, hooks, watch
from flac2all.face.arguments import build_parser
from flac2all.face.live import RichDisplay
from flac2all.face.progress import make_display
from flac2all.lines import shown
from flac2all.model import STDOUT, DaskOptions, MasterOptions, Request
from flac2all.running import engine


class StopOnSignal(threading.Event):
    """Set by SIGINT, SIGTERM (and SIGHUP with --stop-on-hangup); remembers
    which one.

    SIGHUP (the terminal closed: an ssh session dropped, a tmux session
    killed) otherwise only points the terminal's outputs at /dev/null: the
    run goes on to the end, as under nohup, and writes its log.
    """

    signum = signal.SIGINT

    def __init__(self, stop_on_hangup: bool = False, terminal_fds: list[int] | None = None) -> None:
        super().__init__()
        self.stop_on_hangup = stop_on_hangup
        # A live display on the terminal says it is stopping: a line written
        # under it would break its redraws and stay above the summary.
        self.shown_live = False
        # Known now: once the terminal hangs up, isatty() may fail too.
        self.terminal_fds = [fd for fd in (1, 2) if os.isatty(fd)] if terminal_fds is None else terminal_fds
        self.hung_up = False

    def handle(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP and not self.stop_on_hangup:
            self.hung_up = True
            for fd in self.terminal_fds:
                console.silence(fd)
            return
        if self.is_set():
            return
        self.signum = signum
        if self.shown_live:
            self.set()
            return
        # os.write, not print: a signal handler must not re-enter a buffered
        # stream the interrupted code may be writing to.
        with contextlib.suppress(OSError):  # stderr may be gone too
            os.write(2, f"\n{signal.Signals(signum).name}: stopping the encoders and writing the log...\n".encode())
        self.set()


def emit(text: str) -> None:
    """Print to stdout; if stdout is gone (a closed pipe or terminal), the
    text is lost but the run's outcome is not (it is in the log)."""
    try:
        print(text, flush=True)
    except OSError:
        console.silence(1)


def unsaid(text: str) -> None:
    """What -q does not print."""


def warned(text: str) -> None:
    """What -q still prints, on stderr: something went wrong."""
    with contextlib.suppress(OSError):  # stderr may be gone too
        print(text, file=sys.stderr, flush=True)


def keygen(args: argparse.Namespace) -> int:
    """``flac2all --cluster-keygen [DIR] [--worker NAME] [--force]``: the
    one command without a mode."""
    from flac2all.cluster import setup

    try:
        lines = setup.keygen(args.cluster_keygen, getattr(args, "worker", None), getattr(args, "force", False))
    except UsageError as exc:
        print(f"flac2all: error: {exc}", file=sys.stderr)
        return ExitStatus.USAGE
    except OSError as exc:
        print(f"flac2all: error: cannot write keys: {exc.strerror} ({exc.filename})", file=sys.stderr)
        return ExitStatus.USAGE
    for line in lines:
        print(line)
    return ExitStatus.OK


def main(argv: list[str] | None = None, early: EarlySignals | None = None) -> int:
    """The command; ``early``: the signals caught since the process started
    (``flac2all.__main__`` installs their handlers before importing this)."""
    argv = sys.argv[1:] if argv is None else argv
    closed = console.standard_streams()
    parser = build_parser()
    given = parser.parse_given(argv)  # the one parse: what the command line gives
    if getattr(given, "cluster_keygen", None) is not None:
        return keygen(given)
    try:
        # Every run's options, checked before any of them starts.
        requests = [config.request_from(name, args) for name, args in config.runs(parser.options, given)]
        config.check_shared_outdirs(requests)
        plan_out = [r for r in requests if r.plan_json == STDOUT]
        if len(plan_out) > 1:
            raise UsageError("--plan-json -: only one run can write its plan to standard output")
        if plan_out and 1 in closed:  # descriptor 1 is the /dev/null put in its place: the plan would be lost
            raise UsageError("--plan-json: standard output is closed; name a file for the plan")
    except Flac2allError as exc:
        print(f"flac2all: error: {shown(str(exc))}", file=sys.stderr)
        return exc.exit_status
    # Under --plan-json -, standard output holds the plan alone: what the
    # command prints there (listings, display, summaries, a hook's output)
    # goes to stderr, as tar's listing does when its archive is '-'.
    with contextlib.redirect_stdout(sys.stderr) if plan_out else contextlib.nullcontext():
        return run_all(requests, early, hook_output=2 if plan_out else None)


def run_all(requests: list[Request], early: EarlySignals | None, hook_output: int | None) -> int:
    """The runs the command asked for, then their hooks, then the watch."""
    logging.basicConfig(
        level=logging.DEBUG if any(r.verbose for r in requests) else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    stop = StopOnSignal(any(r.stop_on_hangup for r in requests), early.terminal_fds if early else None)
    for signum in SIGNALS:
        signal.signal(signum, stop.handle)
    for signum in early.caught if early else ():
        stop.handle(signum, None)
    status = ExitStatus.OK
    outcomes: list[hooks.Outcome] = []
    watcher = watch.Watcher(requests, emit, warned)
    if watcher:
        watcher.start()  # before the first runs: what changes during them is a batch after
    refused: dict[int, str | None] = {}
    for request in requests:
        if stop.is_set():
            break
        outcome = run_one(request, stop)
        refused[id(request)] = outcome.error
        status = max(status, outcome.exit_status)
        if request.on_done and not request.dry_run:
            outcomes.append(outcome)
    for command, done_runs in hooks.by_command(outcomes if not stop.is_set() else []).items():
        problem = hooks.on_done(command, done_runs, stop, hook_output)
        if problem:
            print(f"flac2all: error: {shown(problem)}", file=sys.stderr)
            status = max(status, ExitStatus.FAILURES)
    if watcher:
        status = max(status, watcher.follow(stop, lambda request: run_one(request, stop, batch=True), refused))
    if stop.is_set():  # during a hook too
        status = max(status, ExitStatus(128 + stop.signum))
    return status


def run_one(request: Request, stop: StopOnSignal, batch: bool = False) -> hooks.Outcome:
    """One run (of a profile, or of the command line alone) to its outcome;
    its errors are printed, not raised, so that the next profile runs.
    ``batch``: a watch batch, the same run without a display, its log
    appended; the watcher says what it did and what it refused."""
    if request.profile is not None and not request.display.quiet and not batch:
        emit(f"profile {request.profile}: {hooks.describe(request.settings)}")
    settings = request.settings
    outcome = hooks.Outcome(request.profile, settings, request.on_done)
    try:
        for note in () if batch else request.notes:
            print(note, file=sys.stderr)
        if request.dry_run:
            problem = engine.dry_run(settings, request.plan_json).write(settings, sys.stdout)
            if problem is not None:
                console.silence(1)  # (nor the interpreter's last flush)
                print(f"flac2all: error: {problem}", file=sys.stderr)
                outcome.error, outcome.exit_status = problem, ExitStatus.FAILURES
            return outcome
        executor = executor_for(request, stop)
        display = (
            None
            if batch
            else make_display(
                sys.stdout, request.display.dashboard, request.display.quiet, (settings.input_dir, settings.outdir)
            )
        )
        if isinstance(display, RichDisplay):
            display.stopping, stop.shown_live = stop, True
        try:
            outcome.report = engine.run(settings, display, stop, request.plan_json, executor, batch=batch)
        finally:
            stop.shown_live = False
    except Flac2allError as exc:
        profile = f"profile {request.profile}: " if request.profile else ""
        if not batch:
            print(f"flac2all: error: {shown(profile + str(exc))}", file=sys.stderr)
        outcome.error, outcome.exit_status = str(exc), exc.exit_status
        return outcome
    outcome.exit_status = outcome.report.exit_status
    if batch:
        return outcome
    if not request.display.quiet:
        emit(outcome.report.summary(request.profile))
    elif brief := outcome.report.brief(request.profile):
        emit(brief)
    return outcome


def executor_for(request: Request, stop: threading.Event) -> Executor:
    """The executor the request chose: this machine's cores, the cluster
    master of -m, or a Dask cluster (ready to take the run's jobs). Under
    -q what they say while they run (listening, workers come and gone) is
    not printed: the run's one line and the log say what happened."""
    choice, settings = request.executor, request.settings
    say, warn = (unsaid, warned) if request.display.quiet else (emit, emit)
    if isinstance(choice, MasterOptions):
        from flac2all.cluster import setup

        config.check_cluster(settings)
        return setup.master_from(choice, settings, say, warn)
    if isinstance(choice, DaskOptions):
        from flac2all.executors.dask import DaskExecutor

        executor = DaskExecutor.connect(
            choice.address, choice.scheduler_file, choice.jobqueue, choice.jobs, choice.cores, choice.memory, say=say
        )
        executor.prepare(settings, stop)
        return executor
    return LocalPool()


if __name__ == "__main__":
    sys.exit(main())
