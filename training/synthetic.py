"""A small synthetic feature store in the README layout, for tests and benchmarks of the training stage.

The 31 columns follow the feature stage's order (context 23, Zernike 6, site symmetry 2). The classes are
separable only with context: the Zernike values of class c in case k are ``mean[c] + shift[k] + noise``,
where ``shift[k]`` is a linear function of case k's context vector. Without the context columns the
per-case shifts blur the classes together (as in the paper, where contrast alone is ambiguous).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

CONTEXT_NAMES = (
    [f"context_{el}_shell_{s}" for el in ("M", "X", "D") for s in "KLMNOP"]
    + ["context_detector_HAADF", "context_detector_MAADF"]
    + [f"context_energy_{e}keV" for e in (60, 80, 100)]
)
ZERNIKE_NAMES = [f"zernike_n{n}_m0" for n in (0, 2, 4, 6, 8, 10)]
SYMMETRY_NAMES = ["site_symmetry_bright", "site_symmetry_dim"]
FEATURE_NAMES = CONTEXT_NAMES + ZERNIKE_NAMES + SYMMETRY_NAMES


def synthetic_features(
    n_rows: int, hosts=("MoS2", "WSe2", "NbSe2"), seed: int = 0, noise: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """(features (N, 31) float32, label (N,) uint8, case (N,) int32, cases) with context-dependent classes."""
    rng = np.random.default_rng(seed)
    cases = [
        {"host": h, "metal": h[:-2], "chalcogen": h[-2:-1], "dopant": "V", "beam_energy_kev": e, "detector": d}
        for h in hosts for e in (60, 80) for d in ("HAADF", "MAADF")
    ]
    n_cases = len(cases)
    case_context = rng.random((n_cases, 23)).astype(np.float32)
    for k, c in enumerate(cases):  # real one-hot layout in the last 5 context columns
        case_context[k, 18:] = 0
        case_context[k, 18 + ("HAADF", "MAADF").index(c["detector"])] = 1
        case_context[k, 20 + (60, 80, 100).index(c["beam_energy_kev"])] = 1
    class_mean = rng.normal(0, 1.0, (5, 6)).astype(np.float32)
    mixing = rng.normal(0, 1.0, (23, 6)).astype(np.float32)
    shift = case_context @ mixing
    shift = 2.0 * (shift - shift.mean(0)) / shift.std(0)  # case shifts larger than the class spread
    case = rng.integers(0, n_cases, n_rows).astype(np.int32)
    label = rng.choice(5, n_rows, p=[0.4, 0.1, 0.1, 0.3, 0.1]).astype(np.uint8)
    zernike = class_mean[label] + shift[case] + noise * rng.normal(size=(n_rows, 6)).astype(np.float32)
    metal_site = (label >= 3).astype(np.float32)
    symmetry = np.stack([metal_site, 1 - metal_site], axis=1)
    features = np.concatenate([case_context[case], zernike, symmetry], axis=1).astype(np.float32)
    return features, label, case, cases


def write_synthetic_store(
    path: str | Path, n_rows: int = 4000, hosts=("MoS2", "WSe2", "NbSe2"), seed: int = 0, rows_per_shard: int = 500
) -> str:
    """Write ``features``, ``label``, ``case`` and the group attributes to a new zarr v3 store at ``path``."""
    import zarr

    features, label, case, cases = synthetic_features(n_rows, hosts, seed)
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.attrs.update({"cases": cases, "rows_per_shard": rows_per_shard, "synthetic": True})
    arr = group.create_array("features", shape=features.shape, dtype="float32", chunks=(rows_per_shard, 31))
    arr[:] = features
    arr.attrs["feature_names"] = FEATURE_NAMES
    group.create_array("label", shape=label.shape, dtype="uint8", chunks=(rows_per_shard,))[:] = label
    group.create_array("case", shape=case.shape, dtype="int32", chunks=(rows_per_shard,))[:] = case
    return str(path)
