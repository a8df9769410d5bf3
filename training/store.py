"""Reading the training inputs from a feature store (zarr v3, schema in ``contract.store``)."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from contract import store as schema
from contract.errors import CorruptDataError
from contract.features import check_feature_names, site_symmetry_rule_problem
from contract.store import StoreError, StoreMeta, read_checked, repair_command, rows_per_stored_block


@dataclass
class StoreIndex:
    """The small per-row metadata of a store, read whole (5 bytes per row), with the store's metadata.

    label : (N,) uint8, class of the central column.
    case : (N,) int32, row of ``meta.cases``.
    row_hosts : (N,) str, host material of each row (from ``attrs["cases"][case]["host"]``).
    row_detectors : (N,) str, detector of each row.
    row_dopants : (N,) str, dopant of each row's combo ("none" when undoped).

    The three ``row_*`` arrays are built from ``case`` on first use only: as fixed-width strings they take
    ~48 bytes a row (2.6 GB at the paper's 55 M rows, in every DDP rank and at every ``read_index``), and
    the random split, the data loading and the checkpoint metadata never read them.
    """

    meta: StoreMeta
    label: np.ndarray
    case: np.ndarray
    case_hosts: np.ndarray      # (n_cases,) str: host, detector (upper case) and dopant of each case
    case_detectors: np.ndarray
    case_dopants: np.ndarray

    @cached_property
    def row_hosts(self) -> np.ndarray:
        return self.case_hosts[self.case]

    @cached_property
    def row_detectors(self) -> np.ndarray:
        return self.case_detectors[self.case]

    @cached_property
    def row_dopants(self) -> np.ndarray:
        return self.case_dopants[self.case]

    @property
    def path(self) -> str:
        return self.meta.path

    @property
    def feature_names(self) -> list[str]:
        return list(self.meta.feature_names)

    @property
    def n_rows(self) -> int:
        return int(self.label.shape[0])


_ROWS_CHECKED: set[str] = set()


def read_index(path: str | Path) -> StoreIndex:
    """Read labels, cases, per-row host and detector; check the feature layout."""
    if path is None or str(path) == "":
        raise StoreError("data.store is not set: pass --data.store STORE.zarr (a store with features)")
    meta = schema.read_meta(path, require=(schema.FEATURES, schema.LABEL, schema.CASE))
    try:
        check_feature_names(meta.feature_names, source=f"store {meta.path!r}")
    except ValueError as err:
        raise StoreError(f"{err}; re-encode it with `python -m features encode --store {meta.path}`") from None
    group = schema.open_group(path)
    stale = site_symmetry_rule_problem(group[schema.FEATURES].attrs.get(schema.ATTR_SITE_SYMMETRY))
    if stale:
        raise StoreError(f"store {meta.path!r}: {stale}; re-encode it with `python -m features encode --store "
                         f"{meta.path}`")
    label = read_checked(group[schema.LABEL], 0, meta.n_rows, store=meta.path, name=schema.LABEL)
    case = read_checked(group[schema.CASE], 0, meta.n_rows, store=meta.path, name=schema.CASE)
    if schema.FEATURES_DONE in meta.arrays:  # written by the feature stage: every shard must be encoded
        _require_markers(group, meta, schema.FEATURES_DONE, "features of {n} of {total} shards are not encoded",
                         f"finish them with `python -m features encode --store {meta.path}`")
    if case.size and (case.min() < 0 or case.max() >= len(meta.cases)):
        raise StoreError(f"store {meta.path!r}: {schema.CASE!r} values outside 0..{len(meta.cases) - 1}")
    if str(meta.path) not in _ROWS_CHECKED:  # once per process: split_rows reads the index several times
        check_rows_as_planned(group, meta, label, case)
        _ROWS_CHECKED.add(str(meta.path))
    hosts = np.array([c["host"] for c in meta.cases])
    detectors = np.array([str(c.get("detector", "")).upper() for c in meta.cases])
    dopants = np.array([str(c.get("dopant", "")) for c in meta.cases])
    return StoreIndex(meta, label, case, hosts, detectors, dopants)


def _require_markers(group, meta: StoreMeta, name: str, what: str, repair: str) -> None:
    """``StoreError`` unless every entry of the done-marker array ``name`` is 1: ``what`` (formatted with ``n``
    unset and ``total`` entries), the first unset ones and the ``repair`` command."""
    done = read_checked(group[name], 0, group[name].shape[0], store=meta.path, name=name)
    if not (done == 1).all():
        missing = np.flatnonzero(done != 1)
        raise StoreError(f"store {meta.path!r}: {what.format(n=len(missing), total=len(done))} "
                         f"(first: {missing[:5].tolist()}); {repair}")


def check_rows_as_planned(group, meta: StoreMeta, label: np.ndarray, case: np.ndarray, stream=None) -> float:
    """What ``python -m simulate verify`` checks of the rows training reads, before the first step: every
    simulation task marked done, and ``label``, ``case`` and ``environment`` of every row equal to what the plan
    of the store's own config puts there (a missing shard reads as zeros, a shard moved to other rows holds
    another environment's values). ``CorruptDataError`` (exit 3) naming the first bad shard and the repair
    command. A store without a simulation config (``training.synthetic``) is checked for labels that match
    their environments only. Prints the cost; returns the seconds taken."""
    from contract.environments import ENVIRONMENTS
    from simulate.verify import store_plan

    started = time.perf_counter()
    if schema.has_array(group, schema.TASK_DONE):
        _require_markers(group, meta, schema.TASK_DONE, "{n} of {total} simulation tasks are not marked done",
                         f"finish them with `python -m simulate run --resume` or check with "
                         f"`python -m simulate verify {meta.path}`")
    env = None
    if schema.has_array(group, schema.ENVIRONMENT):
        env = read_checked(group[schema.ENVIRONMENT], 0, meta.n_rows, store=meta.path, name=schema.ENVIRONMENT)
    plan = store_plan(group, meta.path)[2] if isinstance(group.attrs.get(schema.ATTR_CONFIG), dict) else None
    found = {schema.LABEL: label, schema.CASE: case, schema.ENVIRONMENT: env}
    if plan is not None and plan.n_rows == meta.n_rows:
        bad = first_unplanned_shard(plan, found)
        if bad is not None:
            _not_as_planned(meta.path, *bad, plan.rows_per_shard, "the plan of the store's config puts there")
    elif env is not None:  # no plan: each row's label must be its environment's class
        env_label = np.array([e.label for e in ENVIRONMENTS], dtype=np.int64)
        bad = np.flatnonzero((env >= len(env_label)) | (env_label[np.minimum(env, len(env_label) - 1)] != label))
        if bad.size:
            step = meta.rows_per_shard
            _not_as_planned(meta.path, schema.LABEL, int(bad[0]) - int(bad[0]) % step, step,
                            "their environments' classes give")
    took = time.perf_counter() - started
    print(f"data check: {meta.n_rows} rows, labels/cases/environments as planned, markers set ({took:.3f} s, "
          f"{took / max(meta.n_rows, 1) * 1e6:.2f} s per million rows)", file=sys.stdout if stream is None else stream)
    return took


def first_unplanned_shard(plan, found: dict) -> tuple[str, int] | None:
    """(array, first row) of the first shard whose ``label``/``case``/``environment`` (``found``: name -> (N,)
    array, or None when absent) differ from what ``plan`` puts there; None when every row is as planned."""
    from simulate.verify import expected_rows

    step = plan.rows_per_shard
    for task in range(len(plan.tasks)):
        for position in range(len(plan.environments_of(plan.tasks[task]))):  # an undoped task has fewer
            start = plan.shard_start(plan.tasks[task], position)
            for name, expected in expected_rows(plan, task, position).items():
                if found[name] is not None and not np.array_equal(found[name][start:start + step], expected):
                    return name, start
    return None


_DIGESTS_CHECKED: set[tuple[str, int]] = set()


def _check_digests(path, block: np.ndarray, start: int, step: int, digests: np.ndarray) -> None:
    """``CorruptDataError`` when a whole feature shard of ``block`` (rows from ``start``) differs from the digest
    written with it (a shard moved to other rows, like ``python -m features verify``); each shard once a process."""
    for first in range(start, start + len(block), step):
        shard = first // step
        if (str(path), shard) in _DIGESTS_CHECKED:
            continue
        rows = block[first - start:first - start + step]
        if not np.isfinite(rows).all():  # reported below as a damaged shard marked encoded
            continue
        problem = schema.digest_problem(digests[shard], first, rows)
        if problem and int(digests[shard]) != 0:  # 0: encoded before digests; the row checks still hold
            raise CorruptDataError(f"store {str(path)!r}: array {schema.FEATURES!r} shard {shard} (rows {first}-"
                                   f"{first + step - 1}): {problem}; run `{repair_command(path, schema.FEATURES)}`")
        _DIGESTS_CHECKED.add((str(path), shard))


def _not_as_planned(path, name: str, start: int, step: int, source: str) -> None:
    shard = start // step
    raise CorruptDataError(f"store {str(path)!r}: array {name!r} shard {shard} (rows {start}-{start + step - 1}) "
                           f"holds values other than {source} (a missing or moved shard?); run "
                           f"`{repair_command(path, name)}`")


def read_rows(path: str | Path, rows: np.ndarray, columns: list[int], block_rows: int = 1 << 20) -> np.ndarray:
    """Read ``features[rows][:, columns]`` as (len(rows), len(columns)) float32, block by block.

    ``rows`` must be sorted ascending. Only one block of ``block_rows`` rows is held besides the result,
    so a DDP rank holds its shard, not the whole store.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and np.any(np.diff(rows) < 0):
        raise ValueError("rows must be sorted ascending")
    group = schema.open_group(path)
    array = group[schema.FEATURES]
    out = np.empty((rows.size, len(columns)), dtype=np.float32)
    if rows.size == 0:
        return out
    cols = np.asarray(columns)
    step = rows_per_stored_block(array)
    block_rows = max(step, block_rows - block_rows % step)  # whole shards, so each can be checked against its digest
    digests = None
    if schema.has_array(group, schema.digest_name(schema.FEATURES)):
        digest_array = group[schema.digest_name(schema.FEATURES)]
        digests = read_checked(digest_array, 0, digest_array.shape[0], store=path,
                               name=schema.digest_name(schema.FEATURES))
    filled = 0
    for start in range(int(rows[0]) - int(rows[0]) % block_rows, int(rows[-1]) + 1, block_rows):
        lo, hi = np.searchsorted(rows, [start, start + block_rows])
        if hi == lo:
            continue
        block = read_checked(array, start, min(start + block_rows, array.shape[0]), store=path, name=schema.FEATURES)
        if digests is not None:
            _check_digests(path, block, start, step, digests)
        out[filled : filled + hi - lo] = block[rows[lo:hi] - start][:, cols]
        filled += hi - lo
    if not np.isfinite(out).all():
        bad = rows[np.flatnonzero(~np.isfinite(out).all(axis=1))[:5]]
        if schema.FEATURES_DONE in group.array_keys():  # marked encoded, yet NaN: a damaged (or deleted) shard
            step = rows_per_stored_block(array)
            shard = int(bad[0]) // step
            raise CorruptDataError(f"store {str(path)!r}: array {schema.FEATURES!r} shard {shard} (rows "
                                   f"{shard * step}-{min(array.shape[0], (shard + 1) * step) - 1}) holds NaN or inf "
                                   f"in rows {bad.tolist()} although it is marked encoded: it is damaged; run "
                                   f"`{repair_command(path, schema.FEATURES)}`")
        raise StoreError(f"store {str(path)!r}: non-finite features in rows {bad.tolist()}: were all shards "
                         f"encoded? (`python -m features encode --store {path}`)")
    return out
