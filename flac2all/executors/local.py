"""Local parallel execution: at most ``threads`` jobs at once, each through
``runner.execute_batch``. A job is one task, or the encodes of one source
sharing its decoder: then its encoders run side by side (the kernel shares
the cores among them; the pipes pace them to the slowest one).

Threads suffice: the work happens in encoder processes, and a thread per slot
keeps cancellation simple (one ProcessGroup to kill, one queue to drain).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from flac2all.executors import Posted
from flac2all.model import HostRow, Job, Settings, Task, TaskResult
from flac2all.running import runner
from flac2all.running.procs import Interrupted, ProcessGroup


class LocalPool(Posted):
    """The executor of a local run: this machine's cores. What is posted
    (``Posted``) is called in its loop, in order with the slots' events."""

    needs_local_encoders = True

    def __init__(self) -> None:
        self.running: dict[int, Task] = {}  # touched by the calling thread only
        self.done = 0
        self.started = time.monotonic()
        self.processes = ProcessGroup()
        super().__init__()

    def run(
        self,
        jobs: Iterable[Job],
        settings: Settings,
        on_start: Callable[[Task], None],
        on_result: Callable[[TaskResult], None],
        stop: threading.Event,
    ) -> None:
        """See ``executors.Executor.run``. ``jobs`` may be a generator that
        waits for jobs still being planned: the slots pull from it one at a
        time, under a lock."""
        todo = iter(jobs)
        lock = threading.Lock()
        events = self.posted  # the slots' events and what is posted, in one queue (post may have put some already)
        processes = self.processes = ProcessGroup()
        self.started = time.monotonic()

        def work() -> None:
            while not stop.is_set():
                with lock:
                    job = next(todo, None)
                if job is None:
                    return
                # One event per job, not per task: each wakes this thread.
                events.put((self.tasks_started, job.tasks))
                try:
                    results = runner.execute_batch(job.tasks, settings, processes)
                except Interrupted:
                    return
                events.put((self.tasks_finished, results))

        self.on_start, self.on_result = on_start, on_result
        threads = [
            threading.Thread(target=work, name=f"slot-{i}", daemon=True) for i in range(max(1, settings.threads))
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads) or not events.empty():
            if stop.is_set() and not processes.stopping:
                processes.stop()
            try:
                callback, item = events.get(timeout=0.1)
            except queue.Empty:
                continue
            callback(item)
        for t in threads:
            t.join()

    def tasks_started(self, tasks: Sequence[Task]) -> None:
        for task in tasks:
            self.running[id(task)] = task
            self.on_start(task)

    def tasks_finished(self, results: Sequence[TaskResult]) -> None:
        for result in results:
            self.running.pop(id(result.task), None)
            self.done += 1
            self.on_result(result)

    def hosts(self) -> list[HostRow]:
        """The one host of a local run: this one, with the encoders and
        decoders running now (not the tasks: a job's modes share a decoder)
        and each source in progress once, by its path."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        sources = dict.fromkeys(str(t.source) for t in list(self.running.values()))
        return [HostRow(socket.gethostname(), self.processes.running(), self.done, self.done / elapsed, list(sources))]
