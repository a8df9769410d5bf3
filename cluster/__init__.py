"""Dask clusters for the pipeline stages: a LocalCluster or Slurm worker jobs, and progress reporting.

Public API::

    from cluster import open_client, track

    with open_client("slurm", config_path="configs/cluster/slurm.yaml", n_workers=8) as client:
        futures = client.map(simulate_task, tasks)
        for result in track(futures, label="simulate"):
            ...
"""
from .client import KINDS, open_client
from .config import load_slurm_config, render_job_script
from .errors import ClusterError, TaskError
from .local import DEFAULT_MEMORY_PER_WORKER, local_worker_count
from .progress import format_duration, format_status, track, track_items
from .slurm import preflight_job_script

__all__ = [
    "KINDS",
    "ClusterError",
    "TaskError",
    "DEFAULT_MEMORY_PER_WORKER",
    "format_duration",
    "format_status",
    "load_slurm_config",
    "local_worker_count",
    "open_client",
    "preflight_job_script",
    "render_job_script",
    "track",
    "track_items",
]
