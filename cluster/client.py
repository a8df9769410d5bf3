"""``open_client``: one entry point for a Dask client on this machine or on Slurm."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import dask.config

from .config import DEFAULT_SLURM_CONFIG, dask_config_entries, load_slurm_config
from .errors import ClusterError
from .local import load_local_config, local_cluster_kwargs
from .slurm import start_slurm_cluster

KINDS = ("local", "slurm")


@contextlib.contextmanager
def open_client(
    kind: str = "local",
    *,
    n_workers: int | None = None,
    config_path: str | Path | None = None,
    wait_timeout_s: float = 300,
    memory_per_worker: str | None = None,
) -> Iterator["distributed.Client"]:  # noqa: F821
    """Start a Dask cluster, yield a connected ``distributed.Client``, close both on exit.

    kind="local": a ``LocalCluster`` of single-threaded worker processes, one per core but no more
        than memory / ``memory_per_worker`` (default 2 GiB, see cluster.local); ``config_path`` may
        name a YAML file with a ``local:`` mapping (memory_per_worker, n_workers, dashboard).
    kind="slurm": dask-jobqueue's ``SLURMCluster`` configured from ``config_path`` (default
        ``configs/cluster/slurm.yaml``, dask-jobqueue's schema under ``jobqueue.slurm``). The job
        script is checked with ``sbatch --test-only`` first, then ``ceil(n_workers / processes)`` jobs
        are submitted (default: the file's ``scale.jobs``) and the call blocks until ``n_workers``
        workers have connected or ``wait_timeout_s`` has passed.

    Raises ClusterError for a bad config, a job Slurm refuses, or workers that do not arrive in time
    (with each job's squeue state and pending reason).
    """
    if kind not in KINDS:
        raise ClusterError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "local":
        from distributed import Client, LocalCluster  # deferred: distributed costs ~2 s; `import cluster` stays light


        options = load_local_config(config_path)
        if memory_per_worker is not None:
            options["memory_per_worker"] = memory_per_worker
        with LocalCluster(**local_cluster_kwargs(n_workers, options)) as cluster, Client(cluster) as client:
            yield client
        return


    if memory_per_worker is not None:
        raise ClusterError("memory_per_worker applies to kind='local'; set jobqueue.slurm.memory in the Slurm config")
    path = Path(config_path) if config_path is not None else DEFAULT_SLURM_CONFIG
    settings = load_slurm_config(path)
    # dask-jobqueue reads dask.config again for every job it submits, so keep the file's values set
    # for as long as the cluster lives
    with dask.config.set(dask_config_entries(settings["slurm"])):
        cluster, client = start_slurm_cluster(settings, n_workers, wait_timeout_s, source=str(path))
        try:
            yield client
        finally:
            client.close()
            cluster.close()
