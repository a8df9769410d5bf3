"""Scores of the rVAE against known truth: circular correlation after aligning offset and sign and folding by
symmetry, leak of a label into latents (cross-validated logistic regression), correlation with a scalar, and
localisation of defects by a map (ROC AUC, distance of the strongest response). Pure functions.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import circmean

from kernels.geometry import periodic_delta


def wrap(angle):
    """Angles into (-π, π]."""
    return np.angle(np.exp(1j * np.asarray(angle, dtype=np.float64)))


def circular_mean(angle) -> float:
    """Circular mean of angles [rad], in [-π, π)."""
    return float(circmean(np.asarray(angle, dtype=np.float64), high=np.pi, low=-np.pi))


def circular_correlation(a, b) -> float:
    """Fisher–Lee circular correlation ρ_T of two angle samples, in [-1, 1]: +1 when b = a + c (rotation), -1
    when b = -a + c (reflection), 0 without association. Unlike the Jammalamadaka–SenGupta coefficient it is
    defined for angles spread over the whole circle. Computed in O(n) from the pair-sum identities of
    Σ_{i<j} sin(a_i - a_j) sin(b_i - b_j)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    sa, ca, sb, cb = np.sin(a), np.cos(a), np.sin(b), np.cos(b)
    num = np.sum(sa * sb) * np.sum(ca * cb) - np.sum(sa * cb) * np.sum(ca * sb)
    den = (np.sum(sa**2) * np.sum(ca**2) - np.sum(sa * ca) ** 2) \
        * (np.sum(sb**2) * np.sum(cb**2) - np.sum(sb * cb) ** 2)
    return float(num / np.sqrt(den)) if den > 0 else 0.0


def aligned_angle_agreement(predicted, truth, period: int = 1) -> dict:
    """Compare angles defined up to a global offset, a sign (mirror) and an n-fold symmetry: both are folded
    (ψ = n·φ), the sign s and offset δ that best map s·ψ_pred + δ onto ψ_true are chosen, and the agreement is
    reported as the (Fisher–Lee) circular correlation of s·ψ_pred with ψ_true (invariant to δ), the mean
    resultant length of the residual (1: perfect) and the median absolute residual in degrees of φ (divided by n)."""
    p = period * np.asarray(predicted, dtype=np.float64)
    t = period * np.asarray(truth, dtype=np.float64)
    best = None
    for sign in (1, -1):
        offset = circular_mean(t - sign * p)
        resid = wrap(sign * p + offset - t)
        r = float(np.abs(np.mean(np.exp(1j * resid))))
        if best is None or r > best["mean_resultant_length"]:
            best = {"sign": sign, "offset_rad": offset / period, "mean_resultant_length": r,
                    "median_abs_error_deg": float(np.degrees(np.median(np.abs(resid))) / period),
                    "circular_correlation": circular_correlation(sign * p, t)}
    best["n"] = int(len(p))
    return best


def grain_angle_errors(predicted, truth, grain, period: int = 1) -> dict:
    """Angle error per grain and per atom [deg of φ], after one offset for all atoms (the circular mean of the
    folded residual) and no sign choice: the model's angle and the truth turn the same way, so a mirrored
    answer counts as wrong. ``per_grain_deg``: |circular mean of the residual| in each grain (the orientation
    of the grain as a whole); ``per_atom_median_deg`` and ``per_atom_rms_deg``: of |residual| over all atoms.
    Angles are folded by ``period`` (ψ = n·φ)."""
    p = period * np.asarray(predicted, dtype=np.float64)
    t = period * np.asarray(truth, dtype=np.float64)
    g = np.asarray(grain)
    resid = wrap(p + circular_mean(t - p) - t)
    per_grain = {int(k): float(np.degrees(abs(circular_mean(resid[g == k]))) / period) for k in np.unique(g)}
    return {"per_grain_deg": per_grain, "max_grain_deg": max(per_grain.values(), default=float("nan")),
            "per_atom_median_deg": float(np.degrees(np.median(np.abs(resid))) / period),
            "per_atom_rms_deg": float(np.degrees(np.sqrt(np.mean(resid**2))) / period), "n": int(len(p))}


def label_predictability(features: np.ndarray, labels: np.ndarray, seed: int = 0, folds: int = 5) -> float:
    """Balanced accuracy of a cross-validated logistic regression predicting ``labels`` from ``features``
    (standardised); chance is 1 / number of classes."""
    from sklearn.linear_model import LogisticRegression  # deferred: sklearn imports slowly (seconds)
    from sklearn.model_selection import StratifiedKFold, cross_val_score  # deferred: sklearn imports slowly (seconds)
    from sklearn.pipeline import make_pipeline  # deferred: sklearn imports slowly (seconds)
    from sklearn.preprocessing import StandardScaler  # deferred: sklearn imports slowly (seconds)

    x = np.asarray(features, dtype=np.float64).reshape(len(labels), -1)
    y = np.asarray(labels)
    folds = max(2, min(folds, int(np.bincount(np.unique(y, return_inverse=True)[1]).min())))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(model, x, y, cv=cv, scoring="balanced_accuracy")))


def best_correlation(features: np.ndarray, target: np.ndarray) -> dict:
    """The feature column with the largest |Pearson r| with ``target``, and the cross-validated R² of a
    linear fit of ``target`` on all columns."""
    from sklearn.linear_model import LinearRegression  # deferred: sklearn imports slowly (seconds)
    from sklearn.model_selection import KFold, cross_val_score  # deferred: sklearn imports slowly (seconds)

    x = np.asarray(features, dtype=np.float64).reshape(len(target), -1)
    t = np.asarray(target, dtype=np.float64)
    r = [float(np.corrcoef(x[:, j], t)[0, 1]) if x[:, j].std() > 0 else 0.0 for j in range(x.shape[1])]
    j = int(np.argmax(np.abs(r)))
    r2 = float(np.mean(cross_val_score(LinearRegression(), x, t, cv=KFold(5, shuffle=True, random_state=0),
                                       scoring="r2")))
    return {"column": j, "pearson_r": r[j], "abs_r": abs(r[j]), "cv_r2_all_columns": r2}


def defect_localisation(score_map: np.ndarray, defect_distance: np.ndarray, positive_within_angstrom: float,
                        negative_beyond_angstrom: float, positions: np.ndarray | None = None,
                        defects_xy: np.ndarray | None = None, extent: tuple[float, float] | None = None) -> dict:
    """How well a (H, W) score map localises defects.

    ``roc_auc``: positions within ``positive_within_angstrom`` of a defect (positives) against those beyond
    ``negative_beyond_angstrom`` (negatives), scored by the map (0.5: chance; 1: every positive above every
    negative). ``strongest_distance_angstrom``: distance from the map's maximum to the nearest defect.
    ``per_defect_distance_angstrom`` (with ``positions`` (H·W, 2), ``defects_xy`` (D, 2) and the periodic
    ``extent``): for each defect, the distance from it to the strongest response among the positions nearer to
    it than to any other defect.
    """
    from sklearn.metrics import roc_auc_score  # deferred: sklearn imports slowly (seconds)

    s = np.asarray(score_map, dtype=np.float64).ravel()
    d = np.asarray(defect_distance, dtype=np.float64).ravel()
    pos, neg = d <= positive_within_angstrom, d > negative_beyond_angstrom
    out = {"n_positive": int(pos.sum()), "n_negative": int(neg.sum())}
    sel = pos | neg
    out["roc_auc"] = float(roc_auc_score(pos[sel], s[sel])) if pos.any() and neg.any() else float("nan")
    out["strongest_distance_angstrom"] = float(d[np.argmax(s)])
    if positions is not None and defects_xy is not None and len(defects_xy):
        p = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
        dist = np.stack([np.hypot(*periodic_delta(p, q[None], extent).T) for q in np.asarray(defects_xy)], axis=1)
        owner = np.argmin(dist, axis=1)
        per = []
        for k in range(dist.shape[1]):
            mine = np.flatnonzero(owner == k)
            per.append(float(dist[mine[np.argmax(s[mine])], k]))
        out["per_defect_distance_angstrom"] = per
    return out
