"""The zarr v3 store of a simulated dataset: creation, shard-aligned writes, resume markers.

Layout (see README "Store layout"): ``patches`` (N, P, P) float32, ``label`` (N,) uint8, ``case`` (N,) int32,
``environment`` (N,) uint8, ``task_done`` (n_tasks,) uint8, and ``clean/`` with one noiseless patch per
(task, environment, detector). Arrays along N are sharded by ``rows_per_shard``; writers only ever write whole
shards (zarr-python #3514: unaligned concurrent writes can lose data).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from .plan import Plan

ROW_ARRAYS = {"label": "uint8", "case": "int32", "environment": "uint8"}


class StoreError(RuntimeError):
    """The output store cannot be used as asked (exists without --resume, or made from another config)."""


def _row_chunks(plan: Plan) -> int:
    return plan.patches_per_image  # one (environment, detector) image per chunk; a shard holds n_detectors


def create_store(path: str | Path, plan: Plan, attrs: dict) -> zarr.Group:
    """Create an empty store for ``plan``; fails if ``path`` exists."""
    p = plan.patch_size_px
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    root.create_array("patches", shape=(plan.n_rows, p, p), dtype="float32", chunks=(_row_chunks(plan), p, p),
                      shards=(plan.rows_per_shard, p, p), fill_value=np.nan)
    for name, dtype in ROW_ARRAYS.items():
        root.create_array(name, shape=(plan.n_rows,), dtype=dtype, chunks=(_row_chunks(plan),),
                          shards=(plan.rows_per_shard,), fill_value=0)
    clean = root.create_group("clean")
    n_clean = len(plan.tasks) * plan.clean_rows_per_task
    clean.create_array("patches", shape=(n_clean, p, p), dtype="float32", chunks=(plan.clean_rows_per_task, p, p),
                       fill_value=np.nan)
    for name, dtype in ROW_ARRAYS.items():
        clean.create_array(name, shape=(n_clean,), dtype=dtype, chunks=(plan.clean_rows_per_task,), fill_value=0)
    root.create_array("task_done", shape=(len(plan.tasks),), dtype="uint8", chunks=(1,), fill_value=0)
    root.attrs.update(attrs)
    return root


def open_store(path: str | Path, mode: str = "r") -> zarr.Group:
    if not Path(path).exists():
        raise StoreError(f"no store at {path}")
    return zarr.open_group(str(path), mode=mode, zarr_format=3)


def done_tasks(path: str | Path) -> np.ndarray:
    """(n_tasks,) bool: which tasks have written all their rows."""
    return open_store(path)["task_done"][:].astype(bool)


def write_shard(path: str | Path, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Write whole-shard blocks of the row arrays starting at row ``start``."""
    root = open_store(path, mode="r+")
    for name, data in arrays.items():
        root[name][start:start + len(data)] = data


def write_clean(path: str | Path, start: int, arrays: dict[str, np.ndarray]) -> None:
    root = open_store(path, mode="r+")
    for name, data in arrays.items():
        root["clean"][name][start:start + len(data)] = data


def mark_done(path: str | Path, task_index: int) -> None:
    """Set a task's marker, after all its shards are on disk."""
    open_store(path, mode="r+")["task_done"][task_index] = 1
