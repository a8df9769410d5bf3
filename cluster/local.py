"""Sizing of a single-machine Dask cluster (LocalCluster)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

from dask.utils import parse_bytes

from .config import load_yaml
from .errors import ClusterError

# One abTEM multislice worker (1 thread, a few-hundred-Å² cell at Nyquist) peaked at ~1-1.5 GiB;
# 2 GiB leaves room for the zarr write buffers. Override in configs/cluster/local.yaml or per call.
DEFAULT_MEMORY_PER_WORKER = "2GiB"
_LOCAL_KEYS = {"memory_per_worker", "n_workers", "dashboard"}


def machine_cores() -> int:
    """CPU cores this process may use (honours taskset/cgroup cpusets and Slurm allocations)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_memory_bytes() -> int:
    """Memory available to this process: the smaller of RAM and any cgroup/rlimit cap."""
    from distributed.system import MEMORY_LIMIT  # deferred: distributed costs ~2 s; `import cluster` stays light

    return int(MEMORY_LIMIT)


def local_worker_count(cores: int, memory_bytes: int, memory_per_worker: str | int = DEFAULT_MEMORY_PER_WORKER) -> int:
    """Workers for a LocalCluster: one single-threaded process per core, no more than memory allows.

    ``n = min(cores, memory_bytes // memory_per_worker)``, at least 1.
    """
    per_worker = parse_bytes(memory_per_worker) if isinstance(memory_per_worker, str) else int(memory_per_worker)
    if per_worker <= 0:
        raise ClusterError(f"memory_per_worker must be positive, got {memory_per_worker!r}")
    if cores < 1:
        raise ClusterError(f"cores must be at least 1, got {cores}")
    return max(1, min(int(cores), int(memory_bytes // per_worker)))


def load_local_config(path: str | Path | None) -> dict:
    """Options for the local cluster from a YAML file with a top-level ``local:`` mapping (or {} if no path)."""
    if path is None:
        return {}
    data = load_yaml(path)
    local = data.get("local", {})
    if set(data) - {"local"} or not isinstance(local, Mapping):
        raise ClusterError(f"{path}: a local cluster config holds only a `local:` mapping")
    unknown = set(local) - _LOCAL_KEYS
    if unknown:
        raise ClusterError(f"{path}: unknown key local.{sorted(unknown)[0]}; allowed: {sorted(_LOCAL_KEYS)}")
    return dict(local)


def local_cluster_kwargs(n_workers: int | None, options: Mapping[str, Any]) -> dict:
    """Keyword arguments for ``distributed.LocalCluster`` sized to this machine."""
    if n_workers is None:
        n_workers = options.get("n_workers")
    if n_workers is None:
        n_workers = local_worker_count(
            machine_cores(), machine_memory_bytes(), options.get("memory_per_worker") or DEFAULT_MEMORY_PER_WORKER
        )
    if not isinstance(n_workers, int) or n_workers < 1:
        raise ClusterError(f"n_workers must be a positive integer, got {n_workers!r}")
    return dict(
        n_workers=n_workers,
        threads_per_worker=1,  # abTEM/FFTW and numpy kernels are run one task per core
        processes=True,  # the GIL would serialise pure-Python parts of the tasks
        dashboard_address=":0" if options.get("dashboard") else None,  # off, or on a free port
        # the scheduler's HTTP endpoints (health, metrics) default to port 8787 even with the dashboard
        # off; a free port avoids "Port 8787 is already in use" warnings next to other clusters
        scheduler_kwargs={"dashboard_address": ":0"},
        # a failed task reaches the driver as its exception (with the remote traceback, shown by --debug); the
        # worker's own "Compute Failed" ERROR log would print that traceback on every terminal run
        silence_logs=logging.CRITICAL,
    )
