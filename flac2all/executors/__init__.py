"""Executors: what runs a run's jobs.

Every executor implements one small interface, so the engine and the CLI
talk to none of them in particular: local threads (``local.LocalPool``),
the ZeroMQ cluster master (``flac2all.cluster.master.Master``), and any
other engine that can run ``runner.execute_batch`` somewhere.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from flac2all.model import HostRow, Job, Settings, Task, TaskResult


class Executor(Protocol):
    """Runs jobs to their results."""

    # Whether this machine must have the encoders (a cluster master only
    # hands out work: its workers need them).
    needs_local_encoders: bool

    def run(
        self,
        jobs: Iterable[Job],
        settings: Settings,
        on_start: Callable[[Task], None],
        on_result: Callable[[TaskResult], None],
        stop: threading.Event,
    ) -> None:
        """Run every job (only actions with ``Action.on_executor``), calling
        ``on_start`` as a task starts and ``on_result`` with each result, both
        in the calling thread. When ``stop`` is set: no new job starts, the
        running ones are ended (their temp files removed), and it returns;
        the tasks that did not finish have no result. ``jobs`` may be a
        generator that waits for jobs still being planned."""
        ...

    def post(self, callback: Callable[[Any], None], item: Any) -> None:
        """Have ``callback(item)`` called in the thread that runs ``run``, in
        order with the results (what a planning thread knows without any
        job: a folder's counts, notes and state rows); what is posted after
        ``run`` returned is called by ``drain``."""
        ...

    def drain(self) -> None:
        """Call what was posted and not called yet."""
        ...

    def hosts(self) -> list[HostRow]:
        """Per host: processes, tasks done, rate, current files (for a
        display; may be called from another thread)."""
        ...


class Posted:
    """``post`` and ``drain`` for an executor whose loop calls ``drain``
    each turn (the cluster master, Dask)."""

    def __init__(self) -> None:
        self.posted: queue.SimpleQueue = queue.SimpleQueue()

    def post(self, callback: Callable[[Any], None], item: Any) -> None:
        self.posted.put((callback, item))

    def drain(self) -> None:
        while True:
            try:
                callback, item = self.posted.get_nowait()
            except queue.Empty:
                return
            callback(item)
