"""A small synthetic feature store (layout: docs/store-and-contract.md), for tests and benchmarks of the training stage.

The 31 columns follow the feature stage's order (context 23, Zernike 6, site symmetry 2). The classes are
separable only with context: the Zernike values of class c in case k are ``mean[c] + shift[k] + noise``,
where ``shift[k]`` is a linear function of case k's context vector. Without the context columns the
per-case shifts blur the classes together (as in the paper, where contrast alone is ambiguous).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contract import store as schema
from contract.classes import METAL_SITE_CLASSES, N_CLASSES
from contract.context import BEAM_ENERGIES_KEV, CONTEXT_SIZE, DETECTOR_NAMES
from contract.features import FEATURE_NAMES, N_FEATURES, N_ZERNIKE, SITE_SYMMETRY_RULE_VERSION, assemble_features


def synthetic_features(
    n_rows: int, hosts=("MoS2", "WSe2", "NbSe2"), seed: int = 0, noise: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """(features (N, 31) float32, label (N,) uint8, case (N,) int32, cases) with context-dependent classes."""
    rng = np.random.default_rng(seed)
    from contract.catalog import load_catalog

    catalog = load_catalog()
    cases = [
        {"host": h, "metal": catalog.hosts[h].metal, "chalcogen": catalog.hosts[h].chalcogen, "dopant": "V",
         "beam_energy_kev": e, "detector": d}
        for h in hosts for e in BEAM_ENERGIES_KEV[:2] for d in DETECTOR_NAMES
    ]
    n_cases = len(cases)
    n_det = len(DETECTOR_NAMES)
    one_hot_start = CONTEXT_SIZE - n_det - len(BEAM_ENERGIES_KEV)
    case_context = rng.random((n_cases, CONTEXT_SIZE)).astype(np.float32)
    for k, c in enumerate(cases):  # real one-hot layout in the last 5 context columns
        case_context[k, one_hot_start:] = 0
        case_context[k, one_hot_start + DETECTOR_NAMES.index(c["detector"])] = 1
        case_context[k, one_hot_start + n_det + BEAM_ENERGIES_KEV.index(c["beam_energy_kev"])] = 1
    class_mean = rng.normal(0, 1.0, (N_CLASSES, N_ZERNIKE)).astype(np.float32)
    mixing = rng.normal(0, 1.0, (CONTEXT_SIZE, N_ZERNIKE)).astype(np.float32)
    shift = case_context @ mixing
    shift = 2.0 * (shift - shift.mean(0)) / shift.std(0)  # case shifts larger than the class spread
    case = rng.integers(0, n_cases, n_rows).astype(np.int32)
    label = rng.choice(N_CLASSES, n_rows, p=[0.4, 0.1, 0.1, 0.3, 0.1]).astype(np.uint8)
    zernike = class_mean[label] + shift[case] + noise * rng.normal(size=(n_rows, N_ZERNIKE)).astype(np.float32)
    metal_site = np.isin(label, METAL_SITE_CLASSES).astype(np.float32)
    symmetry = np.stack([metal_site, 1 - metal_site], axis=1)
    features = assemble_features(case_context[case], zernike, symmetry)
    return features, label, case, cases


def write_synthetic_store(
    path: str | Path, n_rows: int = 4000, hosts=("MoS2", "WSe2", "NbSe2"), seed: int = 0, rows_per_shard: int = 500
) -> str:
    """Write ``features``, ``label``, ``case`` and the group attributes to a new zarr v3 store at ``path``."""
    import zarr

    features, label, case, cases = synthetic_features(n_rows, hosts, seed)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs.update({schema.ATTR_CASES: cases, schema.ATTR_ROWS_PER_SHARD: rows_per_shard, "synthetic": True})
    arr = group.create_array(schema.FEATURES, shape=features.shape, dtype=schema.FEATURE_DTYPE,
                             chunks=(rows_per_shard, N_FEATURES))
    arr[:] = features
    arr.attrs[schema.ATTR_FEATURE_NAMES] = list(FEATURE_NAMES)
    # the metal sublattice is the brighter one in every synthetic case (synthetic_features' flags)
    arr.attrs[schema.ATTR_SITE_SYMMETRY] = {"rule": "synthetic: metal sites brighter",
                                            "rule_version": SITE_SYMMETRY_RULE_VERSION,
                                            "table": [[[1, 0], [0, 1]]] * len(cases)}
    for name, data in ((schema.LABEL, label), (schema.CASE, case)):
        group.create_array(name, shape=data.shape, dtype=schema.ROW_ARRAYS[name], chunks=(rows_per_shard,))[:] = data
    return str(path)
