"""The item store ``fit-image`` writes: atom-centred sub-images (N, P, P) float32 under ``contract.store.PATCHES``,
sharded along N, with per-item arrays (positions, border flags) beside them and the provenance in attributes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from contract.store import PATCHES


def write_items(path: str | Path, items: np.ndarray, rows_per_shard: int, row_arrays: dict | None = None,
                attrs: dict | None = None, name: str = PATCHES):
    """Create the zarr group ``path`` (replacing it) with ``items`` (N, P, P) as ``name`` and ``row_arrays``
    (each (N, ...)), all sharded by ``rows_per_shard`` rows and written one whole shard at a time."""
    items = np.asarray(items, dtype=np.float32)
    if items.ndim != 3 or items.shape[1] != items.shape[2]:
        raise ValueError(f"items must be (N, P, P), got {items.shape}")
    n, p = items.shape[:2]
    per = int(max(1, min(rows_per_shard, n)))
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    arrays = {name: items, **{k: np.asarray(v) for k, v in (row_arrays or {}).items()}}
    for key, data in arrays.items():
        if len(data) != n:
            raise ValueError(f"{key} has {len(data)} rows, the items {n}")
        arr = root.create_array(key, shape=data.shape, dtype=data.dtype, chunks=(per, *data.shape[1:]),
                                shards=(per, *data.shape[1:]))
        for start in range(0, n, per):
            arr[start:start + per] = data[start:start + per]
    root.attrs.update({"rows_per_shard": per, **(attrs or {})})
    return root
