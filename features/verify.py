"""``python -m features verify --store STORE [--repair]``: read every shard of a store's feature arrays, check
it, and repair it by re-encoding exactly the bad shards.

Checked (the simulation's own arrays are ``python -m simulate verify``'s):

* ``features`` and ``features_done`` exist with the shape, dtype and shard size the store's rows give, and
  ``features.attrs`` hold this version's ``feature_names`` and a well-formed ``site_symmetry`` table;
* every ``features_done`` marker decodes and is 1 (0: the shard is not encoded);
* every ``features`` shard decodes (crc32c checksums of the shard index and, in stores encoded since checksums
  were added, of every chunk), is finite, and its context and site-symmetry columns are exactly what the
  row's case and environment give (the Zernike columns are only checked for being finite: recomputing them
  costs as much as encoding).

``--repair`` sets the markers of bad shards to 0, deletes their files and runs ``features encode``, whose
resume rule re-encodes exactly the shards marked 0, so the arrays end byte-identical to an undamaged encoding.
When the arrays themselves or their attributes are damaged, both are recreated and every shard is re-encoded.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from cluster import open_client, track_items
from contract import store as schema
from contract.errors import CorruptDataError
from contract.features import (
    CONTEXT_COLUMNS,
    FEATURE_NAMES,
    N_FEATURES,
    SITE_SYMMETRY_COLUMNS,
    site_symmetry_rule_problem,
)
from contract.store import StoreError, read_checked, repair_command
from contract.verify import (
    Finding,
    Report,
    marker_problem,
    non_finite_rows,
    open_checked,
    read_shard,
    remove_blocks,
)

from .encode import _sublattice, encode_store, store_plan


def _table_problem(table, n_cases: int) -> str | None:
    if table is None:
        return "missing"
    try:
        t = np.asarray(table["table"], dtype=np.float64)
    except Exception as err:
        return f"unreadable ({type(err).__name__})"
    if t.shape != (n_cases, 2, 2) or not np.isin(t, (0.0, 1.0)).all():
        return f"table of shape {t.shape}, expected ({n_cases}, 2, 2) of 0/1 flags"
    stale = site_symmetry_rule_problem(table)
    return f"stale: {stale}; re-encode every shard" if stale else None


def verify_features(path: str | Path) -> tuple[Report, dict]:
    """Check the feature arrays of the store at ``path``; returns (report, context for ``repair_features``).

    ``StoreError`` (exit 2) when the store is unusable for encoding or has no feature arrays;
    ``CorruptDataError`` (exit 3) when a simulation array it needs (``case``, ``environment``) is damaged."""
    plan = store_plan(path)
    meta, name = plan.meta, plan.meta.path
    group = schema.open_group(path)
    keys = set(group.array_keys())
    if schema.FEATURES not in keys and schema.FEATURES_DONE not in keys:
        raise StoreError(f"store {name!r} has no features yet: run `python -m features encode --store {name}`")
    findings: list[Finding] = []
    n_shards = meta.n_shards
    features = open_checked(group, schema.FEATURES, (meta.n_rows, N_FEATURES), schema.FEATURE_DTYPE,
                            meta.rows_per_shard, findings, repairable=True)
    markers = open_checked(group, schema.FEATURES_DONE, (n_shards,), schema.MARKER_DTYPE, 1, findings,
                           repairable=True)
    table = None
    if features is not None:
        attrs = dict(features.attrs)
        if tuple(attrs.get(schema.ATTR_FEATURE_NAMES) or ()) != FEATURE_NAMES:
            findings.append(Finding(schema.FEATURES, f"attrs[{schema.ATTR_FEATURE_NAMES!r}] missing or not this "
                                    "version's layout"))
        problem = _table_problem(attrs.get(schema.ATTR_SITE_SYMMETRY), len(plan.context))
        if problem:
            findings.append(Finding(schema.FEATURES, f"attrs[{schema.ATTR_SITE_SYMMETRY!r}] {problem}"))
        else:
            table = np.asarray(attrs[schema.ATTR_SITE_SYMMETRY]["table"], dtype=np.float32)
    context = {"whole": bool(findings), "shards": set(), "n_shards": n_shards}
    if context["whole"]:  # arrays or attributes damaged: every shard is re-encoded
        checked = f"{meta.n_rows} rows, {n_shards} shards: feature arrays or their attributes unusable"
        return Report(name, checked, findings), context
    case_array, env_array = group[schema.CASE], group[schema.ENVIRONMENT]
    digests = None  # features encoded before shard digests: shards moved to other rows cannot be seen
    if schema.digest_name(schema.FEATURES) in keys:
        digests = open_checked(group, schema.digest_name(schema.FEATURES), (n_shards,), schema.DIGEST_DTYPE, 1,
                               findings, repairable=True)
        if digests is None:  # a damaged digest array: re-encode everything (which recreates it)
            context["whole"] = True
            return Report(name, f"{meta.n_rows} rows, {n_shards} shards: feature digests unusable", findings), context
    for k in track_items(range(n_shards), label="verify features", unit="shard"):
        start, stop = meta.shard_rows(k)
        before = len(findings)
        problem = marker_problem(read_shard(markers, schema.FEATURES_DONE, k, k + 1, k, None, findings))
        if problem:
            findings.append(Finding(schema.FEATURES_DONE, problem, k, None, unit="marker"))
        data = read_shard(features, schema.FEATURES, start, stop, k, None, findings)
        if data is not None and not problem and len(findings) == before:
            case = read_checked(case_array, start, stop, store=name, name=schema.CASE).astype(np.int64)
            env = read_checked(env_array, start, stop, store=name, name=schema.ENVIRONMENT)
            wrong = non_finite_rows(data)
            if wrong is None:
                site = table[case, _sublattice(plan.sublattice_of_environment, env, start)]
                n_ctx = int((data[:, CONTEXT_COLUMNS] != plan.context[case]).any(axis=1).sum())
                n_site = int((data[:, SITE_SYMMETRY_COLUMNS] != site).any(axis=1).sum())
                if n_ctx or n_site:
                    wrong = (f"{n_ctx} rows with context and {n_site} with site-symmetry columns other than their "
                             "case and environment give")
            if wrong is None and digests is not None:  # the shard's content tied to its rows
                stored = read_shard(digests, schema.digest_name(schema.FEATURES), k, k + 1, k, None, findings)
                wrong = None if stored is None else schema.digest_problem(stored[0], start, data)
            if wrong:
                findings.append(Finding(schema.FEATURES, wrong, k, (start, stop)))
        if len(findings) > before:
            context["shards"].add(k)
    checked = (f"{meta.n_rows} rows, {n_shards} shards x ({schema.FEATURES}, {schema.FEATURES_DONE}"
               + (f", {schema.digest_name(schema.FEATURES)})" if digests is not None else "; no shard digests)"))
    return Report(name, checked, findings), context


def repair_features(path: str | Path, context: dict, client, device: str = "cpu") -> Report:
    """Re-encode exactly the bad shards (all of them when the arrays are damaged); returns the new report."""
    group = schema.open_group(path, mode="r+")
    if context["whole"]:
        for array in (schema.FEATURES, schema.FEATURES_DONE, schema.digest_name(schema.FEATURES)):  # recreated
            shutil.rmtree(Path(path) / array, ignore_errors=True)
    else:
        bad = sorted(context["shards"])
        for k in bad:
            group[schema.FEATURES_DONE][k] = 0  # the resume rule: a shard whose marker is 0 is encoded
        remove_blocks(path, schema.FEATURES, group[schema.FEATURES], bad)
    encode_store(path, client, device=device)
    return verify_features(path)[0]


def verify_main(args) -> int:
    """``python -m features verify``: print the report; exit 3 naming the bad shards unless ``--repair``."""
    report, context = verify_features(args.store)
    if report.print_with("verify: OK, every feature shard decodes, is marked done and matches its case and "
                         "environment"):
        return 0
    bad = "all shards" if context["whole"] else f"{len(context['shards'])} shard(s) {sorted(context['shards'])}"
    if not args.repair:
        raise CorruptDataError(f"store {args.store!r}: {len(report.findings)} problem(s) in the feature arrays "
                               f"({bad}); repair with `{repair_command(args.store, schema.FEATURES)}` "
                               "(re-encodes exactly those shards)")
    with open_client(args.cluster, n_workers=args.n_workers, config_path=args.cluster_config) as client:
        after = repair_features(args.store, context, client, device=args.device)
    after.check_repaired()
    print(f"verify: repaired: re-encoded {bad}; the feature arrays verify OK")
    return 0
