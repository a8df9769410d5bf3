"""Reading the training inputs from a feature store (zarr v3, layout in README "Store layout")."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DETECTORS = ("HAADF", "MAADF")


@dataclass
class StoreIndex:
    """The small per-row metadata of a store, read whole (a few bytes per row).

    label : (N,) uint8, class of the central column.
    row_hosts : (N,) str, host material of each row (from ``attrs["cases"][case]["host"]``).
    row_detectors : (N,) str, detector of each row ("HAADF" or "MAADF").
    feature_names : the 31 column names of ``features``.
    """

    path: str
    label: np.ndarray
    row_hosts: np.ndarray
    row_detectors: np.ndarray
    feature_names: list[str]

    @property
    def n_rows(self) -> int:
        return int(self.label.shape[0])


def open_store(path: str | Path):
    """Open a feature store read-only (a ``zarr.Group``), with errors that name what is missing."""
    import zarr  # imported here so that the models and the benchmark run where zarr is not installed

    path = str(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"store {path!r} does not exist (make simulate && make features write the demo one)")
    group = zarr.open_group(path, mode="r")
    for name in ("label", "case"):
        if name not in group:
            raise ValueError(f"store {path!r} has no {name!r} array: not a simulation store")
    if "features" not in group:
        raise ValueError(f"store {path!r} has no 'features' array: run `python -m features --store {path}` first")
    return group


def read_index(path: str | Path) -> StoreIndex:
    """Read labels, per-row host and detector, and feature names."""
    group = open_store(path)
    label = np.asarray(group["label"][:])
    case = np.asarray(group["case"][:])
    cases = group.attrs.get("cases")
    if not cases:
        raise ValueError(f"store {str(path)!r} has no attrs['cases'] (needed for host and detector)")
    if case.size and (case.min() < 0 or case.max() >= len(cases)):
        raise ValueError(f"store {str(path)!r}: 'case' values outside 0..{len(cases) - 1}")
    hosts = np.array([c["host"] for c in cases])
    detectors = np.array([str(c.get("detector", "")).upper() for c in cases])
    names = group["features"].attrs.get("feature_names")
    n_cols = group["features"].shape[1]
    if names is None or len(names) != n_cols:
        raise ValueError(f"store {str(path)!r}: features.attrs['feature_names'] must list {n_cols} names, got {names}")
    if group["features"].shape[0] != label.shape[0]:
        raise ValueError(f"store {str(path)!r}: features has {group['features'].shape[0]} rows, label {label.shape[0]}")
    return StoreIndex(str(path), label, hosts[case], detectors[case], [str(n) for n in names])


def read_rows(path: str | Path, rows: np.ndarray, columns: list[int], block_rows: int = 1 << 20) -> np.ndarray:
    """Read ``features[rows][:, columns]`` as (len(rows), len(columns)) float32, block by block.

    ``rows`` must be sorted ascending. Only one block of ``block_rows`` rows is held besides the result,
    so a DDP rank holds its shard, not the whole store.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and np.any(np.diff(rows) < 0):
        raise ValueError("rows must be sorted ascending")
    array = open_store(path)["features"]
    out = np.empty((rows.size, len(columns)), dtype=np.float32)
    if rows.size == 0:
        return out
    cols = np.asarray(columns)
    filled = 0
    for start in range(int(rows[0]) - int(rows[0]) % block_rows, int(rows[-1]) + 1, block_rows):
        lo, hi = np.searchsorted(rows, [start, start + block_rows])
        if hi == lo:
            continue
        block = np.asarray(array[start : min(start + block_rows, array.shape[0])])
        out[filled : filled + hi - lo] = block[rows[lo:hi] - start][:, cols]
        filled += hi - lo
    if not np.isfinite(out).all():
        bad = rows[np.flatnonzero(~np.isfinite(out).all(axis=1))[:5]]
        raise ValueError(f"store {str(path)!r}: non-finite features in rows {bad.tolist()} ...")
    return out
