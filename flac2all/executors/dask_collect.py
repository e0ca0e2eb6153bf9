"""One Dask run's futures collected in the calling thread (``Collector``):
results as they complete, jobs starting on workers (the display is told),
workers lost (their jobs rerun by the scheduler, their temp files swept),
a stop (the run's jobs ended on every worker), for ``dask.DaskExecutor``."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

from flac2all.executors.dask_worker import stop_run
from flac2all.model import Status, TaskResult

if TYPE_CHECKING:
    from flac2all.executors.dask import DaskExecutor

STOP_GRACE = 5.0  # seconds the workers get to end a stopped run's jobs (temp files removed)


class Collector:
    """One run's futures, collected in the calling thread: results, jobs
    starting on workers, workers lost, and a stop."""

    def __init__(self, executor: DaskExecutor, run: str, jobs, futures, events, on_start, on_result) -> None:
        self.executor, self.run, self.jobs = executor, run, jobs
        self.client = executor.client
        self.keys = [f.key for f in futures]
        self.index = {key: i for i, key in enumerate(self.keys)}
        self.pending = {f.key: f for f in futures}
        import distributed  # loaded by then: the executor exists

        self.distributed = distributed
        self.finished = distributed.as_completed(futures)
        self.events: queue.SimpleQueue = events
        self.on_start, self.on_result = on_start, on_result
        self.next_look = time.monotonic() + 0.5
        self.announced: set[int] = set()  # the jobs whose start the display was told of
        self.given: dict[int, str] = {}  # job index -> worker address, as the last look saw

    def collect(self, stop: threading.Event) -> bool:
        """Until every job has its results or the run is stopped; whether
        nothing of this run may still run anywhere."""
        while self.pending:
            if stop.is_set():
                return self.halt()
            if self.client.status in ("closing", "closed", "failed"):
                for key in list(self.pending):
                    self.fail(self.index[key], "the connection to the Dask scheduler was lost")
                return False
            self.drain()
            self.executor.drain()  # a planning thread's folders
            if time.monotonic() >= self.next_look:
                self.look()
            self.settle(self.finished.next_batch(block=False))
        return True

    def settle(self, batch: list) -> None:
        """The jobs whose futures ended: their results, or a failure each."""
        ok, bad = [], []
        for future in batch:
            status = future.status
            if future.key not in self.pending:
                continue
            if status == "finished":
                ok.append(future)
            elif status in ("error", "cancelled"):
                bad.append((future, status))
            else:  # its result was lost with its worker before we fetched it: Dask computes it again
                self.finished.add(future)
        ended = ok + [future for future, _ in bad]
        for future in ended:
            del self.pending[future.key]
        for future, (worker, name, results) in self.gather(ok):
            self.executor.running.pop(self.index[future.key], None)
            self.executor.names[host_of(worker)] = name
            self.executor.done[host_of(worker)] = self.executor.done.get(host_of(worker), 0) + len(results)
            for result in results:
                self.on_result(result)
        for future, status in bad:
            self.erred(future, status)
        for future in ended:
            future.release()
        if ended:  # their threads took the next jobs waiting there
            self.fill()

    def drain(self) -> None:
        """The events that came (waiting for one a little: the loop's pace)."""
        try:
            self.event(self.events.get(timeout=0.02))
            while True:
                self.event(self.events.get_nowait())
        except queue.Empty:
            pass

    def look(self) -> None:
        """Which of the run's jobs the scheduler has given to which worker
        (once a second: a message per job start would cost more than the
        display is worth on short files), then ``fill``."""
        self.next_look = time.monotonic() + 1.0
        try:
            processing = self.client.processing()
        except Exception:  # the scheduler is busy or gone: the next look, or the status check, tells
            return
        self.given = {
            self.index[key]: worker
            for worker, keys in processing.items()
            for key in keys
            if key in self.pending and key in self.index
        }
        running = self.executor.running
        for i, (worker, _) in list(running.items()):
            if self.given.get(i, worker) != worker:  # given to another worker (its own left): it starts again
                del running[i]
        self.fill()

    def fill(self) -> None:
        """Take jobs given to a worker to be running there, as many as it
        has threads: the scheduler gives a worker a few more than that
        (``distributed.scheduler.worker-saturation``), the rest wait there,
        the first submitted first (the order Dask runs them in), and start
        as a thread frees."""
        running = self.executor.running
        busy = Counter(worker for worker, _ in running.values())
        threads = {worker: facts.get("nthreads", 0) for worker, facts in self.executor.workers().items()}
        for i, worker in sorted(self.given.items()):
            if i in running or busy[worker] >= threads.get(worker, 0) or self.keys[i] not in self.pending:
                continue
            busy[worker] += 1
            if i not in self.announced:  # the display counts a file's tasks once, rerun or not
                self.announced.add(i)
                for task in self.jobs[i].tasks:
                    self.on_start(task)
            running[i] = (worker, self.jobs[i])  # after: a display never sees more busy than started

    def event(self, event: tuple[float, dict]) -> None:
        """The scheduler's events: a worker that left the cluster says which
        tasks it held; those jobs may have left temp files."""
        msg = event[1]
        if not isinstance(msg, dict):
            return
        if msg.get("action") == "remove-worker":
            ours = [self.index[k] for k in msg.get("processing-tasks", ()) if k in self.index]
            for i in ours:
                self.executor.running.pop(i, None)
                self.executor.littered.update(t.output.parent for t in self.jobs[i].tasks)
            if ours:
                self.executor.say(f"Dask worker {msg.get('worker')} left; the scheduler reruns its {len(ours)} job(s)")

    def gather(self, finished: list) -> list[tuple]:
        """(future, results) of finished futures: in one call, or, if that
        fails (a result lost with its worker, whose rerun failed), one by one."""
        if not finished:
            return []
        try:
            return list(zip(finished, self.client.gather(finished), strict=True))
        except (Exception, asyncio.CancelledError):
            pass
        got = []
        for future in finished:
            try:
                got.append((future, future.result()))
            except (Exception, asyncio.CancelledError) as exc:
                self.failed(self.index[future.key], exc)
        return got

    def erred(self, future, status: str) -> None:
        """A job that ended without results."""
        if status == "cancelled":
            self.failed(self.index[future.key], asyncio.CancelledError())
        else:
            self.failed(self.index[future.key], future.exception())

    def failed(self, i: int, exc: BaseException) -> None:
        """Job ``i`` ended with ``exc``: a failed result per task, saying why."""
        if isinstance(exc, asyncio.CancelledError):
            lost = self.client.status != "running"
            message = "the connection to the Dask scheduler was lost" if lost else "cancelled on the Dask cluster"
        elif isinstance(exc, self.distributed.KilledWorker):
            self.executor.littered.update(t.output.parent for t in self.jobs[i].tasks)
            message = (
                f"Dask workers died under this job {exc.allowed_failures + 1} times"
                f" (distributed.scheduler.allowed-failures = {exc.allowed_failures})"
            )
        else:
            message = f"the Dask worker could not run it: {type(exc).__name__}: {exc}"
        self.fail(i, message)

    def fail(self, i: int, message: str) -> None:
        """A failed result for each task of job ``i``."""
        self.pending.pop(self.keys[i], None)
        self.executor.running.pop(i, None)
        for task in self.jobs[i].tasks:
            self.on_result(TaskResult(task, Status.FAILED, message, 1))

    def halt(self) -> bool:
        """Stop: end the run's jobs on every worker (encoders killed, temp
        files removed) and drop the queued ones; whether all have ended."""
        ended: list[dict] = []

        def stop_everywhere() -> None:
            ended.append(self.client.run(stop_run, self.run, STOP_GRACE, on_error="return"))

        thread = threading.Thread(target=stop_everywhere, name="dask-stop", daemon=True)
        thread.start()
        thread.join(STOP_GRACE + 5)
        self.client.cancel(list(self.pending.values()))
        still = sum(n for n in ended[0].values() if isinstance(n, int)) if ended else -1
        if still:
            self.executor.say("Dask workers did not end this run's jobs in time; the next run removes their temp files")
        return still == 0


def host_of(address: str) -> str:
    """'tcp://10.0.0.5:40331' -> '10.0.0.5'."""
    return address.split("://", 1)[-1].rsplit(":", 1)[0]
