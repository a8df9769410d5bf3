"""Encode a store's patches into the 31 features, one Dask task per shard (I/O and orchestration).

Layout written into the store (next to ``patches``, see docs/store-and-contract.md, "Store layout"):

``features`` (N, 31) float32
    Sharded exactly like ``patches`` along N (``attrs["rows_per_shard"]`` rows per shard, the same inner
    chunk rows), so each task owns whole shards (zarr-python #3514: unaligned concurrent writes lose data).
    ``features.attrs``: ``feature_names`` (31 names, ``kernels.context.feature_names``), ``normalisation``,
    ``site_symmetry`` (the per-case brightness table, see below) and ``versions``.
``features_done`` (n_shards,) uint8
    1 once a shard's rows are written; one chunk per shard, written by the task that owns the shard
    after its rows. A rerun skips shards marked 1 and recomputes the others; each shard is always one
    matrix product over the same rows, so a resumed run writes the same bytes as an uninterrupted one.

Site symmetry needs, per context case, which sublattice has the brighter typical (intact) column
(``kernels.site_symmetry``). It is measured on the store's noiseless ``clean/`` patches (one per simulated image):
the mean ``central_intensity`` (3 x 3 centre pixels) of the clean patches whose central column is intact (M on
metal sites, X2 on chalcogen sites), per (case, sublattice); a case without an intact column of a sublattice falls
back to all its clean columns (said in the attribute). The noisy patches are not used for this: each draws its own
dose from a ten-fold range, so a mean of raw counts over a few hundred of them is partly a mean of doses: that rule
(version 2) flipped the flag of 4 of the 74 cases measured, each with a clean ratio within 6 % of 1 (WSe2 and TaSe2
HAADF, NbS2 and MoS2 MAADF at 60 keV). A store
without ``clean/`` (written by other tools) is measured on its noisy patches in a first pass, one task per shard,
and says so. The table and its ``rule_version`` are kept in ``features.attrs["site_symmetry"]``, so a resumed run
does not repeat the pass; a store flagged by another rule version is flagged and encoded again. The sublattice of
a patch comes from its environment (``attrs["environments"][i]["sublattice"]``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from cluster import track
from contract import store as schema
from contract.classes import SUBLATTICE_IDS
from contract.features import (
    FEATURE_NAMES,
    N_FEATURES,
    SITE_SYMMETRY_RULE_VERSION,
    assemble_features,
    site_symmetry_rule_problem,
)
from contract.errors import CorruptDataError
from contract.store import StoreError, StoreMeta, read_checked, repair_command
from kernels.context import case_context
from kernels.normalise import standardised_contrast_features
from kernels.site_symmetry import INTACT_CLASS, RULE, central_intensity, flags_from_sums
from simulate.patches import patch_source

DEVICES = ("cpu", "gpu")
UNKNOWN_SUBLATTICE = 255


# ----------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class EncodePlan:
    """What encoding a store needs: its metadata, the (n_cases, 23) context table and, per environment id,
    the sublattice id (0 metal, 1 chalcogen; 255 for ids the store does not hold)."""

    meta: StoreMeta
    context: np.ndarray
    sublattice_of_environment: np.ndarray

    @property
    def shard_rows(self) -> list[tuple[int, int]]:
        return [self.meta.shard_rows(k) for k in range(self.meta.n_shards)]


def store_plan(store_path) -> EncodePlan:
    """Read and check what encoding needs from a store; raises ``StoreError`` naming the array or attribute
    before any job is submitted."""
    meta = schema.read_meta(store_path, require=(schema.CASE, schema.ENVIRONMENT))
    name = meta.path
    if schema.PATCHES not in meta.arrays:
        patch_source(name)  # StoreError unless the patches can be made from the store's clean scans
    if not meta.environments:
        raise StoreError(f"store {name!r} lacks group attribute {schema.ATTR_ENVIRONMENTS!r}")
    try:
        context = np.stack([case_context(c) for c in meta.cases]).astype(np.float32)
    except ValueError as err:
        raise StoreError(f"store {name!r}: attrs[{schema.ATTR_CASES!r}]: {err}") from None
    # the environment array holds each environment's "id" (= its row in the full 34-row table)
    ids = [int(env.get("id", i)) for i, env in enumerate(meta.environments)]
    sublattice = np.full(max(ids) + 1, UNKNOWN_SUBLATTICE, dtype=np.uint8)
    for i, (env_id, env) in enumerate(zip(ids, meta.environments)):
        s = env.get("sublattice")
        if s not in SUBLATTICE_IDS:
            raise StoreError(f"store {name!r}: environments[{i}]['sublattice'] must be one of "
                             f"{sorted(SUBLATTICE_IDS)}, got {s!r}")
        sublattice[env_id] = SUBLATTICE_IDS[s]
    if schema.TASK_DONE in meta.arrays:
        done = np.asarray(schema.open_group(name)[schema.TASK_DONE][:])
        if not done.all():
            missing = np.flatnonzero(done == 0)
            raise StoreError(f"store {name!r}: simulation incomplete, {len(missing)} of {len(done)} tasks not done "
                             f"(first: {missing[:5].tolist()}); finish it with `python -m simulate run ... --resume`")
    return EncodePlan(meta, context, sublattice)


def prepare_outputs(store_path, plan: EncodePlan) -> np.ndarray:
    """Create ``features`` and ``features_done`` if absent (or incompatible); return the done markers."""
    g = schema.open_group(store_path, mode="r+")
    meta = plan.meta
    shape = (meta.n_rows, N_FEATURES)
    shards = (meta.rows_per_shard, N_FEATURES)
    rows = g[schema.PATCHES] if schema.PATCHES in meta.arrays else g[schema.LABEL]  # the simulation's row chunks
    chunks = (min(int(rows.chunks[0]), meta.rows_per_shard), N_FEATURES)
    ok = (schema.FEATURES in g and schema.FEATURES_DONE in g and g[schema.FEATURES].shape == shape
          and g[schema.FEATURES].dtype == np.dtype(schema.FEATURE_DTYPE)
          and tuple(g[schema.FEATURES].shards or ()) == shards
          and g[schema.FEATURES_DONE].shape == (meta.n_shards,)
          and tuple(g[schema.FEATURES].attrs.get(schema.ATTR_FEATURE_NAMES, [])) == FEATURE_NAMES)
    if not ok:
        g.create_array(schema.FEATURES, shape=shape, dtype=schema.FEATURE_DTYPE, chunks=chunks, shards=shards,
                       fill_value=np.nan, overwrite=True, compressors=schema.chunk_compressors(),
                       attributes={schema.ATTR_FEATURE_NAMES: list(FEATURE_NAMES),
                                   "normalisation": "per-patch standardisation on the unit disk (kernels.normalise)",
                                   schema.ATTR_VERSIONS: _versions()})
        g.create_array(schema.FEATURES_DONE, shape=(meta.n_shards,), dtype=schema.MARKER_DTYPE, chunks=(1,),
                       fill_value=0, overwrite=True, compressors=schema.chunk_compressors())
        schema.create_digest_array(g, schema.FEATURES, meta.n_shards, overwrite=True)
    return read_checked(g[schema.FEATURES_DONE], 0, meta.n_shards, store=store_path, name=schema.FEATURES_DONE)


def _versions() -> dict:
    return {"numpy": np.__version__, "zarr": zarr.__version__}


# ---------------------------------------------------------------------------------------------- tasks
def shard_site_sums(store_path: str, start: int, stop: int, sublattice_of_environment: np.ndarray,
                    n_cases: int) -> tuple[np.ndarray, np.ndarray]:
    """Task of the first pass: per-(case, sublattice, [intact columns, all columns]) sums and counts of central
    intensities in rows [start, stop): two ``(n_cases, 2, 2)`` float64 arrays."""
    g = schema.open_group(store_path)
    patches, case, environment = _read_inputs(g, store_path, start, stop, finite_check=False)
    label = read_checked(g[schema.LABEL], start, stop, store=store_path, name=schema.LABEL)
    return site_sums(central_intensity(patches), case, _sublattice(sublattice_of_environment, environment, start),
                     label, n_cases, store_path, start, stop)


def site_sums(centre, case, sublattice, label, n_cases: int, store_path="", start: int = 0, stop: int = 0):
    """Pure core of ``shard_site_sums``: ``(n,)`` central intensities, case ids, sublattice ids and labels ->
    (sums, counts), each ``(n_cases, 2 sublattices, 2)``: ``[..., 0]`` over intact columns (``INTACT_CLASS``),
    ``[..., 1]`` over all columns."""
    _refuse_non_finite(~np.isfinite(centre), store_path, start, stop, "centre pixels")
    case = np.asarray(case, dtype=np.int64)
    subl = np.asarray(sublattice, dtype=np.int64)
    intact = np.asarray(label) == np.array([INTACT_CLASS[0], INTACT_CLASS[1]])[subl]
    sums = np.zeros((n_cases, 2, 2))
    counts = np.zeros((n_cases, 2, 2))
    np.add.at(sums, (case[intact], subl[intact], 0), centre[intact])
    np.add.at(counts, (case[intact], subl[intact], 0), 1)
    np.add.at(sums, (case, subl, 1), centre)
    np.add.at(counts, (case, subl, 1), 1)
    return sums, counts


def encode_rows(patches, case, environment, context, site_table, sublattice_of_environment,
                device: str = "cpu") -> np.ndarray:
    """Pure core of one shard: ``(n, P, P)`` patches and their case/environment ids -> ``(n, 31)`` float32.

    ``context``: (n_cases, 23) table; ``site_table``: (n_cases, 2 sublattices, 2) from ``flags_from_sums``.
    """
    case = np.asarray(case, dtype=np.int64)
    environment = np.asarray(environment, dtype=np.int64)
    if device == "gpu":
        import cupy  # deferred: optional GPU dependency (--device gpu)

        zern = cupy.asnumpy(standardised_contrast_features(cupy.asarray(patches)))
    else:
        zern = standardised_contrast_features(np.asarray(patches))
    site = site_table[case, _sublattice(sublattice_of_environment, environment, 0)]
    return assemble_features(context[case], zern, site)


def encode_shard(store_path: str, shard: int, start: int, stop: int, context: np.ndarray,
                 site_table: np.ndarray, sublattice_of_environment: np.ndarray, device: str) -> int:
    """Task of the second pass: encode rows [start, stop) (= one shard), write them, then mark the shard done."""
    g = schema.open_group(store_path, mode="r+")
    patches, case, environment = _read_inputs(g, store_path, start, stop)
    try:
        rows = encode_rows(patches, case, environment, context, site_table, sublattice_of_environment, device)
    except ValueError as exc:  # name the store row, not only the index inside the shard
        raise ValueError(f"shard {shard} (store rows {start}-{stop - 1}, patch index within the shard): "
                         f"{exc}") from exc
    g[schema.FEATURES][start:stop] = rows
    schema.write_shard_digest(g, schema.FEATURES, start, rows)
    g[schema.FEATURES_DONE][shard] = 1  # after the rows: a marker never points at unwritten data
    return stop - start


def _read_inputs(g, store_path, start: int, stop: int, finite_check: bool = True):
    """(patches, case, environment) of rows [start, stop); ``CorruptDataError`` naming the shard when one does
    not decode or (``finite_check``) a patch is not finite: every task is marked done, so NaN means damage.
    Patches that the store does not keep are made again from its clean scans (``simulate.patches``)."""
    arrays = (patch_source(store_path).read(start, stop),
              *(read_checked(g[a], start, stop, store=store_path, name=a) for a in (schema.CASE, schema.ENVIRONMENT)))
    if finite_check:
        _refuse_non_finite(~np.isfinite(arrays[0].reshape(len(arrays[0]), -1)).all(axis=1), store_path, start,
                           stop, "values")
    return arrays


def _refuse_non_finite(bad: np.ndarray, store_path, start: int, stop: int, what: str) -> None:
    if not bad.any():
        return
    rows = start + np.flatnonzero(bad)
    shard = start // max(1, stop - start)
    raise CorruptDataError(f"store {str(store_path)!r}: array {schema.PATCHES!r} shard {shard} (rows {start}-"
                           f"{stop - 1}): {len(rows)} patch(es) with NaN or infinite {what} (first rows "
                           f"{rows[:5].tolist()}) although every task is marked done: the shard is damaged; run "
                           f"`{repair_command(store_path, schema.PATCHES)}`")


def _sublattice(sublattice_of_environment: np.ndarray, environment, first_row: int) -> np.ndarray:
    env = np.asarray(environment, dtype=np.int64)
    known = (env < len(sublattice_of_environment))
    known[known] = sublattice_of_environment[env[known]] != UNKNOWN_SUBLATTICE
    if not known.all():
        i = int(np.flatnonzero(~known)[0])
        raise ValueError(f"row {first_row + i}: environment id {int(env[i])} is not in attrs['environments']")
    return sublattice_of_environment[env].astype(np.int64)


# --------------------------------------------------------------------------------------------- driver
def site_symmetry_table(store_path, plan: EncodePlan, client) -> tuple[np.ndarray, bool]:
    """(n_cases, 2, 2) float32 flag table, computed once (module docstring) and kept in ``features.attrs``, and
    whether it was (re)computed now (a table of another rule version is replaced: its shards need encoding)."""
    g = schema.open_group(store_path, mode="r+")
    stored = g[schema.FEATURES].attrs.get(schema.ATTR_SITE_SYMMETRY)
    if stored is not None and site_symmetry_rule_problem(stored) is None:
        return np.asarray(stored["table"], dtype=np.float32), False
    n_cases = len(plan.context)
    if schema.CLEAN in g:
        sums, counts = clean_site_sums(store_path, plan.sublattice_of_environment, n_cases)
        measured_on = "clean (noiseless) patches"
    else:
        futures = [client.submit(shard_site_sums, str(store_path), a, b, plan.sublattice_of_environment, n_cases,
                                 key=f"features-site-sums-{k}", pure=False)
                   for k, (a, b) in enumerate(plan.shard_rows)]
        for _ in track(futures, label="features: site brightness", unit="shard"):
            pass  # progress only; the sums are added below in shard order
        sums = np.zeros((n_cases, 2, 2))
        counts = np.zeros((n_cases, 2, 2))
        for f in futures:  # shard order, so the float sums do not depend on completion order
            s, c = f.result()
            sums += s
            counts += c
        measured_on = "noisy patches (the store has no clean/ group): a mean over random doses"
    table, mean, fallback = flag_table(sums, counts)
    g[schema.FEATURES].attrs[schema.ATTR_SITE_SYMMETRY] = {
        "rule": RULE, "rule_version": SITE_SYMMETRY_RULE_VERSION, "measured_on": measured_on,
        "mean_central_intensity_metal": [None if np.isnan(v) else float(v) for v in mean[:, 0]],
        "mean_central_intensity_chalcogen": [None if np.isnan(v) else float(v) for v in mean[:, 1]],
        "cases_without_intact_columns": fallback,
        "table": table.tolist(),
    }
    return table, True


def clean_site_sums(store_path, sublattice_of_environment: np.ndarray, n_cases: int):
    """``site_sums`` over the store's ``clean/`` patches (one noiseless patch per simulated image: a few
    thousand rows even for the paper's store, read on the driver)."""
    clean = schema.open_group(store_path)[schema.CLEAN]
    n = int(clean[schema.PATCHES].shape[0])
    patches, case, environment, label = (
        read_checked(clean[a], 0, n, store=store_path, name=f"{schema.CLEAN}/{a}")
        for a in (schema.PATCHES, schema.CASE, schema.ENVIRONMENT, schema.LABEL))
    return site_sums(central_intensity(patches), case, _sublattice(sublattice_of_environment, environment, 0),
                     label, n_cases, store_path, 0, n)


def flag_table(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(table (n_cases, 2, 2) float32, typical intensity (n_cases, 2), ids of the cases flagged from all their
    columns) from ``site_sums``' reductions. A case present in the store but without an intact column of a
    sublattice (a store that simulated only defect centres) falls back to the mean over all its columns."""
    intact_ok = (counts[:, :, 0] > 0).all(axis=1)
    present = counts[:, :, 1].sum(axis=1) > 0
    which = np.where(intact_ok, 0, 1)
    s = np.take_along_axis(sums, which[:, None, None].repeat(2, axis=1), axis=2)[:, :, 0]
    c = np.take_along_axis(counts, which[:, None, None].repeat(2, axis=1), axis=2)[:, :, 0]
    table = np.zeros((len(sums), 2, 2), dtype=np.float32)
    table[present] = flags_from_sums(s[present], c[present], np.flatnonzero(present))
    mean = np.where(c > 0, s / np.maximum(c, 1), np.nan)
    return table, mean, [int(k) for k in np.flatnonzero(present & ~intact_ok)]


def encode_store(store_path, client, device: str = "cpu") -> dict:
    """Write ``features``/``features_done`` for every shard not yet done; returns a small summary dict."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    plan = store_plan(store_path)
    if device == "gpu":  # on a worker: the driver (a login node) may have no GPU
        client.submit(_check_gpu, pure=False).result()
    done = prepare_outputs(store_path, plan)
    site_table, recomputed = site_symmetry_table(store_path, plan, client)
    if recomputed and done.any():  # flags of another rule version: every shard is encoded again
        g = schema.open_group(store_path, mode="r+")
        g[schema.FEATURES_DONE][:] = 0
        done = np.zeros_like(done)
    n_shards = plan.meta.n_shards
    todo = [k for k in range(n_shards) if not done[k]]
    futures = [client.submit(encode_shard, str(store_path), k, *plan.meta.shard_rows(k), plan.context, site_table,
                             plan.sublattice_of_environment, device, key=f"features-shard-{k}", pure=False)
               for k in todo]
    try:
        rows = sum(track(futures, label="features", unit="shard"))
    except BaseException:
        client.cancel(futures)  # do not leave tasks queued behind a failure
        raise
    return {"n_shards": n_shards, "skipped_shards": n_shards - len(todo),
            "encoded_shards": len(todo), "encoded_rows": int(rows)}


def _check_gpu() -> int:
    try:
        import cupy  # deferred: optional GPU dependency (--device gpu)

        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise RuntimeError(f"--device gpu needs CuPy and a CUDA device: {type(exc).__name__}: {exc}") from exc
    if n < 1:
        raise RuntimeError("--device gpu needs a CUDA device; CuPy sees none")
    return n
