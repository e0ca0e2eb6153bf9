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
from pathlib import Path

from flac2all import __version__, codecs, tools
from flac2all.__main__ import SIGNALS, EarlySignals
from flac2all.codecs.options import options_help
from flac2all.errors import ExitStatus, Flac2allError, UsageError
from flac2all.executors import Executor
from flac2all.executors.jobqueue import JOBQUEUES
from flac2all.executors.local import LocalPool
from flac2all.face import config, console, hooks
from flac2all.face.config import positive_float, positive_int
from flac2all.face.progress import RichDisplay, make_display
from flac2all.face.usage import Parser
from flac2all.lines import shown
from flac2all.model import DaskOptions, MasterOptions, OpusGain, ReplayGain, Request
from flac2all.running import engine

DESCRIPTION = """\
Convert every FLAC file under INPUTDIR into one or more formats, on all CPU
cores. Outputs go to OUTDIR/<mode>/<path relative to INPUTDIR>; tags and
cover art are carried over; existing outputs are skipped unless -f.
"""

EPILOG = """\
modes (comma-separated, for example mp3,opus):
{modes}

encoder options:
{options}

results:
  A summary is printed at the end and every task is logged, one CSV row each,
  to OUTDIR/conversion_results.log (status SUCCESS..., or ERROR: <cause>).

exit status:
  0 all tasks succeeded or were skipped; 1 some task failed; 2 usage or
  configuration error (including a missing encoder program); 130/143
  interrupted by SIGINT/SIGTERM.
"""


def build_parser() -> Parser:
    """The parser of ``flac2all``, its options declared once (``Parser.option``
    records each in the table profiles read)."""
    cpus = os.cpu_count() or 1
    p = Parser(
        prog="flac2all",
        usage="flac2all MODE[,MODE...] [options] INPUTDIR\n"
        "       flac2all --profile NAME [--profile NAME...] [options]",
        description=DESCRIPTION,
        epilog=EPILOG.format(modes=codecs.all_modes_help(), options=options_help(codecs.OPTION_FAMILIES.values()))
        + "\n"
        + config.PROFILE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # Profiles name MODE and INPUTDIR; --cluster-keygen takes neither.
        optional_with=("profile", "all_profiles", "cluster_keygen"),
    )
    p.option("mode", nargs="?", metavar="MODE[,MODE...]", help="output format(s), see the list below")
    p.option("inputdir", nargs="?", metavar="INPUTDIR", help="folder holding the FLAC files (searched recursively)")
    p.option("-o", "--outdir", metavar="DIR", default="./", help="output folder (default: ./)")
    p.option("-f", "--force", action="store_true", help="re-encode outputs that already exist")
    p.option(
        "-t",
        "--threads",
        type=positive_int,
        default=cpus,
        metavar="N",
        help=f"files converted at once, each decoded once and fed to one encoder per mode "
        f"(default: the CPU count, here {cpus})",
    )
    p.option(
        "-n",
        "--nodirs",
        choices=["d", "m"],
        help="'d': put all outputs directly in OUTDIR; 'm': keep the folder structure but no per-mode folders",
    )
    p.option(
        "-c",
        "--copy",
        action="store_true",
        help="copy the non-FLAC files (cover.jpg, ...) into every mode's tree; unchanged copies are skipped",
    )
    for family in codecs.OPTION_FAMILIES.values():
        # argparse %-formats help texts.
        p.option(family.flag, default=family.default, metavar="OPTS", help=family.flag_help.replace("%", "%%"))
    p.option(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="fail a task that runs longer than this (default: 2 minutes plus 4x the audio's duration)",
    )
    p.option(
        "--id3v2.3",
        dest="id3v23",
        action="store_true",
        help="write ID3v2.3 tags to mp3 (multiple values joined with '/') instead of ID3v2.4",
    )
    p.option(
        "--embed-folder-art",
        action="store_true",
        help="embed cover.jpg/folder.jpg/front.jpg (or .png) as front cover when a source has none",
    )
    p.option(
        "--replaygain",
        choices=[policy.value for policy in ReplayGain],
        default=ReplayGain.KEEP.value,
        help="the outputs' gain tags: 'keep' the source's (default); 'fill' in those a source lacks, or "
        "'compute' all of them, measured (EBU R128, ReplayGain 2.0; R128 gains in Opus) from the decode the "
        "conversion makes anyway (needs flac2all[loudness]); 'off': none",
    )
    p.option(
        "--opus-gain",
        choices=[mode.value for mode in OpusGain],
        default=OpusGain.R128.value,
        help="Opus outputs' gains: 'r128' tags (default, RFC 7845); 'header': the album's (else the track's) in "
        "the Opus header's output gain, which every player applies, and the R128 tags relative to it; 'both': "
        "R128 and REPLAYGAIN_* tags",
    )
    p.option(
        "--delete",
        action="store_true",
        help="delete outputs whose source is gone (only files flac2all wrote, as its state records)",
    )
    p.option(
        "--delete-anyway",
        action="store_true",
        help="--delete, even when that removes half the outputs or more, or more than 50 of them and more"
        " than 10%% (refused otherwise: an unmounted source looks like a deleted library); implies --delete",
    )
    p.option(
        "--allow-empty",
        action="store_true",
        help="run even if INPUTDIR holds no FLAC file (refused otherwise: it may be an unmounted disk)",
    )
    p.option(
        "--allow-missing-sources",
        action="store_true",
        help="run even if most sources of the mirror are missing or INPUTDIR is on another file system "
        "than last time (refused otherwise: the source looks unmounted)",
    )
    p.option(
        "--decode-per-mode",
        action="store_true",
        help="decode a file separately for each mode instead of once for all (slower; to compare, or to bound"
        " encoders to -t)",
    )
    p.option("--dry-run", action="store_true", help="print what would be done, per action, and change nothing")
    p.option("--plan-json", metavar="FILE", help="write the plan (every task and its action) to FILE as JSON")
    cluster = p.group("cluster mode (workers: flac2all_worker MASTER_HOST)")
    cluster.option(
        "-m",
        "--master",
        action="store_true",
        help="hand the tasks to flac2all_worker processes on other hosts instead of encoding here",
    )
    cluster.option("--port", type=int, default=2019, help="port the master listens on (default 2019)")
    cluster.option(
        "--bind", default="*", metavar="ADDRESS", help="address the master listens on (default: all interfaces)"
    )
    cluster.option(
        "--keys",
        type=Path,
        metavar="DIR",
        help="the cluster's key folder (default: ~/.config/flac2all/cluster); the first -m run makes the "
        "master's keys there if it has none",
    )
    cluster.option(
        "--insecure",
        action="store_true",
        help="run the cluster without keys: unauthenticated and unencrypted (workers then need --insecure --allow)",
    )
    cluster.option(
        "--wait-workers",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="give up (exit 2) when no worker that can run the work has come for this long (default 300)",
    )
    cluster.option(
        "--max-slots",
        type=positive_int,
        default=256,
        metavar="N",
        help="the most jobs one worker connection may hold at once, whatever it declares (default 256; "
        "a flac2all_worker process declares 1)",
    )
    cluster.option(
        "--cluster-keygen",
        nargs="?",
        const="",
        metavar="DIR",
        help="make the cluster's keys in DIR (default ~/.config/flac2all/cluster) and exit: the master's, or with "
        "--worker NAME a worker's keypair in DIR/workers/NAME, authorized on the master; never replaces keys "
        "unless --force (give no MODE or INPUTDIR)",
    )
    cluster.option(
        "--worker",
        metavar="NAME",
        help="with --cluster-keygen: make worker NAME's keypair and authorize it on the master",
    )
    dask = p.group(
        "Dask cluster (workers: dask worker ADDRESS, on nodes with flac2all, the encoders and the same paths;"
        " needs pip install 'flac2all[dask]')"
    )
    dask.option(
        "--dask",
        metavar="ADDRESS",
        help="run the jobs on the Dask cluster whose scheduler is at ADDRESS (for example tcp://head:8786)",
    )
    dask.option(
        "--dask-scheduler-file",
        metavar="FILE",
        help="the same, with the scheduler named by the file of dask scheduler --scheduler-file FILE",
    )
    dask.option(
        "--dask-jobqueue",
        choices=JOBQUEUES,
        help="run Dask workers as jobs of this batch system (dask-jobqueue), as many as there is work for; the queue,"
        " account, walltime and the like come from Dask's jobqueue config",
    )
    dask.option(
        "--dask-jobs", type=positive_int, default=4, metavar="N", help="--dask-jobqueue: at most N jobs (default 4)"
    )
    dask.option(
        "--dask-cores", type=positive_int, metavar="C", help="--dask-jobqueue: C cores (worker threads) per job"
    )
    dask.option("--dask-memory", metavar="SIZE", help="--dask-jobqueue: memory per job, for example 2GB")
    p.option(
        "-C",
        "--curses",
        action="store_true",
        help="full-screen live dashboard (progress, ETA, failures, per-host workers)",
    )
    p.option("-v", "--verbose", action="store_true", help="log every failing command line and its full output")
    p.option(
        "-q",
        "--quiet",
        action="store_true",
        help="for cron: print nothing when nothing changed and nothing failed, else one line per run (named after its"
        " profile) and the failures on stderr; the log is complete",
    )
    p.option(
        "--stop-on-hangup",
        action="store_true",
        help="stop when the terminal closes (SIGHUP) as on SIGTERM; by default the run goes on without its display"
        " and writes its log",
    )
    config.add_profile_options(p)
    p.register("action", "version", ShowVersions)
    p.option("--version", action="version", help="print flac2all's version and the encoders it finds on PATH, and exit")
    return p


class ShowVersions(argparse.Action):
    """``--version``: flac2all's version, then one line per encoder (its
    version, or "not found"), from the cached probes of ``tools``."""

    def __init__(self, option_strings: list[str], dest: str, default: object = None, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print("\n".join([f"flac2all {__version__}", *tools.found()]), flush=True)
        parser.exit(ExitStatus.OK)


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
    console.standard_streams()
    parser = build_parser()
    given = parser.parse_given(argv)  # the one parse: what the command line gives
    if getattr(given, "cluster_keygen", None) is not None:
        return keygen(given)
    try:
        # Every run's options, checked before any of them starts.
        requests = [config.request_from(name, args) for name, args in config.runs(parser.options, given)]
        config.check_shared_outdirs(requests)
    except Flac2allError as exc:
        print(f"flac2all: error: {shown(str(exc))}", file=sys.stderr)
        return exc.exit_status
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
    for request in requests:
        if stop.is_set():
            break
        if request.profile is not None and not request.display.quiet:
            emit(f"profile {request.profile}: {hooks.describe(request.settings)}")
        outcome = run_one(request, stop)
        status = max(status, outcome.exit_status)
        if request.on_done and not request.dry_run:
            outcomes.append(outcome)
    for command, done_runs in hooks.by_command(outcomes if not stop.is_set() else []).items():
        problem = hooks.on_done(command, done_runs, stop)
        if problem:
            print(f"flac2all: error: {shown(problem)}", file=sys.stderr)
            status = max(status, ExitStatus.FAILURES)
    if stop.is_set():  # during a hook too
        status = max(status, ExitStatus(128 + stop.signum))
    return status


def run_one(request: Request, stop: StopOnSignal) -> hooks.Outcome:
    """One run (of a profile, or of the command line alone) to its outcome;
    its errors are printed, not raised, so that the next profile runs."""
    settings = request.settings
    outcome = hooks.Outcome(request.profile, settings, request.on_done)
    try:
        for note in request.notes:
            print(note, file=sys.stderr)
        if request.dry_run:
            problem = engine.dry_run(settings, request.plan_json).write(settings, sys.stdout)
            if problem is not None:
                console.silence(1)  # (nor the interpreter's last flush)
                print(f"flac2all: error: {problem}", file=sys.stderr)
                outcome.error, outcome.exit_status = problem, ExitStatus.FAILURES
            return outcome
        executor = executor_for(request, stop)
        display = make_display(
            sys.stdout, request.display.dashboard, request.display.quiet, (settings.input_dir, settings.outdir)
        )
        if isinstance(display, RichDisplay):
            display.stopping, stop.shown_live = stop, True
        try:
            outcome.report = engine.run(settings, display, stop, request.plan_json, executor)
        finally:
            stop.shown_live = False
    except Flac2allError as exc:
        profile = f"profile {request.profile}: " if request.profile else ""
        print(f"flac2all: error: {shown(profile + str(exc))}", file=sys.stderr)
        outcome.error, outcome.exit_status = str(exc), exc.exit_status
        return outcome
    if not request.display.quiet:
        emit(outcome.report.summary(request.profile))
    elif brief := outcome.report.brief(request.profile):
        emit(brief)
    outcome.exit_status = outcome.report.exit_status
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
