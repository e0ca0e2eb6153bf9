"""What a Dask worker process runs for flac2all's Dask executor
(``executors.dask``): the job task, the check before a run, the stop.

Dask pickles these functions by name, so a worker imports this module (and
through the runner, the rest of flac2all) the first time it runs one.

Jobs name the client's paths. A worker that sees the client's folders
elsewhere says where in its own environment, as a cluster worker's
``--map`` does: ``FLAC2ALL_MAP=/storage/music=/mnt/storage/music`` (several
maps separated by ``:``), set where the ``dask worker`` starts; the job's
paths are translated there and its results' messages back
(``cluster.paths``). It is the worker's own fact, so it is not an option
of the client: workers with different mounts serve one client.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import threading
import time
from collections.abc import Sequence

from flac2all.cluster.paths import PathMaps
from flac2all.errors import Flac2allError, UsageError
from flac2all.lines import printable
from flac2all.model import Settings, Task, TaskResult
from flac2all.running.procs import Interrupted, ProcessGroup

_lock = threading.Lock()
_running: dict[str, set[ProcessGroup]] = {}  # run -> the process groups of its jobs running here
_stopped: set[str] = set()  # runs stopped by their client: their jobs start no encoder here
MAP_VARIABLE = "FLAC2ALL_MAP"


@functools.cache
def path_maps() -> PathMaps:
    """Where this worker sees the client's folders: ``FLAC2ALL_MAP`` in its
    environment, ``MASTER_PATH=WORKER_PATH`` pairs separated by ``:``."""
    return PathMaps.parse(part for part in os.environ.get(MAP_VARIABLE, "").split(os.pathsep) if part)


def run_job(run: str, tasks: Sequence[Task], settings: Settings) -> tuple[str, str, list[TaskResult]]:
    """The Dask task of one job: ``runner.execute_batch`` in this worker
    process, with a ProcessGroup of its own that ``stop_run`` can end.
    Returns the worker's address and host name (for the display) and the
    results."""
    import distributed

    from flac2all.running import runner

    processes = ProcessGroup()
    maps = path_maps()
    here = [maps.task(task) for task in tasks]
    with _lock:
        if run in _stopped:
            raise Interrupted()
        _running.setdefault(run, set()).add(processes)
    try:
        results = runner.execute_batch(here, maps.settings(settings), processes)
        # (In the order of the tasks: all of them, or the first ones done.)
        back = [maps.result(result, task) for result, task in zip(results, tasks, strict=False)]
        return distributed.get_worker().address, socket.gethostname(), back
    finally:
        with _lock:
            groups = _running.get(run, set())
            groups.discard(processes)
            if not groups:
                _running.pop(run, None)


async def stop_run(run: str, grace: float) -> int:
    """Run by ``Client.run`` on every worker when a run is stopped: kill its
    encoders here, refuse its later jobs, and wait (at most ``grace``
    seconds) until its jobs have unwound and removed their temp files.
    Returns how many of its jobs still run here."""
    with _lock:
        _stopped.add(run)
        groups = list(_running.get(run, ()))
    for group in groups:
        group.stop()
    deadline = time.monotonic() + grace
    while run in _running and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return len(_running.get(run, ()))


def check_worker(version: str, modes: tuple[str, ...], settings: Settings) -> str:
    """On one worker, before any job: what a local run checks before it
    touches a file (same flac2all, the encoders, their options, the paths).
    Returns the worker's host name; raises UsageError."""
    from flac2all import __version__, codecs
    from flac2all.running import engine, preflight

    host = socket.gethostname()
    if __version__ != version:
        raise UsageError(f"the Dask worker on {host} has flac2all {__version__}, this is {version}")
    maps = path_maps()
    mapped = maps.settings(settings)
    if not mapped.input_dir.is_dir():
        if m := maps.covering(settings.input_dir):
            why = f"{MAP_VARIABLE} {m.master}={m.worker}: {printable(mapped.input_dir)} is not a folder there"
        else:
            why = f"workers must see the same paths, or say where in {MAP_VARIABLE}"
        raise UsageError(
            f"the Dask worker on {host} does not see the input folder {printable(settings.input_dir)} ({why})"
        )
    settings = mapped
    selected = tuple(codecs.resolve(m) for m in modes)
    try:
        engine.check_programs(selected)
        preflight.check_options(selected, settings)
    except Flac2allError as exc:  # a missing program, a refused option: the same error, placed
        raise type(exc)(f"on the Dask worker on {host}: {exc}") from None
    return host
