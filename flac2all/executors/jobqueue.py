"""Dask workers as jobs of a batch system (Slurm, PBS, SGE, LSF...), through
dask-jobqueue: ``flac2all MODES --dask-jobqueue slurm --dask-jobs N
--dask-cores C INPUTDIR``.

The scheduler runs inside flac2all, on the node it is started on (a login
or submit node); the worker jobs are submitted as there is work, at most N
at once, and cancelled when there is none. Whatever a site needs beyond
cores and memory (partition, account, walltime, the network interface, a
``module load`` before the worker starts) comes from Dask's own jobqueue
configuration (``~/.config/dask/jobqueue.yaml`` or ``DASK_JOBQUEUE__SLURM__*``
variables), as for any dask-jobqueue user.
"""

from __future__ import annotations

import shutil

from flac2all.errors import UsageError

# --dask-jobqueue's choices -> dask-jobqueue's classes.
JOBQUEUES = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "oar": "OARCluster",
    "htcondor": "HTCondorCluster",
    "moab": "MoabCluster",
}


def batch_cluster(kind: str, jobs: int, cores: int | None, memory: str | None):
    """A dask-jobqueue cluster whose workers are jobs of the batch system:
    one worker process of ``cores`` threads per job, at most ``jobs`` jobs,
    none while there is nothing to do (the rest: Dask's jobqueue config)."""
    try:
        import dask_jobqueue
    except ImportError:
        from flac2all.executors.dask import install_hint

        raise UsageError(f"--dask-jobqueue needs dask-jobqueue, which is not installed: {install_hint()}") from None
    cls = getattr(dask_jobqueue, JOBQUEUES[kind])
    submit = cls.job_cls.submit_command
    if shutil.which(submit) is None:
        raise UsageError(f"--dask-jobqueue {kind}: '{submit}' is not installed here (run flac2all on a submit node)")
    options: dict = {"processes": 1}
    if cores:
        options["cores"] = cores
    if memory:
        options["memory"] = memory
    import dask

    try:
        # The scheduler runs here: a worker gets a job only when a thread of
        # it is free, so a worker job ended by the batch system (walltime,
        # preemption) takes down only the jobs it was running, and only those
        # count towards Dask's allowed-failures.
        with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
            cluster = cls(**options)
    except ValueError as exc:  # no cores or memory, here or in the config
        raise UsageError(f"--dask-jobqueue {kind}: {exc}") from None
    cluster.adapt(minimum_jobs=0, maximum_jobs=jobs)
    return cluster
