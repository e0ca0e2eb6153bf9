"""The ``flac2all`` command: argv -> Settings -> engine.run -> exit status.

This is the one place where exceptions become messages and exit statuses.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from flac2all import __version__, codecs
from flac2all.codecs.options import options_help
from flac2all.errors import ExitStatus, Flac2allError, UsageError
from flac2all.executors import Executor
from flac2all.executors.jobqueue import JOBQUEUES
from flac2all.executors.local import LocalPool
from flac2all.face import config, console, hooks
from flac2all.face.config import positive_float, positive_int, settings_from
from flac2all.face.progress import make_display
from flac2all.face.usage import Parser
from flac2all.model import Settings
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


def build_parser(with_profiles: bool = False) -> argparse.ArgumentParser:
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
    )
    # With profiles, which name them, MODE and INPUTDIR may be left out
    # (argparse parses "MODE -o DIR INPUTDIR" right only when they are required).
    optional = "?" if with_profiles else None
    p.add_argument("mode", nargs=optional, metavar="MODE[,MODE...]", help="output format(s), see the list below")
    p.add_argument(
        "inputdir", nargs=optional, metavar="INPUTDIR", help="folder holding the FLAC files (searched recursively)"
    )
    p.add_argument("-o", "--outdir", metavar="DIR", default="./", help="output folder (default: ./)")
    p.add_argument("-f", "--force", action="store_true", help="re-encode outputs that already exist")
    p.add_argument(
        "-t",
        "--threads",
        type=positive_int,
        default=cpus,
        metavar="N",
        help=f"files converted at once, each decoded once and fed to one encoder per mode "
        f"(default: the CPU count, here {cpus})",
    )
    p.add_argument(
        "-n",
        "--nodirs",
        choices=["d", "m"],
        help="'d': put all outputs directly in OUTDIR; 'm': keep the folder structure but no per-mode folders",
    )
    p.add_argument(
        "-c",
        "--copy",
        action="store_true",
        help="copy the non-FLAC files (cover.jpg, ...) into every mode's tree; unchanged copies are skipped",
    )
    for family in codecs.OPTION_FAMILIES.values():
        # argparse %-formats help texts.
        p.add_argument(family.flag, default=family.default, metavar="OPTS", help=family.flag_help.replace("%", "%%"))
    p.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="fail a task that runs longer than this (default: 2 minutes plus 4x the audio's duration)",
    )
    p.add_argument(
        "--id3v2.3",
        dest="id3v23",
        action="store_true",
        help="write ID3v2.3 tags to mp3 (multiple values joined with '/') instead of ID3v2.4",
    )
    p.add_argument(
        "--embed-folder-art",
        action="store_true",
        help="embed cover.jpg/folder.jpg/front.jpg (or .png) as front cover when a source has none",
    )
    p.add_argument(
        "--delete",
        action="store_true",
        help="delete outputs whose source is gone (only files flac2all wrote, as its state records)",
    )
    p.add_argument(
        "--delete-anyway",
        action="store_true",
        help="let --delete remove more than 10%% of the outputs (refused otherwise: an unmounted source"
        " looks like a deleted library)",
    )
    p.add_argument(
        "--allow-empty",
        action="store_true",
        help="run even if INPUTDIR holds no FLAC file (refused otherwise: it may be an unmounted disk)",
    )
    p.add_argument(
        "--allow-missing-sources",
        action="store_true",
        help="run even if most sources of the mirror are missing or INPUTDIR is on another file system "
        "than last time (refused otherwise: the source looks unmounted)",
    )
    p.add_argument(
        "--decode-per-mode",
        action="store_true",
        help="decode a file separately for each mode instead of once for all (slower; to compare, or to bound"
        " encoders to -t)",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would be done, per action, and change nothing")
    p.add_argument("--plan-json", metavar="FILE", help="write the plan (every task and its action) to FILE as JSON")
    cluster = p.add_argument_group("cluster mode (workers: flac2all_worker MASTER_HOST)")
    cluster.add_argument(
        "-m",
        "--master",
        action="store_true",
        help="hand the tasks to flac2all_worker processes on other hosts instead of encoding here",
    )
    cluster.add_argument("--port", type=int, default=2019, help="port the master listens on (default 2019)")
    cluster.add_argument(
        "--bind", default="*", metavar="ADDRESS", help="address the master listens on (default: all interfaces)"
    )
    cluster.add_argument(
        "--keys",
        type=Path,
        metavar="DIR",
        help="the cluster's key folder (default: ~/.config/flac2all/cluster); the first -m run makes the "
        "master's keys there if it has none",
    )
    cluster.add_argument(
        "--insecure",
        action="store_true",
        help="run the cluster without keys: unauthenticated and unencrypted (workers then need --insecure --allow)",
    )
    cluster.add_argument(
        "--wait-workers",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="give up (exit 2) when no worker that can run the work has come for this long (default 300)",
    )
    cluster.add_argument(
        "--max-slots",
        type=positive_int,
        default=256,
        metavar="N",
        help="the most jobs one worker connection may hold at once, whatever it declares (default 256; "
        "a flac2all_worker process declares 1)",
    )
    cluster.add_argument(
        "--cluster-keygen",
        nargs="?",
        const="",
        metavar="DIR",
        help="make the cluster's keys in DIR (default ~/.config/flac2all/cluster) and exit: the master's, or with "
        "--worker NAME a worker's keypair in DIR/workers/NAME, authorized on the master; never replaces keys "
        "unless --force (give no MODE or INPUTDIR)",
    )
    dask = p.add_argument_group(
        "Dask cluster (workers: dask worker ADDRESS, on nodes with flac2all, the encoders and the same paths;"
        " needs pip install 'flac2all[dask]')"
    )
    dask.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run the jobs on the Dask cluster whose scheduler is at ADDRESS (for example tcp://head:8786)",
    )
    dask.add_argument(
        "--dask-scheduler-file",
        metavar="FILE",
        help="the same, with the scheduler named by the file of dask scheduler --scheduler-file FILE",
    )
    dask.add_argument(
        "--dask-jobqueue",
        choices=JOBQUEUES,
        help="run Dask workers as jobs of this batch system (dask-jobqueue), as many as there is work for; the queue,"
        " account, walltime and the like come from Dask's jobqueue config",
    )
    dask.add_argument(
        "--dask-jobs", type=positive_int, default=4, metavar="N", help="--dask-jobqueue: at most N jobs (default 4)"
    )
    dask.add_argument(
        "--dask-cores", type=positive_int, metavar="C", help="--dask-jobqueue: C cores (worker threads) per job"
    )
    dask.add_argument("--dask-memory", metavar="SIZE", help="--dask-jobqueue: memory per job, for example 2GB")
    p.add_argument(
        "-C",
        "--curses",
        action="store_true",
        help="full-screen live dashboard (progress, ETA, failures, per-host workers)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every failing command line and its full output")
    p.add_argument(
        "-q", "--quiet", action="store_true", help="print only failures and the summary (for cron); the log is complete"
    )
    p.add_argument(
        "--stop-on-hangup",
        action="store_true",
        help="stop when the terminal closes (SIGHUP) as on SIGTERM; by default the run goes on without its display"
        " and writes its log",
    )
    config.add_profile_options(p)
    p.add_argument("--version", action="version", version=f"flac2all {__version__}")
    return p


class StopOnSignal(threading.Event):
    """Set by SIGINT, SIGTERM (and SIGHUP with --stop-on-hangup); remembers
    which one.

    SIGHUP (the terminal closed: an ssh session dropped, a tmux session
    killed) otherwise only points the terminal's outputs at /dev/null: the
    run goes on to the end, as under nohup, and writes its log.
    """

    signum = signal.SIGINT

    def __init__(self, stop_on_hangup: bool = False) -> None:
        super().__init__()
        self.stop_on_hangup = stop_on_hangup
        # Known now: once the terminal hangs up, isatty() may fail too.
        self.terminal_fds = [fd for fd in (1, 2) if os.isatty(fd)]
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


def keygen_main(argv: list[str]) -> int | None:
    """``flac2all --cluster-keygen [DIR] [--worker NAME] [--force]``: the
    one command without a mode."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--cluster-keygen", nargs="?", const="", metavar="DIR")
    p.add_argument("--worker", metavar="NAME")
    p.add_argument("--force", action="store_true")
    known, _ = p.parse_known_args(argv)
    if known.cluster_keygen is None:
        return None
    from flac2all.cluster import setup

    try:
        lines = setup.keygen(known.cluster_keygen, known.worker, known.force)
    except UsageError as exc:
        print(f"flac2all: error: {exc}", file=sys.stderr)
        return ExitStatus.USAGE
    except OSError as exc:
        print(f"flac2all: error: cannot write keys: {exc.strerror} ({exc.filename})", file=sys.stderr)
        return ExitStatus.USAGE
    for line in lines:
        print(line)
    return ExitStatus.OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    console.standard_streams()
    done = keygen_main(argv)
    if done is not None:
        return done
    with_profiles = config.profiles_asked(argv)
    args = build_parser(with_profiles).parse_args(argv)
    try:
        # Every run's options, checked before any of them starts.
        make_parser = functools.partial(build_parser, with_profiles)
        runs = [(name, ns, *settings_from(ns)) for name, ns in config.runs(make_parser, argv, args)]
    except Flac2allError as exc:
        print(f"flac2all: error: {exc}", file=sys.stderr)
        return exc.exit_status
    logging.basicConfig(
        level=logging.DEBUG if any(ns.verbose for _, ns, _, _ in runs) else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    stop = StopOnSignal(any(ns.stop_on_hangup for _, ns, _, _ in runs))
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop.handle)
    status = ExitStatus.OK
    outcomes: list[hooks.Outcome] = []
    for name, ns, settings, notes in runs:
        if stop.is_set():
            break
        if name is not None and not ns.quiet:
            emit(f"profile {name}: {hooks.describe(settings)}")
        outcome = run_one(name, ns, settings, notes, stop)
        status = max(status, outcome.exit_status)
        if ns.on_done and not ns.dry_run:
            outcomes.append(outcome)
    for command, done_runs in hooks.by_command(outcomes if not stop.is_set() else []).items():
        problem = hooks.on_done(command, done_runs, stop)
        if problem:
            print(f"flac2all: error: {problem}", file=sys.stderr)
            status = max(status, ExitStatus.FAILURES)
    return status


def run_one(
    name: str | None, args: argparse.Namespace, settings: Settings, notes: list[str], stop: StopOnSignal
) -> hooks.Outcome:
    """One run (of a profile, or of the command line alone) to its outcome;
    its errors are printed, not raised, so that the next profile runs."""
    outcome = hooks.Outcome(name, settings, args.on_done)
    try:
        for note in notes:
            print(note, file=sys.stderr)
        plan_json = Path(args.plan_json) if args.plan_json else None
        if args.dry_run:
            for chunk in engine.dry_run(settings, plan_json).describe_chunks(settings):
                emit(chunk)
            return outcome
        executor: Executor = LocalPool()
        if sum(map(bool, (args.master, args.dask, args.dask_scheduler_file, args.dask_jobqueue))) > 1:
            raise UsageError("choose one of -m, --dask, --dask-scheduler-file and --dask-jobqueue")
        if args.master:
            from flac2all.cluster import setup

            config.check_cluster(settings)
            executor = setup.master_from(args, settings, emit)
        if args.dask or args.dask_scheduler_file or args.dask_jobqueue:
            from flac2all.executors.dask import DaskExecutor

            executor = DaskExecutor.connect(
                args.dask,
                args.dask_scheduler_file,
                args.dask_jobqueue,
                args.dask_jobs,
                args.dask_cores,
                args.dask_memory,
                say=emit,
            )
            executor.prepare(settings, stop)
        display = make_display(sys.stdout, dashboard=args.curses, quiet=args.quiet)
        outcome.report = engine.run(settings, display, stop, plan_json, executor)
    except Flac2allError as exc:
        print(f"flac2all: error: {f'profile {name}: ' if name else ''}{exc}", file=sys.stderr)
        outcome.error, outcome.exit_status = str(exc), exc.exit_status
        return outcome
    emit(outcome.report.summary())
    outcome.exit_status = outcome.report.exit_status
    return outcome


if __name__ == "__main__":
    sys.exit(main())
