"""The Dask executor: a run's jobs as tasks of a Dask distributed cluster
(``--dask ADDRESS``, ``--dask-scheduler-file FILE``, or a batch system's
nodes through dask-jobqueue: ``--dask-jobqueue slurm``).

One Dask task per job (the encodes of one source, decoded once), submitted
with ``pure=False`` and a key that names the source and is unique per run.
The task runs ``runner.execute_batch`` in a worker process with a
ProcessGroup of its own; its TaskResults come back to the calling thread
through ``as_completed``. Dask's guarantees are used, not rebuilt: the
scheduler reruns elsewhere the jobs of a worker lost mid-job, and a job under
which workers died more than ``distributed.scheduler.allowed-failures`` times
ends as KilledWorker, which becomes a failed result for each of its tasks.

What runs in the workers is in ``dask_worker``; a run's futures are
collected by ``dask_collect``. Dask is imported only when
used (``load``): a missing extra is a usage error, not an ImportError.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import site
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from flac2all.errors import Flac2allError, UsageError
from flac2all.executors import Posted
from flac2all.executors.dask_collect import Collector, host_of
from flac2all.executors.dask_worker import check_worker, run_job
from flac2all.lines import printable
from flac2all.model import HostRow, Job, Settings, Task, TaskResult
from flac2all.running import outputs

CONNECT_TIMEOUT = "20s"


def load():
    """The ``distributed`` module; UsageError (exit 2) without the extra."""
    try:
        import distributed
    except ImportError:
        raise UsageError(f"--dask needs Dask, which is not installed: {install_hint()}") from None
    return distributed


def install_hint() -> str:
    """How to add Dask to this flac2all, as it was installed: pipx (whose
    venv pip is not on PATH, and which Debian's pip refuses to install into),
    a venv of its own (that venv's pip), else pip --user; and where the
    ``dask`` program (dask scheduler, dask worker) is then."""
    prefix = Path(sys.prefix)
    venvs = prefix.parent
    pipx_home = os.environ.get("PIPX_HOME")
    if venvs.name == "venvs" and ("pipx" in venvs.parent.name or (pipx_home and venvs.parent == Path(pipx_home))):
        command, program = f"pipx inject {prefix.name} 'dask[distributed]' dask-jobqueue", prefix / "bin" / "dask"
    elif sys.prefix != sys.base_prefix:
        command, program = f"{prefix / 'bin' / 'pip'} install 'flac2all[dask]'", prefix / "bin" / "dask"
    else:
        command = "pip install --user 'flac2all[dask]'"
        program = Path(site.getuserbase()) / "bin" / "dask"
    return f"{command} (the dask program is then {program})"


def job_key(run: str, index: int, job: Job) -> str:
    """The job's Dask key: its action and source, unique per run (the
    dashboard groups tasks by the part before the run's id)."""
    name = printable(job.source.name)[:100]
    return f"flac2all_{job.action.value}-{run}-{index:06d}-{name}"


class DaskExecutor(Posted):
    """The executor of a run on a Dask cluster (``flac2all.executors.Executor``)."""

    needs_local_encoders = False  # its workers need them

    def __init__(self, client, say: Callable[[str], None] = print, owned: Sequence = ()) -> None:
        """``client``: a ``distributed.Client``; ``owned``: what to close
        after the run (the client, and the cluster ``connect`` made)."""
        super().__init__()
        self.client = client
        self.say = say
        self.owned = list(owned)
        self.started = time.monotonic()
        # Job index -> (worker address, job): the jobs taken to be running,
        # never more on a worker than its threads.
        self.running: dict[int, tuple[str, Job]] = {}
        self.done: dict[str, int] = {}  # worker host -> tasks done
        self.names: dict[str, str] = {}  # worker host (address) -> its host name, from its results
        self.littered: set[Path] = set()  # output folders of jobs whose worker was lost
        self.info: dict = {}
        self.info_at = 0.0

    @classmethod
    def connect(
        cls,
        address: str | None = None,
        scheduler_file: str | None = None,
        jobqueue: str | None = None,
        jobs: int = 1,
        cores: int | None = None,
        memory: str | None = None,
        say: Callable[[str], None] = print,
    ) -> DaskExecutor:
        """A client of the scheduler at ``address``, or named by
        ``scheduler_file``, or of a batch system's cluster (dask-jobqueue:
        up to ``jobs`` worker jobs of ``cores`` cores each, the rest from
        Dask's jobqueue config), scaled to zero when there is nothing to do."""
        distributed = load()
        if not logging.getLogger("flac2all").isEnabledFor(logging.DEBUG):
            # Dask logs at INFO (the scheduler that --dask-jobqueue runs here,
            # a lot): a run's output keeps its own lines and Dask's warnings.
            logging.getLogger("distributed").setLevel(logging.WARNING)
        if jobqueue is not None:
            from flac2all.executors.jobqueue import batch_cluster

            cluster = batch_cluster(jobqueue, jobs, cores, memory)
            client = distributed.Client(cluster)
            return cls(client, say, [cluster, client])  # closed in reverse: the client first
        try:
            if scheduler_file is not None:
                client = distributed.Client(scheduler_file=scheduler_file, timeout=CONNECT_TIMEOUT)
            else:
                client = distributed.Client(address, timeout=CONNECT_TIMEOUT)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot reach the Dask scheduler {address or scheduler_file}: {exc}") from None
        return cls(client, say, [client])

    def prepare(self, settings: Settings, stop: threading.Event) -> None:
        """Before the run: say where the dashboard is, wait for a worker, and
        check on it what a local run checks before it touches a file (raises
        UsageError); returns at once when ``stop`` is set."""
        try:
            link = self.client.dashboard_link
        except (KeyError, AttributeError):
            link = None
        self.say(f"Dask scheduler {self.client.scheduler.address}, dashboard: {link or 'none'}")
        if not settings.input_dir.is_dir():
            return  # the engine says so
        if not self.client.scheduler_info()["workers"]:
            self.say("Waiting for Dask worker(s) to connect...")
        from flac2all import __version__

        key = f"flac2all_check-{uuid.uuid4().hex[:12]}"
        check = self.client.submit(check_worker, __version__, settings.modes, settings, key=key, pure=False)
        try:
            while not stop.is_set():
                try:
                    host = check.result(timeout=0.2)
                except TimeoutError:
                    continue
                self.say(f"Checked the encoders on the Dask worker on {host}; {self.threads()} worker thread(s)")
                return
        except Flac2allError:
            self.close()
            raise
        except Exception as exc:  # it could not even run there (flac2all missing, a worker dying)
            self.close()
            raise UsageError(f"the Dask workers cannot run flac2all: {type(exc).__name__}: {exc}") from None
        finally:
            check.release()

    def workers(self) -> dict:
        """The scheduler's workers (address -> facts, ``nthreads`` among
        them), asked at most once a second: the display and the run's looks
        at the workers share it. A new host is asked its name at once."""
        now = time.monotonic()
        if now - self.info_at > 1.0:
            self.info_at = now
            try:
                self.info = self.client.scheduler_info()["workers"]
            except Exception:  # the scheduler is gone or busy: the last figures
                pass
            self.name_hosts(self.info)
        return self.info

    def name_hosts(self, workers: dict) -> None:
        """The host names of workers on hosts not named yet: a host shown
        by its address until its first result came would stay a row of its
        own in the dashboard's table."""
        unnamed = {host_of(address): address for address in workers if host_of(address) not in self.names}
        if not unnamed:
            return
        try:
            names = self.client.run(socket.gethostname, workers=list(unnamed.values()), on_error="return")
        except Exception:  # named by their results, then
            return
        for address, name in names.items():
            if isinstance(name, str):
                self.names[host_of(address)] = name

    def threads(self) -> int:
        return sum(w.get("nthreads", 0) for w in self.workers().values())

    def run(
        self,
        jobs: Iterable[Job],
        settings: Settings,
        on_start: Callable[[Task], None],
        on_result: Callable[[TaskResult], None],
        stop: threading.Event,
    ) -> None:
        """See ``executors.Executor.run``."""
        jobs = list(jobs)  # submitted at once: a plan made as the walk goes is waited for
        run = uuid.uuid4().hex[:12]
        self.started = time.monotonic()
        events: queue.SimpleQueue = queue.SimpleQueue()
        subscribed: list[str] = []
        try:
            if not jobs or stop.is_set():
                return
            # The scheduler's events: a worker that leaves says which tasks it held.
            self.client.subscribe_topic("all", events.put)
            subscribed.append("all")
            futures = self.client.map(
                run_job,
                [run] * len(jobs),
                [job.tasks for job in jobs],
                [settings] * len(jobs),
                key=[job_key(run, i, job) for i, job in enumerate(jobs)],
                pure=False,
            )
            if Collector(self, run, jobs, futures, events, on_start, on_result).collect(stop):
                # Every job is settled and none still runs anywhere: what a
                # lost worker was writing can go.
                outputs.remove_stale_temps(self.littered, settings.outdir)
        finally:
            for name in subscribed:  # else the scheduler may write to a closed client
                with contextlib.suppress(Exception):
                    self.client.unsubscribe_topic(name)
            self.close()

    def close(self) -> None:
        for thing in reversed(self.owned):
            try:
                thing.close()
            except Exception:  # closing must not hide the run's outcome
                pass
        self.owned.clear()

    def hosts(self) -> list[HostRow]:
        """Per worker host: what this run saw of it (jobs running, at most
        the host's threads; tasks done, rate, current files)."""
        now = time.monotonic()
        threads: dict[str, int] = {}
        for address, worker in list(self.workers().items()):
            threads[host_of(address)] = threads.get(host_of(address), 0) + worker.get("nthreads", 0)
        current: dict[str, list[str]] = {}
        for worker, job in list(self.running.values()):
            current.setdefault(host_of(worker), []).append(job.source.name)
        elapsed = max(now - self.started, 1e-9)
        done = dict(self.done)
        return [
            HostRow(
                self.names.get(host, host),
                min(len(current.get(host, [])), threads.get(host, 0)),
                done.get(host, 0),
                done.get(host, 0) / elapsed,
                current.get(host, []),
            )
            for host in sorted(threads.keys() | done.keys() | current.keys())
        ]
