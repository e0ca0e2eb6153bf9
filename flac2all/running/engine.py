"""A whole run, usable from Python without the CLI:
probe the tools -> discovery -> plan (with the mirror's state) -> the jobs
that are bookkeeping or file moves, done here -> the executor (the local pool,
a cluster master: ``flac2all.executors``) for the rest -> report.

    from pathlib import Path
    from flac2all.running.engine import convert
    report = convert(Path("music"), Path("out"), "mp3,opus", threads=2)
    print(report.summary())
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flac2all import codecs, csvlog, dirs, tools
from flac2all.codecs import Codec
from flac2all.csvlog import LOG_NAME
from flac2all.errors import ExitStatus, TaskError, UsageError, describe_oserror
from flac2all.executors import Executor
from flac2all.executors.local import LocalPool
from flac2all.face.console import Display, Guarded, Silent
from flac2all.model import STDOUT, Layout, Lossy, Names, Settings
from flac2all.planning import discovery, layouts, plan, planned
from flac2all.planning.flow import Flow, FolderPlan, Folders, Head, Whole, has_rows, stream_after, streamable
from flac2all.planning.mirror import Mirror
from flac2all.planning.plan import collector_paused
from flac2all.report import Report
from flac2all.running import guards, outputs, preflight
from flac2all.running.execution import Run, state_lost
from flac2all.running.guards import outdir_lock
from flac2all.running.listing import Listing
from flac2all.state import STATE_DIR, State, StateError, UnreadableStateError, move_aside, state_path

log = logging.getLogger("flac2all")


def check_programs(selected: tuple[Codec, ...]) -> None:
    """Fail before any work when an encoder program is missing."""
    needed: dict[str, str] = {}
    for codec in selected:
        for program in codec.programs:
            needed.setdefault(program, f"mode {codec.name}")
    tools.require(needed)


def prune_set(settings: Settings, selected: tuple[Codec, ...]) -> frozenset[Path]:
    """Output folders the input walk must not enter.

    The whole output folder when it lies inside the input; its per-mode
    folders and state when the input lies inside the output (or is it).
    """
    inp, out = settings.input_dir, settings.outdir
    # Where OUTDIR lies, in the walk's terms: one reached through a link is inside the input all the same.
    real_in, real_out = inp.resolve(), out.resolve()
    if real_out != real_in and real_out.is_relative_to(real_in):
        return frozenset({inp / real_out.relative_to(real_in)})
    out = inp if real_out == real_in else out
    return frozenset({out / c.folder for c in selected} | {out / STATE_DIR})


def discover_input(
    settings: Settings, selected: tuple[Codec, ...], dry: bool = False, head: Head | None = None
) -> discovery.Tree:
    """The input tree, the rest of the walk ``head`` started, if any; an
    input without any FLAC is refused (a warning in a dry run) before
    OUTDIR is touched."""
    with collector_paused():  # every Source made stays (a third of the walk's CPU at 200,000 sources)
        if head is None:
            tree = discovery.discover(settings.input_dir, prune_set(settings, selected), plan.selection_of(settings))
        else:
            tree = discovery.gather(head.listings())
    problem = guards.empty_input(settings, tree)
    if problem and not dry:
        raise UsageError(problem)
    if problem:
        log.warning("a run would refuse: %s", problem)
    return tree


def selected_codecs(settings: Settings) -> tuple[Codec, ...]:
    """The run's codecs, once its input folder is known to exist."""
    selected = tuple(codecs.resolve(m) for m in settings.modes)
    guards.check_input_dir(settings.input_dir)
    return selected


def dry_run(settings: Settings, plan_json: Path | None = None) -> Listing:
    """The plan of a run, changing nothing (no folder, state or lock made,
    nothing written in OUTDIR): the run's own flow, with a sink that lists
    instead of executing. What a run would refuse is a warning: the plan
    is what the user needs to decide."""
    selected = selected_codecs(settings)
    guards.check_outdir(settings.outdir)
    head = look_ahead(settings, selected, plan_json)
    tree = discover_input(settings, selected, dry=True, head=head) if whole(head) else None
    with read_state(settings) as state:
        flow = plan_flow(settings, selected, state, head, tree)
        if not flow.streaming:
            planned_first(flow)  # while the state is open
    if plan_json is not None:
        write_plan_json(plan_json, flow.plan, settings.outdir)
    return Listing(flow)


def look_ahead(settings: Settings, selected: tuple[Codec, ...], plan_json: Path | None) -> Head | None:
    """The walk's start, for a run that may be planned as the walk goes
    (``flow.streamable``): its first ``stream_after()`` sources; None: the
    run is planned whole."""
    if not streamable(settings, plan_json):
        return None
    return Head(settings.input_dir, prune_set(settings, selected), stream_after(), plan.selection_of(settings))


def whole(head: Head | None) -> bool:
    """Whether the run is planned whole whatever its state: not streamable,
    or a library the head walked to its end (small: its jobs go costliest
    first). A larger one has FLAC in it (the empty input's guard passes)."""
    return head is None or head.ended


def plan_flow(
    settings: Settings, selected: tuple[Codec, ...], state: State, head: Head | None, tree: discovery.Tree | None
) -> Flow:
    """The run's plan as folder plans, from the walk ``head`` started (a
    library past ``stream_after()`` sources, a plan that may be made folder
    by folder): its folders' jobs run as they are planned for a first run
    (``Folders``), after the walk for a mirror (``Mirror``: moves, orphans
    and the input's guard are known at its end); else from the whole tree
    (``Whole``). ``state.readonly``: a dry run's, whose guards warn rather
    than refuse."""
    versions = tools.versions({p for c in selected for p in c.programs})
    refuse = not state.readonly
    known = layouts.layout_known(state, settings)  # (before any row is written; a streamed run has no template)
    if tree is None and head is not None:
        if has_rows(state):  # a mirror: moves and orphans are known at the walk's end

            def check(found: int, known: int) -> None:
                check_input(settings, state, found, known)

            return Mirror(settings, selected, versions, state, head.listings(), check, refuse)
        # With no state rows, the input's only check is its device (no
        # recorded source can be missing).
        check_input(settings, state, 0, 0)
        return Folders(settings, selected, versions, head, refuse)
    if tree is None:
        tree = discover_input(settings, selected, dry=state.readonly, head=head)
    records = state.load()
    check_input(settings, state, *guards.found_in(tree, records))
    return Whole(plan.build(tree, selected, settings, records, versions, refuse=refuse, layout_known=known), tree)


def planned_first(flow: Flow) -> FolderPlan:
    """The flow's first folder plan, and what a run would refuse of it (a
    dry run's plan says so rather than refusing)."""
    first = flow.first()
    for warning in flow.warnings:
        log.warning("%s", warning)
    return first


def write_plan_json(path: Path, the_plan: planned.Plan, outdir: Path) -> None:
    """The plan as JSON, written whole or not at all (a temp file renamed
    into place: a full disk leaves no empty or cut file under ``path``).
    What the user named outside OUTDIR that is a link, a FIFO or a device
    (``/dev/stdout``) is written through as a shell's '>' would; in OUTDIR,
    which others may write, a link is replaced, never followed."""
    text = json.dumps(the_plan.as_json(), indent=1, ensure_ascii=False) + "\n"
    if path == STDOUT:  # descriptor 1 itself: the face sends its own printing to stderr
        try:
            with open(1, "w", errors="surrogateescape", closefd=False) as out:
                out.write(text)
        except OSError as exc:
            raise UsageError(f"cannot write the plan to standard output: {describe_oserror(exc)}") from None
        return
    planted = path.is_symlink() and path.absolute().is_relative_to(outdir)
    try:
        if not planted and (path.is_symlink() or (path.exists() and not path.is_file())):
            write_into(path, text)
            return
        with (
            dirs.written(path, path.parent, f".{path.name}.tmp", create=False) as fd,
            open(fd, "w", errors="surrogateescape", closefd=False) as f,
        ):
            f.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write the plan to {path}: {describe_oserror(exc)}") from None
    except TaskError as exc:
        raise UsageError(f"cannot write the plan to {path}: {exc}") from None


def write_into(path: Path, text: str) -> None:
    """``text`` written into what ``path`` names, as a shell's '>' would: a
    device, a FIFO, a link (/dev/stdout) stays what it is. A FIFO no
    process reads is an error (ENXIO), not a wait for ever."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise TaskError("a FIFO no process reads") from None
        raise
    os.set_blocking(fd, True)
    with open(fd, "w", errors="surrogateescape") as f:
        f.write(text)


def run(
    settings: Settings,
    display: Display | None = None,
    stop: threading.Event | None = None,
    plan_json: Path | None = None,
    executor: Executor | None = None,
    batch: bool = False,
) -> Report:
    """Convert ``settings.input_dir`` as configured; return the Report (with
    its CSV log written). Set ``stop`` to end the run early. ``executor``
    runs the jobs (default: this machine's cores, ``LocalPool``).
    ``batch``: a watch batch, the same run whose rows are appended to the
    log (``csvlog.append``) rather than written as the whole log."""
    display = Guarded(display or Silent())
    stop = stop or threading.Event()
    executor = executor or LocalPool()
    started = time.monotonic()
    selected = tuple(codecs.resolve(m) for m in settings.modes)
    if executor.needs_local_encoders:
        check_programs(selected)
        if settings.lossy is Lossy.CONVERT or settings.max_bitrate is not None:
            tools.require({"ffmpeg": "--lossy convert (it decodes the lossy files)"})
    selected_codecs(settings)
    head = look_ahead(settings, selected, plan_json)
    # An input without FLAC is refused before OUTDIR is touched.
    tree = discover_input(settings, selected, head=head) if whole(head) else None
    guards.prepare_outdir(settings.outdir)
    report = Report(modes=tuple(c.name for c in selected))
    with outdir_lock(settings.outdir), open_state(settings) as state:
        flow = plan_flow(settings, selected, state, head, tree)
        first = planned_first(flow)
        # The plan's objects stay to the end: collections during the run need not walk them.
        gc.freeze()
        if executor.needs_local_encoders:
            # Before any output is written, and only for modes with encodes:
            # a no-op re-run starts no process.
            preflight.check_options(tuple(c for c in selected if c.name in first.encoding), settings)
        if plan_json is not None:
            write_plan_json(plan_json, flow.plan, settings.outdir)
        with outputs.reusing():  # the temp folders of this process's encodes, kept between them
            Run(settings, state, report, display, stop).execute(flow, first, executor)
        layouts.layout_done(state, settings, clean=report.exit_status is ExitStatus.OK)
        finish(settings, state, report, started, batch)
        gc.unfreeze()
    return report


def finish(settings: Settings, state: State, report: Report, started: float, batch: bool = False) -> None:
    report.wall_time = time.monotonic() - started
    try:
        state.close()  # its last rows committed before the log is written
    except sqlite3.Error as exc:
        report.state_error = report.state_error or state_lost(settings, exc)
    write_log(report, settings.outdir, batch)


def check_input(settings: Settings, state: State, found: int, known: int) -> None:
    """Refuse an input that looks unmounted or emptied: ``found`` of the
    ``known`` sources the state records are in it (a dry run's state,
    ``state.readonly``, warns instead); record the input's device once it
    looks complete."""
    dry = state.readonly
    device_before = state.meta(guards.DEVICE_KEY)
    check = guards.check_counts(settings, found, known, device_before)
    if check.problem and not settings.allow_missing_sources:
        if not dry:
            raise UsageError(check.problem)
        log.warning("a run would refuse: %s", check.problem)
    device = guards.input_device(settings.input_dir)
    if check.complete and not dry and device and device != device_before:
        # Only an input that looks complete is the library's file system.
        state.set_meta(guards.DEVICE_KEY, device)


def write_log(report: Report, outdir: Path, batch: bool = False) -> None:
    """The CSV log, then the summary beside the state, for every run. When
    the log cannot be written, the previous run's is moved aside
    (``.previous``); when the summary cannot be, the previous one is
    removed: no stale file stands as this run's. ``batch``: the run's rows
    appended to the log (``csvlog.append``)."""
    path = outdir / LOG_NAME
    try:
        if batch:
            csvlog.append(path, report)
        else:
            report.write_csv(path)
    except (OSError, TaskError) as exc:
        report.log_error = f"cannot write the log {path}: {getattr(exc, 'strerror', None) or exc}"
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(LOG_NAME + ".previous"))
            report.log_error += f" (the previous run's log is now {LOG_NAME}.previous)"
    summary = outdir / STATE_DIR / SUMMARY_NAME
    try:
        with (
            dirs.written(summary, outdir, f".{SUMMARY_NAME}.tmp") as fd,
            open(fd, "w", errors="backslashreplace", closefd=False) as f,
        ):
            f.write(report.summary().lstrip("\n") + "\n")
    except (OSError, TaskError) as exc:
        log.warning("cannot write the summary %s: %s", summary, getattr(exc, "strerror", None) or exc)
        with contextlib.suppress(OSError):
            summary.unlink(missing_ok=True)  # no stale summary stands as this run's


SUMMARY_NAME = "last-summary.txt"


@contextmanager
def open_state(settings: Settings) -> Iterator[State]:
    """The run's state. One that cannot be read is moved aside and rebuilt:
    it is a cache, and the planner adopts outputs by their provenance tags."""
    try:
        try:
            state = State(settings.outdir, settings.input_dir)
        except UnreadableStateError as exc:
            aside = move_aside(settings.outdir, exc.kind)
            log.warning(
                "the state %s cannot be read (%s): moved it to %s. It is only a cache: "
                "this run rebuilds it from the outputs' provenance tags",
                state_path(settings.outdir),
                exc.reason,
                aside.name,
            )
            state = State(settings.outdir, settings.input_dir)
    except (StateError, sqlite3.Error, OSError) as exc:
        raise UsageError(f"cannot open the state in {settings.outdir}: {describe(exc)}") from None
    with state:
        yield state


@contextmanager
def read_state(settings: Settings, warn: bool = True) -> Iterator[State]:
    """A dry run's state, read-only; one that cannot be read is left as it
    is and the plan made without it (as the run would, after moving it),
    and said once (``warn``: False for a look that may be taken again)."""
    try:
        try:
            state = State(settings.outdir, settings.input_dir, readonly=True)
        except UnreadableStateError as exc:
            if warn:
                log.warning(
                    "the state %s cannot be read (%s): a run would move it aside and rebuild it from the "
                    "outputs' provenance tags (it is only a cache); this plan is made without it",
                    state_path(settings.outdir),
                    exc.reason,
                )
            state = State(settings.outdir, settings.input_dir, empty=True)
    except (StateError, sqlite3.Error, OSError) as exc:
        raise UsageError(f"cannot read the state in {settings.outdir}: {describe(exc)}") from None
    with state:
        yield state


def describe(exc: BaseException) -> str:
    return describe_oserror(exc) if isinstance(exc, OSError) else str(exc)


def convert(
    input_dir: Path | str,
    outdir: Path | str,
    modes: str,
    **options,
) -> Report:
    """Library entry point: ``convert("music", "out", "mp3,opus", threads=2)``.

    ``options`` are Settings fields (force, threads, layout, copy, options,
    timeout). Raises Flac2allError for a configuration error; failed files
    are in the returned Report.
    """
    selected, _ = codecs.parse_modes(modes)
    for name, kind in (("layout", Layout), ("names", Names), ("lossy", Lossy)):
        if isinstance(options.get(name), str):
            options[name] = kind(options[name])
    settings = Settings(
        input_dir=Path(input_dir).absolute(),
        outdir=Path(outdir).absolute(),
        modes=tuple(c.name for c in selected),
        **options,
    )
    return run(settings)
