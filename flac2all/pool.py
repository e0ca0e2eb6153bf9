"""Local parallel execution: at most ``threads`` batches at once, each
through ``runner.execute_batch``. A batch is one task, or the encodes of one
source sharing its decoder: then its encoders run side by side (the kernel
shares the cores among them; the pipes pace them to the slowest one).

Threads suffice: the work happens in encoder processes, and a thread per slot
keeps cancellation simple (one ProcessGroup to kill, one queue to drain).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable

from flac2all import plan, runner
from flac2all.model import Settings, Task, TaskResult

# What runs a run's tasks: run_local below, or cluster.master.Master.
Executor = Callable[
    [list[Task], Settings, runner.ProcessGroup, threading.Event, Callable[[Task], None], Callable[[TaskResult], None]],
    None,
]


def run_local(
    tasks: Iterable[Task],
    settings: Settings,
    processes: runner.ProcessGroup,
    stop: threading.Event,
    on_start: Callable[[Task], None],
    on_result: Callable[[TaskResult], None],
) -> None:
    """Run ``tasks`` in batches (``plan.batches``: the encodes of one source
    share its decoder), reporting in the calling thread.

    When ``stop`` is set, running encoders are killed, no new task starts, and
    this returns once every thread has cleaned up its temp files.
    """
    todo = iter(plan.batches(tasks, settings.shared_decode))
    lock = threading.Lock()
    events: queue.Queue = queue.Queue()

    def work() -> None:
        while not stop.is_set():
            with lock:
                batch = next(todo, None)
            if batch is None:
                return
            for task in batch:
                events.put((on_start, task))
            try:
                results = runner.execute_batch(batch, settings, processes)
            except runner.Interrupted:
                return
            for result in results:
                events.put((on_result, result))

    threads = [threading.Thread(target=work, name=f"slot-{i}", daemon=True) for i in range(max(1, settings.threads))]
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
