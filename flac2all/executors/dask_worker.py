"""What a Dask worker process runs for flac2all's Dask executor
(``executors.dask``): the job task, the check before a run, the stop.

Dask pickles these functions by name, so a worker imports this module (and
through the runner, the rest of flac2all) the first time it runs one.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Sequence

from flac2all.errors import Flac2allError, UsageError
from flac2all.lines import printable
from flac2all.model import Settings, Task, TaskResult
from flac2all.running.procs import Interrupted, ProcessGroup

_lock = threading.Lock()
_running: dict[str, set[ProcessGroup]] = {}  # run -> the process groups of its jobs running here
_stopped: set[str] = set()  # runs stopped by their client: their jobs start no encoder here


def run_job(run: str, tasks: Sequence[Task], settings: Settings) -> tuple[str, str, list[TaskResult]]:
    """The Dask task of one job: ``runner.execute_batch`` in this worker
    process, with a ProcessGroup of its own that ``stop_run`` can end.
    Returns the worker's address and host name (for the display) and the
    results."""
    import distributed

    from flac2all.running import runner

    processes = ProcessGroup()
    with _lock:
        if run in _stopped:
            raise Interrupted()
        _running.setdefault(run, set()).add(processes)
    try:
        results = runner.execute_batch(tasks, settings, processes)
        return distributed.get_worker().address, socket.gethostname(), results
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
    if not settings.input_dir.is_dir():
        raise UsageError(
            f"the Dask worker on {host} does not see the input folder {printable(settings.input_dir)} "
            "(workers must see the same paths)"
        )
    selected = tuple(codecs.resolve(m) for m in modes)
    try:
        engine.check_programs(selected)
        preflight.check_options(selected, settings)
    except Flac2allError as exc:  # a missing program, a refused option: the same error, placed
        raise type(exc)(f"on the Dask worker on {host}: {exc}") from None
    return host
