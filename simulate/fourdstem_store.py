"""The 4D-STEM zarr store (layout: ``contract.fourdstem``): creation, shard-aligned writes, resume markers.

Arrays along N are sharded by whole tasks (``scan_rows_per_task`` scan lines), chunked by scan line; writers
only ever write whole shards (zarr-python #3514).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from contract import fourdstem as schema
from contract.store import open_group


def create_store(path: str | Path, cfg: dict, cfg_hash: str, tasks, scan_attrs: dict[str, dict], versions: dict):
    """An empty store for ``cfg``; fails if ``path`` exists. ``scan_attrs``: per scan, its group attributes."""
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    k = cfg["detector"]["pattern_size_px"]
    for name in cfg["scans"]:
        attrs = scan_attrs[name]
        ny, nx = attrs[schema.ATTR_SCAN_SHAPE]
        n, shard = ny * nx, attrs[schema.ATTR_ROWS_PER_SHARD]
        group = root.create_group(name)
        patterns = group.create_group(schema.PATTERNS)
        for array in [schema.CLEAN] + [schema.dose_array_name(d) for d in cfg["imaging"]["doses_e_per_angstrom2"]]:
            patterns.create_array(array, shape=(n, k, k), dtype=schema.PATTERN_DTYPE, chunks=(nx, k, k),
                                  shards=(shard, k, k), fill_value=np.nan)
        for array, (dtype, trailing) in schema.ROW_ARRAYS.items():
            group.create_array(array, shape=(n, *trailing), dtype=dtype, chunks=(nx, *trailing),
                               shards=(shard, *trailing), fill_value=np.nan)
        group.attrs.update(attrs)
    root.create_array(schema.TASK_DONE, shape=(len(tasks),), dtype="uint8", chunks=(1,), fill_value=0)
    root.attrs.update({schema.ATTR_KIND: schema.KIND, "dataset": cfg["name"], schema.ATTR_SCANS: list(cfg["scans"]),
                       schema.ATTR_CONFIG: cfg, schema.ATTR_CONFIG_HASH: cfg_hash, schema.ATTR_VERSIONS: versions,
                       "units": {f"{schema.PATTERNS}/{schema.CLEAN}": "fraction of the incident beam per pixel",
                                 f"{schema.PATTERNS}/dose_*": "electron counts (Poisson)"}})
    return root


def write_rows(path: str | Path, scan: str, start: int, patterns: dict[str, np.ndarray],
               rows: dict[str, np.ndarray]) -> None:
    """Write one task's whole shard of every pattern array and truth array of ``scan`` from row ``start``."""
    group = open_group(path, mode="r+")[scan]
    for name, data in patterns.items():
        group[schema.PATTERNS][name][start:start + len(data)] = data
    for name, data in rows.items():
        group[name][start:start + len(data)] = data


def done_tasks(path: str | Path) -> np.ndarray:
    return open_group(path)[schema.TASK_DONE][:].astype(bool)


def mark_done(path: str | Path, task_index: int) -> None:
    open_group(path, mode="r+")[schema.TASK_DONE][task_index] = 1
