"""The zarr v3 store of a simulated dataset: creation, shard-aligned writes, resume markers.

Layout (docs/store-and-contract.md): ``label`` (N,) uint8, ``case`` (N,) int32, ``environment`` (N,) uint8,
``task_done`` (n_tasks,) uint8, ``clean/`` with one noiseless patch and one noiseless scan window per (task,
environment, detector), and ``patches`` (N, P, P) float32 only when kept (``keep_patches``; otherwise they are made
again from the clean scans and seeds, ``simulate.patches``). Arrays along N are sharded by ``rows_per_shard``; writers only ever write whole
shards (zarr-python #3514: unaligned concurrent writes can lose data).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from contract.store import (
    ATTR_LAYOUT,
    ATTR_PATCHES_KEPT,
    CLEAN,
    LAYOUT_VERSION,
    MARKER_DTYPE,
    PATCH_DTYPE,
    PATCHES,
    ROW_ARRAYS,
    SCANS,
    TASK_DONE,
    StoreError,
    chunk_compressors,
    create_digest_array,
    open_group,
    read_checked,
    store_layout,
    write_shard_digest,
)

from .plan import Plan

__all__ = ["StoreError", "WriteLayout", "create_store", "done_tasks", "mark_done", "write_clean", "write_layout",
           "write_shard"]


@dataclass(frozen=True)
class WriteLayout:
    """What a task writes into an existing store: its layout version (``contract.store.LAYOUT_VERSION``), whether
    it keeps the noisy patches, and the side of its ``clean/scans`` (None: a layout-1 store has none)."""

    version: int
    keep_patches: bool
    scan_px: int | None

    @property
    def shares_phonon_seeds(self) -> bool:
        """Layout 2 seeds the environments without a dopant site per (host, beam energy), not per task."""
        return self.version >= 2


def write_layout(path: str | Path) -> WriteLayout:
    root = open_group(path)
    version, kept = store_layout(root.attrs)
    clean = root[CLEAN]
    scan_px = int(clean[SCANS].shape[-1]) if SCANS in clean else None
    return WriteLayout(version, kept, scan_px)


def _row_chunks(plan: Plan) -> int:
    return plan.patches_per_image  # one (environment, detector) image per chunk; a shard holds n_detectors


def create_store(path: str | Path, plan: Plan, attrs: dict, *, keep_patches: bool, scan_px: int) -> zarr.Group:
    """Create an empty store for ``plan`` (layout ``contract.store.LAYOUT_VERSION``); fails if ``path`` exists.
    ``keep_patches``: write the noisy ``patches`` array; ``scan_px``: side of ``clean/scans``."""
    p = plan.patch_size_px
    crc = chunk_compressors()  # every chunk checksummed: `python -m simulate verify` finds any damaged byte
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    if keep_patches:
        root.create_array(PATCHES, shape=(plan.n_rows, p, p), dtype=PATCH_DTYPE, chunks=(_row_chunks(plan), p, p),
                          shards=(plan.rows_per_shard, p, p), fill_value=np.nan, compressors=crc)
    for name, dtype in ROW_ARRAYS.items():
        root.create_array(name, shape=(plan.n_rows,), dtype=dtype, chunks=(_row_chunks(plan),),
                          shards=(plan.rows_per_shard,), fill_value=0, compressors=crc)
    clean = root.create_group(CLEAN)
    n_clean = plan.n_clean_rows
    clean.create_array(PATCHES, shape=(n_clean, p, p), dtype=PATCH_DTYPE, chunks=(plan.clean_chunk_rows, p, p),
                       fill_value=np.nan, compressors=crc)
    clean.create_array(SCANS, shape=(n_clean, scan_px, scan_px), dtype=PATCH_DTYPE,
                       chunks=(plan.clean_chunk_rows, scan_px, scan_px), fill_value=np.nan, compressors=crc)
    for name, dtype in ROW_ARRAYS.items():
        clean.create_array(name, shape=(n_clean,), dtype=dtype, chunks=(plan.clean_chunk_rows,), fill_value=0,
                           compressors=crc)
    root.create_array(TASK_DONE, shape=(len(plan.tasks),), dtype=MARKER_DTYPE, chunks=(1,), fill_value=0,
                      compressors=crc)
    if keep_patches:
        create_digest_array(root, PATCHES, plan.n_rows // plan.rows_per_shard)  # verify: shards in their own rows
    root.attrs.update({**attrs, ATTR_LAYOUT: LAYOUT_VERSION, ATTR_PATCHES_KEPT: bool(keep_patches)})
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
    """Write a task's clean rows; ``scans`` only into a store that has them (a layout-1 store being repaired
    has none)."""
    clean = open_group(path, mode="r+")[CLEAN]
    for name, data in arrays.items():
        if name == SCANS and SCANS not in clean:
            continue
        clean[name][start:start + len(data)] = data


def mark_done(path: str | Path, task_index: int) -> None:
    """Set a task's marker, after all its shards are on disk."""
    open_group(path, mode="r+")[TASK_DONE][task_index] = 1
