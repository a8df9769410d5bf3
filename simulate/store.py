"""The zarr v3 store of a simulated dataset: creation, shard-aligned writes, resume markers.

Layout (docs/store-and-contract.md): ``patches`` (N, P, P) float32, ``label`` (N,) uint8, ``case`` (N,) int32,
``environment`` (N,) uint8, ``task_done`` (n_tasks,) uint8, and ``clean/`` with one noiseless patch per
(task, environment, detector). Arrays along N are sharded by ``rows_per_shard``; writers only ever write whole
shards (zarr-python #3514: unaligned concurrent writes can lose data).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from contract.store import (
    CLEAN,
    MARKER_DTYPE,
    PATCH_DTYPE,
    PATCHES,
    ROW_ARRAYS,
    TASK_DONE,
    StoreError,
    chunk_compressors,
    create_digest_array,
    open_group,
    read_checked,
    write_shard_digest,
)

from .plan import Plan

__all__ = ["StoreError", "create_store", "done_tasks", "mark_done", "write_clean", "write_shard"]


def _row_chunks(plan: Plan) -> int:
    return plan.patches_per_image  # one (environment, detector) image per chunk; a shard holds n_detectors


def create_store(path: str | Path, plan: Plan, attrs: dict) -> zarr.Group:
    """Create an empty store for ``plan``; fails if ``path`` exists."""
    p = plan.patch_size_px
    crc = chunk_compressors()  # every chunk checksummed: `python -m simulate verify` finds any damaged byte
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    root.create_array(PATCHES, shape=(plan.n_rows, p, p), dtype=PATCH_DTYPE, chunks=(_row_chunks(plan), p, p),
                      shards=(plan.rows_per_shard, p, p), fill_value=np.nan, compressors=crc)
    for name, dtype in ROW_ARRAYS.items():
        root.create_array(name, shape=(plan.n_rows,), dtype=dtype, chunks=(_row_chunks(plan),),
                          shards=(plan.rows_per_shard,), fill_value=0, compressors=crc)
    clean = root.create_group(CLEAN)
    n_clean = plan.n_clean_rows
    clean.create_array(PATCHES, shape=(n_clean, p, p), dtype=PATCH_DTYPE, chunks=(plan.clean_chunk_rows, p, p),
                       fill_value=np.nan, compressors=crc)
    for name, dtype in ROW_ARRAYS.items():
        clean.create_array(name, shape=(n_clean,), dtype=dtype, chunks=(plan.clean_chunk_rows,), fill_value=0,
                           compressors=crc)
    root.create_array(TASK_DONE, shape=(len(plan.tasks),), dtype=MARKER_DTYPE, chunks=(1,), fill_value=0,
                      compressors=crc)
    create_digest_array(root, PATCHES, plan.n_rows // plan.rows_per_shard)  # verify: shards in their own rows
    root.attrs.update(attrs)
    return root


def done_tasks(path: str | Path) -> np.ndarray:
    """(n_tasks,) bool: which tasks have written all their rows."""
    markers = open_group(path)[TASK_DONE]
    return read_checked(markers, 0, markers.shape[0], store=path, name=TASK_DONE).astype(bool)


def write_shard(path: str | Path, start: int, arrays: dict[str, np.ndarray]) -> None:
    """Write whole-shard blocks of the row arrays starting at row ``start``."""
    root = open_group(path, mode="r+")
    for name, data in arrays.items():
        root[name][start:start + len(data)] = data
        if name == PATCHES:
            write_shard_digest(root, name, start, data)


def write_clean(path: str | Path, start: int, arrays: dict[str, np.ndarray]) -> None:
    root = open_group(path, mode="r+")
    for name, data in arrays.items():
        root[CLEAN][name][start:start + len(data)] = data


def mark_done(path: str | Path, task_index: int) -> None:
    """Set a task's marker, after all its shards are on disk."""
    open_group(path, mode="r+")[TASK_DONE][task_index] = 1
