"""Score a classified image against its ground truth (paper section 6): column recall, position error, Cohen's
kappa over the 5 classes and the defect F1 of the defect/non-defect recast.

``match_sites`` and ``score_sites`` are pure; ``run_score`` reads ``sites.csv`` + ``summary.json`` (from
``inference classify``) and ``truth.csv`` + ``truth.json`` (from ``simulate fullfield``).

Only true columns at least the border margin (√3·a/2) inside the scanned area count, the same sites that
``classify`` counts, and (in a distorted field) only those of the ``lattice`` region, not the ones in a hole or
under contamination; predictions on the border may still match them.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from contract.jsonio import json_text


def match_sites(pred_xy: np.ndarray, true_xy: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of (P, 2) predictions to (T, 2) truths, nearest first, within ``tolerance``.
    Returns (T,) index of the matched prediction (-1: none) and (T,) distance (inf: none)."""
    pred_xy, true_xy = np.asarray(pred_xy, float).reshape(-1, 2), np.asarray(true_xy, float).reshape(-1, 2)
    match = np.full(len(true_xy), -1)
    dist = np.full(len(true_xy), np.inf)
    if len(pred_xy) == 0 or len(true_xy) == 0:
        return match, dist
    k = min(3, len(pred_xy))
    d, idx = cKDTree(pred_xy).query(true_xy, k=k, distance_upper_bound=tolerance)
    d, idx = d.reshape(len(true_xy), k), idx.reshape(len(true_xy), k)
    taken = np.zeros(len(pred_xy), dtype=bool)
    for t, j in sorted(((t, j) for t in range(len(true_xy)) for j in range(k) if np.isfinite(d[t, j])),
                       key=lambda tj: d[tj]):
        if match[t] < 0 and not taken[idx[t, j]]:
            match[t], dist[t] = idx[t, j], d[t, j]
            taken[idx[t, j]] = True
    return match, dist


def score_sites(pred_xy, pred_label, true_xy, true_label, tolerance_px: float, pixel_size_angstrom: float,
                pred_sublattice=None, true_sublattice=None, n_pred_counted: int | None = None) -> dict:
    """Recall, precision (over ``n_pred_counted`` predictions, default all), position error (pm), Cohen's
    kappa over the 5 classes, defect F1 and (when both are given) sublattice agreement on the matched
    columns."""
    import torch  # deferred: torch (seconds); labelling imports this module at top
    from torchmetrics.functional.classification import multiclass_cohen_kappa  # deferred: as torch

    from kernels.metrics import defect_f1  # deferred: imports torch

    match, dist = match_sites(pred_xy, true_xy, tolerance_px)
    ok = match >= 0
    true_label = np.asarray(true_label, dtype=np.int64)
    pred_matched = np.asarray(pred_label, dtype=np.int64)[match[ok]]
    out = {"n_true": int(len(true_xy)), "n_pred": int(len(pred_xy)), "n_matched": int(ok.sum()),
           "recall": float(ok.mean()) if len(ok) else float("nan"),
           "precision": (float(min(ok.sum() / (n_pred_counted or len(pred_xy)), 1.0)) if len(pred_xy)
                         else float("nan")),
           "tolerance_px": float(tolerance_px),
           "position_error_pm_mean": float(dist[ok].mean() * pixel_size_angstrom * 100) if ok.any() else None,
           "position_error_pm_max": float(dist[ok].max() * pixel_size_angstrom * 100) if ok.any() else None}
    if ok.any():
        p, t = torch.from_numpy(pred_matched), torch.from_numpy(true_label[ok])
        out["accuracy"] = float((p == t).float().mean())
        out["cohen_kappa"] = float(multiclass_cohen_kappa(p, t, 5))
        out["f1_defect"] = defect_f1(p, t)
        out["confusion_matrix"] = np.bincount(t.numpy() * 5 + p.numpy(), minlength=25).reshape(5, 5).tolist()
        if pred_sublattice is not None and true_sublattice is not None:
            out["sublattice_agreement"] = float(np.mean(np.asarray(pred_sublattice)[match[ok]]
                                                        == np.asarray(true_sublattice)[ok]))
    return out


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_score(pred_dir, truth_dir, tolerance_fraction: float = 0.3) -> dict:
    """Read both directories, restrict the truth to the counted area, match within ``tolerance_fraction``
    x a/√3 (the nearest-column distance), score, and write ``score.json`` into ``pred_dir``."""
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    summary = json.loads((pred_dir / "summary.json").read_text())
    pred = _read_csv(pred_dir / "sites.csv")
    truth = _read_csv(truth_dir / "truth.csv")
    truth_meta = json.loads((truth_dir / "truth.json").read_text())
    px_true = float(truth_meta["pixel_size_angstrom"])
    h, w = summary["image_shape"]
    margin = float(summary["border_margin_px"])
    # truth positions in the predicted image's pixels (they are the same image: ratio 1 unless the pixel size
    # was inferred, which rescales Å but not pixels)
    txy = np.array([[float(r["y_px"]), float(r["x_px"])] for r in truth]).reshape(-1, 2)
    tlab = np.array([int(r["label"]) for r in truth])
    inside = ((txy[:, 0] >= margin) & (txy[:, 0] <= h - 1 - margin) & (txy[:, 1] >= margin)
              & (txy[:, 1] <= w - 1 - margin))
    # a distorted field marks the columns in its hole or under its contamination: no lattice to score there
    inside &= np.array([r.get("region", "lattice") in ("lattice", "") for r in truth], dtype=bool).reshape(-1)
    pxy = np.array([[float(r["y_px"]), float(r["x_px"])] for r in pred]).reshape(-1, 2)
    plab = np.array([int(r["label"]) for r in pred])
    tol = tolerance_fraction * float(summary["lattice_constant_px"]) / 3 ** 0.5
    psub = np.array([r["sublattice"] for r in pred])
    tsub = np.array([r["sublattice"] for r in truth])
    n_counted = sum(1 for r in pred if r.get("on_border") == "0")
    out = score_sites(pxy, plab, txy[inside], tlab[inside], tol, px_true, psub, tsub[inside], n_counted)
    out["lattice_constant_px"] = summary["lattice_constant_px"]
    out["position_error_fraction_of_a"] = (None if out["position_error_pm_mean"] is None else
                                           out["position_error_pm_mean"] / 100 / px_true / summary["lattice_constant_px"])
    a_true = truth_meta.get("lattice_constant_angstrom")
    if a_true:
        out["lattice_constant_relative_error"] = summary["lattice_constant_px"] * px_true / a_true - 1
    (pred_dir / "score.json").write_text(json_text(out, indent=2))
    return out
