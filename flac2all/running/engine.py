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
import gc
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from flac2all import codecs, tools
from flac2all.codecs import Codec
from flac2all.errors import UsageError, describe_oserror
from flac2all.executors import Executor
from flac2all.executors.local import LocalPool
from flac2all.face.console import Display, Guarded, Silent
from flac2all.model import Action, Layout, Lossy, Names, Settings
from flac2all.planning import discovery, plan, stream
from flac2all.report import LOG_NAME, Report
from flac2all.running import guards, outputs, preflight, runner
from flac2all.running.execution import Run, state_lost
from flac2all.running.guards import outdir_lock
from flac2all.state import (
    STATE_DIR,
    State,
    StateError,
    UnreadableStateError,
    collector_paused,
    move_aside,
    state_path,
)

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
    if out != inp and out.is_relative_to(inp):
        return frozenset({out})
    return frozenset({out / c.folder for c in selected} | {out / STATE_DIR})


def discover_input(settings: Settings, selected: tuple[Codec, ...], dry: bool = False) -> discovery.Tree:
    """The input tree; an input without any FLAC is refused (a warning in a
    dry run) before OUTDIR is touched."""
    with collector_paused():  # every Source made stays (a third of the walk's CPU at 200,000 sources)
        tree = discovery.discover(settings.input_dir, prune_set(settings, selected))
    problem = guards.empty_input(settings, tree)
    if problem and not dry:
        raise UsageError(problem)
    if problem:
        log.warning("a run would refuse: %s", problem)
    return tree


def make_plan(settings: Settings, selected: tuple[Codec, ...], state: State, tree: discovery.Tree) -> plan.Plan:
    """The plan of a run (``state.readonly``: of a dry run, whose guards
    warn rather than refuse). Refuses an input that looks unmounted."""
    dry = state.readonly
    records = state.load()
    check_input(settings, state, tree, records)
    versions = tools.versions({p for c in selected for p in c.programs})
    the_plan = plan.build(tree, selected, settings, records, versions, refuse=not dry)
    for warning in the_plan.warnings:
        log.warning("%s", warning)
    return the_plan


def selected_codecs(settings: Settings) -> tuple[Codec, ...]:
    """The run's codecs, once its input folder is known to exist."""
    selected = tuple(codecs.resolve(m) for m in settings.modes)
    if not settings.input_dir.is_dir():
        raise UsageError(f"input folder {settings.input_dir} does not exist or is not a folder")
    return selected


def dry_run(settings: Settings, plan_json: Path | None = None) -> plan.Plan | stream.DryRun:
    """The plan of a run, changing nothing (no folder, state or lock made,
    nothing written in OUTDIR). What a run would refuse is a warning: the
    plan is what the user needs to decide. A library past
    ``stream.stream_after()`` sources with no state rows is planned (and
    listed: ``describe_chunks``) folder by folder as the walk goes."""
    selected = selected_codecs(settings)
    guards.check_outdir(settings.outdir)
    streamed = stream_dry_run(settings, selected, plan_json)
    if streamed is not None:
        return streamed
    tree = discover_input(settings, selected, dry=True)
    with read_state(settings) as state:
        the_plan = make_plan(settings, selected, state, tree)
    if plan_json is not None:
        write_plan_json(plan_json, the_plan)
    return the_plan


def stream_dry_run(settings: Settings, selected: tuple[Codec, ...], plan_json: Path | None) -> stream.DryRun | None:
    """A dry run's plan to be made as it is listed, where a first run's
    would be (``stream``), else None."""
    if not stream.streamable(settings, plan_json):
        return None
    # Quiet: a state that cannot be read is said so once, by the look
    # that plans (this one's if it streams, else dry_run's).
    with read_state(settings, warn=False) as state:
        if stream.has_rows(state):
            return None  # moves and orphans need the whole tree
        head = stream.Head(settings.input_dir, prune_set(settings, selected), stream.stream_after())
        if head.ended or not head.flacs:
            return None  # small: planned whole, as the run would be
    with read_state(settings) as state:
        return stream.DryRun(start_stream(settings, selected, state, head))


def write_plan_json(path: Path, the_plan: plan.Plan) -> None:
    try:
        path.write_text(json.dumps(the_plan.as_json(), indent=1, ensure_ascii=False) + "\n", errors="surrogateescape")
    except OSError as exc:
        raise UsageError(f"cannot write the plan to {path}: {exc.strerror}") from None


def run(
    settings: Settings,
    display: Display | None = None,
    stop: threading.Event | None = None,
    plan_json: Path | None = None,
    executor: Executor | None = None,
) -> Report:
    """Convert ``settings.input_dir`` as configured; return the Report (with
    its CSV log written). Set ``stop`` to end the run early. ``executor``
    runs the jobs (default: this machine's cores, ``LocalPool``)."""
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
    head = None
    if stream.may_stream(settings, executor, plan_json):
        # A library past stream_after() sources has FLAC in it (the empty
        # input's guard passes) and may be planned as the walk goes.
        head = stream.Head(settings.input_dir, prune_set(settings, selected), stream.stream_after())
        if head.ended or not head.flacs:
            head = None  # small: planned whole, costliest first
    tree = discover_input(settings, selected) if head is None else None
    guards.prepare_outdir(settings.outdir)
    report = Report(modes=tuple(c.name for c in selected), sources=len(tree.flacs) if tree else 0)
    with outdir_lock(settings.outdir), open_state(settings) as state:
        if head is not None and not stream.has_rows(state):
            the_stream = start_stream(settings, selected, state, head)
            Run(settings, state, report, display, stop).execute_stream(the_stream, executor, selected)
            finish(settings, state, report, started)
            return report
        if tree is None:  # a mirror to update: moves and orphans need the whole tree
            tree = discover_input(settings, selected)
            report.sources = len(tree.flacs)
        the_plan = make_plan(settings, selected, state, tree)
        # Its objects stay to the end: collections during the run need not walk them.
        gc.freeze()
        if executor.needs_local_encoders:
            # Before any output is written, and only for modes with encodes:
            # a no-op re-run starts no process.
            encoding = {t.mode for t in the_plan.tasks if t.action is Action.ENCODE}
            preflight.check_options(tuple(c for c in selected if c.name in encoding), settings)
        if plan_json is not None:
            write_plan_json(plan_json, the_plan)
        for record in the_plan.refresh:
            state.put(record)
        for output in the_plan.forget:
            state.forget(output)
        # Only where this run writes: a no-op run lists no folder.
        outputs.remove_stale_temps({t.output.parent for t in the_plan.tasks if t.action not in runner.NOTES})
        Run(settings, state, report, display, stop).execute(tree, the_plan, executor)
        finish(settings, state, report, started)
        gc.unfreeze()
    return report


def finish(settings: Settings, state: State, report: Report, started: float) -> None:
    report.wall_time = time.monotonic() - started
    try:
        state.close()  # its last rows committed before the log is written
    except sqlite3.Error as exc:
        report.state_error = report.state_error or state_lost(settings, exc)
    write_log(report, settings.outdir)


def start_stream(settings: Settings, selected: tuple[Codec, ...], state: State, head: stream.Head) -> stream.Stream:
    """A first run's plan, to be made as the walk goes: ``make_plan``'s
    guards first. With no state rows, the input's only check is its device
    (no recorded source can be missing). ``state.readonly``: a dry run's,
    whose guards warn rather than refuse."""
    check_input(settings, state, discovery.Tree(), {})
    versions = tools.versions({p for c in selected for p in c.programs})
    return stream.Stream(settings, selected, versions, head)


def check_input(settings: Settings, state: State, tree: discovery.Tree, records: Mapping) -> None:
    """Refuse an input that looks unmounted or emptied against the state's
    ``records`` (a dry run's state, ``state.readonly``, warns instead), and
    record the input's device once it looks complete."""
    dry = state.readonly
    device_before = state.meta(guards.DEVICE_KEY)
    check = guards.check_sources(settings, tree, records, device_before)
    if check.problem and not settings.allow_missing_sources:
        if not dry:
            raise UsageError(check.problem)
        log.warning("a run would refuse: %s", check.problem)
    device = guards.input_device(settings.input_dir)
    if check.complete and not dry and device and device != device_before:
        # Only an input that looks complete is the library's file system.
        state.set_meta(guards.DEVICE_KEY, device)


def write_log(report: Report, outdir: Path) -> None:
    """The CSV log, then the summary beside the state. When the log cannot
    be written, the previous run's is moved aside (``.previous``), so that
    no stale log stands as this run's."""
    path = outdir / LOG_NAME
    try:
        report.write_csv(path)
    except OSError as exc:
        report.log_error = f"cannot write the log {path}: {exc.strerror or exc}"
        with contextlib.suppress(OSError):
            os.replace(path, path.with_name(LOG_NAME + ".previous"))
            report.log_error += f" (the previous run's log is now {LOG_NAME}.previous)"
        return
    summary = outdir / STATE_DIR / SUMMARY_NAME
    try:
        tmp = summary.with_name(f".{SUMMARY_NAME}.tmp")
        tmp.write_text(report.summary().lstrip("\n") + "\n", errors="backslashreplace")
        os.replace(tmp, summary)
    except OSError as exc:
        log.warning("cannot write the summary %s: %s", summary, exc.strerror or exc)


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
