"""Reading the training inputs from a feature store (zarr v3, schema in ``contract.store``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract import store as schema
from contract.features import check_feature_names
from contract.store import StoreError, StoreMeta


@dataclass
class StoreIndex:
    """The small per-row metadata of a store, read whole (a few bytes per row), with the store's metadata.

    label : (N,) uint8, class of the central column.
    row_hosts : (N,) str, host material of each row (from ``attrs["cases"][case]["host"]``).
    row_detectors : (N,) str, detector of each row.
    case : (N,) int32, row of ``meta.cases``.
    """

    meta: StoreMeta
    label: np.ndarray
    case: np.ndarray
    row_hosts: np.ndarray
    row_detectors: np.ndarray

    @property
    def path(self) -> str:
        return self.meta.path

    @property
    def feature_names(self) -> list[str]:
        return list(self.meta.feature_names)

    @property
    def n_rows(self) -> int:
        return int(self.label.shape[0])


def read_index(path: str | Path) -> StoreIndex:
    """Read labels, cases, per-row host and detector; check the feature layout."""
    meta = schema.read_meta(path, require=(schema.FEATURES, schema.LABEL, schema.CASE))
    try:
        check_feature_names(meta.feature_names, source=f"store {meta.path!r}")
    except ValueError as err:
        raise StoreError(f"{err}; re-encode it with `python -m features encode --store {meta.path}`") from None
    group = schema.open_group(path)
    label = np.asarray(group[schema.LABEL][:])
    case = np.asarray(group[schema.CASE][:])
    if case.size and (case.min() < 0 or case.max() >= len(meta.cases)):
        raise StoreError(f"store {meta.path!r}: {schema.CASE!r} values outside 0..{len(meta.cases) - 1}")
    hosts = np.array([c["host"] for c in meta.cases])
    detectors = np.array([str(c.get("detector", "")).upper() for c in meta.cases])
    return StoreIndex(meta, label, case, hosts[case], detectors[case])


def read_rows(path: str | Path, rows: np.ndarray, columns: list[int], block_rows: int = 1 << 20) -> np.ndarray:
    """Read ``features[rows][:, columns]`` as (len(rows), len(columns)) float32, block by block.

    ``rows`` must be sorted ascending. Only one block of ``block_rows`` rows is held besides the result,
    so a DDP rank holds its shard, not the whole store.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and np.any(np.diff(rows) < 0):
        raise ValueError("rows must be sorted ascending")
    array = schema.open_group(path)[schema.FEATURES]
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
        raise StoreError(f"store {str(path)!r}: non-finite features in rows {bad.tolist()}: were all shards "
                         f"encoded? (`python -m features encode --store {path}`)")
    return out
