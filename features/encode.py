"""Encode a store's patches into the 31 features, one Dask task per shard (I/O and orchestration).

Layout written into the store (next to ``patches``, see README "Store layout"):

``features`` (N, 31) float32
    Sharded exactly like ``patches`` along N (``attrs["rows_per_shard"]`` rows per shard, the same inner
    chunk rows), so each task owns whole shards (zarr-python #3514: unaligned concurrent writes lose data).
    ``features.attrs``: ``feature_names`` (31 names, ``features.context.feature_names``), ``normalisation``,
    ``site_symmetry`` (the per-case brightness table, see below) and ``versions``.
``features_done`` (n_shards,) uint8
    1 once a shard's rows are written; one chunk per shard, written by the task that owns the shard
    after its rows. A rerun skips shards marked 1 and recomputes the others; each shard is always one
    matrix product over the same rows, so a resumed run writes the same bytes as an uninterrupted one.

Site symmetry needs, per context case, which sublattice has the brighter central columns. It is measured
on the stored noisy patches themselves - the same data and rule a micrograph would get - in a first pass:
one task per shard returns per-(case, sublattice) sums and counts of ``central_intensity`` (3 x 3 centre
pixels, raw counts); the driver adds them in shard order (float64, deterministic) and stores the resulting
table in ``features.attrs["site_symmetry"]``, so a resumed run does not repeat the pass. The sublattice of a
patch comes from its environment (``attrs["environments"][i]["sublattice"]``). The pass reads the patches a
second time; the clean/ images would be cheaper but exist only for simulations.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .context import CONTEXT_SIZE, case_context, feature_names
from .normalise import standardised_contrast_features
from .site_symmetry import SUBLATTICE_IDS, central_intensity, flags_from_sums
from .zernike import CONTRAST_ORDERS

N_FEATURES = CONTEXT_SIZE + len(CONTRAST_ORDERS) + 2  # 31
DEVICES = ("cpu", "gpu")


# ----------------------------------------------------------------------------------------------- plan
def store_plan(store_path) -> dict:
    """Read and check what encoding needs from a store; raises ValueError naming the field before any job.

    Returns a dict: n_rows, patch_size, rows_per_shard, n_shards, shard_rows [(start, stop)], context (n_cases,
    23) float32, sublattice_of_environment (n_env,) uint8, patch_chunk_rows.
    """
    import zarr

    path = Path(store_path)
    if not path.exists():
        raise FileNotFoundError(f"store {str(path)!r} does not exist")
    g = zarr.open_group(str(path), mode="r")
    for name in ("patches", "case", "environment"):
        if name not in g:
            raise ValueError(f"store {str(path)!r} has no array {name!r} (is the simulation finished?)")
    attrs = dict(g.attrs)
    for key in ("rows_per_shard", "cases", "environments"):
        if key not in attrs:
            raise ValueError(f"store {str(path)!r} lacks group attribute {key!r}")
    patches = g["patches"]
    n_rows = int(patches.shape[0])
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2] or patches.shape[1] % 2 == 0:
        raise ValueError(f"patches must be (N, P, P) with P odd, got shape {patches.shape}")
    rows_per_shard = int(attrs["rows_per_shard"])
    if rows_per_shard <= 0:
        raise ValueError(f"rows_per_shard must be positive, got {rows_per_shard}")
    for name in ("case", "environment"):
        if g[name].shape != (n_rows,):
            raise ValueError(f"{name} must have shape ({n_rows},), got {g[name].shape}")
    context = np.stack([case_context(c) for c in attrs["cases"]]).astype(np.float32)
    # the environment array holds each environment's "id" (= its row in the full 34-row table)
    envs = attrs["environments"]
    ids = [int(env.get("id", i)) for i, env in enumerate(envs)]
    sublattice = np.full(max(ids) + 1, 255, dtype=np.uint8)
    for i, (env_id, env) in enumerate(zip(ids, envs)):
        s = env.get("sublattice")
        if s not in SUBLATTICE_IDS:
            raise ValueError(f"environments[{i}]['sublattice'] must be one of {sorted(SUBLATTICE_IDS)}, got {s!r}")
        sublattice[env_id] = SUBLATTICE_IDS[s]
    if "task_done" in g:
        done = np.asarray(g["task_done"][:])
        if not done.all():
            missing = np.flatnonzero(done == 0)
            raise ValueError(f"store {str(path)!r}: simulation incomplete, {len(missing)} of {len(done)} tasks not "
                             f"done (first: {missing[:5].tolist()}); finish it with `python -m simulate ... --resume`")
    n_shards = math.ceil(n_rows / rows_per_shard)
    return {
        "n_rows": n_rows,
        "patch_size": int(patches.shape[1]),
        "rows_per_shard": rows_per_shard,
        "patch_chunk_rows": int(patches.chunks[0]),
        "n_shards": n_shards,
        "shard_rows": [(k * rows_per_shard, min(n_rows, (k + 1) * rows_per_shard)) for k in range(n_shards)],
        "context": context,
        "sublattice_of_environment": sublattice,
    }


def prepare_outputs(store_path, plan: dict) -> np.ndarray:
    """Create ``features`` and ``features_done`` if absent (or incompatible); return the done markers."""
    import zarr

    g = zarr.open_group(str(store_path), mode="r+")
    names = feature_names()
    shape = (plan["n_rows"], N_FEATURES)
    shards = (plan["rows_per_shard"], N_FEATURES)
    chunks = (min(plan["patch_chunk_rows"], plan["rows_per_shard"]), N_FEATURES)
    ok = ("features" in g and "features_done" in g and g["features"].shape == shape
          and g["features"].dtype == np.float32 and tuple(g["features"].shards or ()) == shards
          and g["features_done"].shape == (plan["n_shards"],)
          and list(g["features"].attrs.get("feature_names", [])) == names)
    if not ok:
        g.create_array("features", shape=shape, dtype="float32", chunks=chunks, shards=shards,
                       fill_value=np.nan, overwrite=True,
                       attributes={"feature_names": names, "normalisation": "per-patch standardisation on the unit "
                                   "disk (features.normalise)", "versions": _versions()})
        g.create_array("features_done", shape=(plan["n_shards"],), dtype="uint8", chunks=(1,),
                       fill_value=0, overwrite=True)
    return np.asarray(g["features_done"][:])


def _versions() -> dict:
    import zarr

    return {"numpy": np.__version__, "zarr": zarr.__version__}


# ---------------------------------------------------------------------------------------------- tasks
def shard_site_sums(store_path: str, start: int, stop: int, sublattice_of_environment: np.ndarray,
                    n_cases: int) -> tuple[np.ndarray, np.ndarray]:
    """Task of the first pass: per-(case, sublattice) sum and count of central intensities in rows [start, stop)."""
    import zarr

    g = zarr.open_group(store_path, mode="r")
    centre = central_intensity(np.asarray(g["patches"][start:stop]))
    bad = ~np.isfinite(centre)
    if bad.any():
        raise ValueError(f"patch {start + int(np.flatnonzero(bad)[0])} has NaN or infinite centre pixels")
    case = np.asarray(g["case"][start:stop], dtype=np.int64)
    subl = _sublattice(sublattice_of_environment, g["environment"][start:stop], start)
    sums = np.zeros((n_cases, 2))
    counts = np.zeros((n_cases, 2))
    np.add.at(sums, (case, subl), centre)
    np.add.at(counts, (case, subl), 1)
    return sums, counts


def encode_rows(patches, case, environment, context, site_table, sublattice_of_environment,
                device: str = "cpu") -> np.ndarray:
    """Pure core of one shard: ``(n, P, P)`` patches and their case/environment ids -> ``(n, 31)`` float32.

    ``context``: (n_cases, 23) table; ``site_table``: (n_cases, 2 sublattices, 2) from ``flags_from_sums``.
    """
    case = np.asarray(case, dtype=np.int64)
    environment = np.asarray(environment, dtype=np.int64)
    if device == "gpu":
        import cupy

        zern = cupy.asnumpy(standardised_contrast_features(cupy.asarray(patches)))
    else:
        zern = standardised_contrast_features(np.asarray(patches))
    site = site_table[case, _sublattice(sublattice_of_environment, environment, 0)]
    return np.concatenate([context[case], zern, site], axis=1).astype(np.float32)


def encode_shard(store_path: str, shard: int, start: int, stop: int, context: np.ndarray,
                 site_table: np.ndarray, sublattice_of_environment: np.ndarray, device: str) -> int:
    """Task of the second pass: encode rows [start, stop) (= one shard), write them, then mark the shard done."""
    import zarr

    g = zarr.open_group(store_path, mode="r+")
    try:
        rows = encode_rows(g["patches"][start:stop], g["case"][start:stop], g["environment"][start:stop],
                           context, site_table, sublattice_of_environment, device)
    except ValueError as exc:  # name the store row, not only the index inside the shard
        raise ValueError(f"shard {shard} (store rows {start}-{stop - 1}, patch index within the shard): "
                         f"{exc}") from exc
    g["features"][start:stop] = rows
    g["features_done"][shard] = 1  # after the rows: a marker never points at unwritten data
    return stop - start


def _sublattice(sublattice_of_environment: np.ndarray, environment, first_row: int) -> np.ndarray:
    env = np.asarray(environment, dtype=np.int64)
    known = (env < len(sublattice_of_environment))
    known[known] = sublattice_of_environment[env[known]] != 255
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise ValueError(f"row {first_row + i}: environment id {int(env[i])} is not in attrs['environments']")
    return sublattice_of_environment[env].astype(np.int64)


# --------------------------------------------------------------------------------------------- driver
def site_symmetry_table(store_path, plan: dict, client) -> np.ndarray:
    """(n_cases, 2, 2) float32 flag table; computed once by a first pass and kept in ``features.attrs``."""
    import zarr

    from cluster import track

    g = zarr.open_group(str(store_path), mode="r+")
    stored = g["features"].attrs.get("site_symmetry")
    if stored is not None:
        return np.asarray(stored["table"], dtype=np.float32)
    n_cases = len(plan["context"])
    futures = [client.submit(shard_site_sums, str(store_path), a, b, plan["sublattice_of_environment"], n_cases,
                             key=f"features-site-sums-{k}", pure=False)
               for k, (a, b) in enumerate(plan["shard_rows"])]
    for _ in track(futures, label="features: site brightness", unit="shard"):
        pass  # progress only; the sums are added below in shard order
    sums = np.zeros((n_cases, 2))
    counts = np.zeros((n_cases, 2))
    for f in futures:  # shard order, so the float sums do not depend on completion order
        s, c = f.result()
        sums += s
        counts += c
    present = counts.sum(axis=1) > 0
    table = np.zeros((n_cases, 2, 2), dtype=np.float32)
    table[present] = flags_from_sums(sums[present], counts[present], np.flatnonzero(present))
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    g["features"].attrs["site_symmetry"] = {
        "rule": "per case, the sublattice with the brighter mean central intensity (3x3 centre pixels of the "
                "stored patches) gets [1, 0], the other [0, 1]",
        "mean_central_intensity_metal": [None if np.isnan(v) else float(v) for v in mean[:, 0]],
        "mean_central_intensity_chalcogen": [None if np.isnan(v) else float(v) for v in mean[:, 1]],
        "table": table.tolist(),
    }
    return table


def encode_store(store_path, client, device: str = "cpu") -> dict:
    """Write ``features``/``features_done`` for every shard not yet done; returns a small summary dict."""
    from cluster import track

    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    plan = store_plan(store_path)
    if device == "gpu":  # on a worker: the driver (a login node) may have no GPU
        client.submit(_check_gpu, pure=False).result()
    done = prepare_outputs(store_path, plan)
    site_table = site_symmetry_table(store_path, plan, client)
    todo = [k for k in range(plan["n_shards"]) if not done[k]]
    futures = [client.submit(encode_shard, str(store_path), k, *plan["shard_rows"][k], plan["context"], site_table,
                             plan["sublattice_of_environment"], device, key=f"features-shard-{k}", pure=False)
               for k in todo]
    try:
        rows = sum(track(futures, label="features", unit="shard"))
    except BaseException:
        client.cancel(futures)  # do not leave tasks queued behind a failure
        raise
    return {"n_shards": plan["n_shards"], "skipped_shards": plan["n_shards"] - len(todo),
            "encoded_shards": len(todo), "encoded_rows": int(rows)}


def _check_gpu() -> int:
    try:
        import cupy

        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise RuntimeError(f"--device gpu needs CuPy and a CUDA device: {type(exc).__name__}: {exc}") from exc
    if n < 1:
        raise RuntimeError("--device gpu needs a CUDA device; CuPy sees none")
    return n
