"""Physical sanity checks of one classified frame: pure functions of per-site arrays, no I/O.

* ``class_order_check``: are the mean central intensities of the predicted classes in the order physics
  requires? On the chalcogen sublattice an intact X2 column is brighter than a single vacancy, which is brighter
  than an empty column, in any ADF detector. On the metal sublattice, in HAADF (intensity rising steeply and
  monotonically with Z), a dopant lighter than the host metal is dimmer than it and a heavier one brighter. A
  frame whose class means break that order is flagged: the classes cannot all be right (e.g. a model that calls
  intact columns of a noisy frame single vacancies gives a 'VacX' class as bright as X2).
* ``site_symmetry_check``: does the frame's brighter sublattice (its typical, i.e. median, column; see
  ``kernels.site_symmetry``) agree with the one the model was trained with for this context? And, in HAADF, is
  the frame's metal/chalcogen contrast above its background within the spread simulated frames show around the
  model's (``CONTRAST_SPREAD_LOG``)? The chalcogen classes (X2, VacX) rest on that contrast: a real frame whose
  contrast is off (ImageJ background subtraction, detector angles, a static-potential model of a thermal-diffuse
  signal) can have its intact columns called single vacancies with low entropy and the class order intact.
"""
from __future__ import annotations

import numpy as np

from contract.classes import CLASS_NAMES, SUBLATTICES
from contract.elements import atomic_number

MIN_SITES_PER_CLASS = 3
"""A class with fewer counted sites than this is left out of the order check (its mean says little)."""


def class_intensity_stats(centre: np.ndarray, label: np.ndarray) -> dict:
    """Per predicted class: number of sites, mean and standard error of the central intensity (image units)."""
    out = {}
    for c, name in enumerate(CLASS_NAMES):
        v = np.asarray(centre, dtype=np.float64)[np.asarray(label) == c]
        out[name] = {"n": int(len(v)), "mean": float(v.mean()) if len(v) else None,
                     "sem": float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None}
    return out


def expected_order(metal: str, dopant: str | None, detector: str) -> list[tuple[str, str, str]]:
    """Pairs (brighter class, dimmer class, why) that physics fixes for this context."""
    pairs = [("X2", "VacX", "a single vacancy holds one chalcogen atom of the pair"),
             ("VacX", "VacX2", "a double vacancy holds no atom")]
    if dopant and str(dopant).lower() != "none" and str(detector).upper() == "HAADF":
        z_m, z_d = atomic_number(metal), atomic_number(dopant)
        if z_d < z_m:
            pairs.append(("M", "D", f"in HAADF a lighter dopant ({dopant}, Z={z_d}) is dimmer than {metal} (Z={z_m})"))
        elif z_d > z_m:
            pairs.append(("D", "M", f"in HAADF a heavier dopant ({dopant}, Z={z_d}) is brighter than {metal} "
                                    f"(Z={z_m})"))
    return pairs


def class_order_check(centre: np.ndarray, label: np.ndarray, *, metal: str, dopant: str | None,
                      detector: str) -> dict:
    """``{"ok", "checked", "violations", "class_means"}``: every expected pair (``expected_order``) whose two
    classes have at least ``MIN_SITES_PER_CLASS`` sites is checked; a violation is a pair whose supposedly dimmer
    class has a mean central intensity at least as high as the brighter one's. ``centre`` and ``label`` are the
    counted sites' (N,) central intensities and predicted classes."""
    stats = class_intensity_stats(centre, label)
    checked, violations = [], []
    for bright, dim, why in expected_order(metal, dopant, detector):
        if stats[bright]["n"] < MIN_SITES_PER_CLASS or stats[dim]["n"] < MIN_SITES_PER_CLASS:
            continue
        ratio = stats[dim]["mean"] / stats[bright]["mean"] if stats[bright]["mean"] else None
        row = {"brighter": bright, "dimmer": dim, "why": why, "dimmer_to_brighter_ratio": ratio}
        checked.append(row)
        if not stats[dim]["mean"] < stats[bright]["mean"]:
            violations.append(row)
    return {"ok": not violations, "checked": checked, "violations": violations, "class_means": stats,
            "min_sites_per_class": MIN_SITES_PER_CLASS}


def describe_violations(check: dict) -> str:
    """One sentence for notes, titles and the exit message."""
    parts = [f"{v['dimmer']} not dimmer than {v['brighter']} (ratio {v['dimmer_to_brighter_ratio']:.2f}; "
             f"{v['why']})" for v in check["violations"]]
    return "CLASS ORDER: " + "; ".join(parts) + ": these classes cannot all be right"


CONTRAST_SPREAD_LOG = 0.26
"""Largest ``|ln(frame ratio / model ratio)|`` of the intact metal/chalcogen columns measured between simulated
frames and their store (bench/every_host_detectors.py, 13 hosts x 2 detectors, 60 keV, rule-3 store ratios,
2026-12-07: -0.07 to +0.26 on raw counts; in HAADF -0.07 to +0.16 with the frame's background subtracted). A real
HAADF frame beyond it is flagged (``contrast_within_simulated_spread``)."""


def site_symmetry_check(centre: np.ndarray, sublattice: np.ndarray, model_case: dict | None,
                        background: float | None = None) -> dict:
    """Compare the frame's brighter sublattice (median central intensity of each sublattice, ``sublattice`` 0
    metal, 1 chalcogen as assigned) and its metal / chalcogen intensity ratio with those recorded for the model's
    training case (``training.module`` writes ``brighter_sublattice`` and ``metal_to_chalcogen_intensity``).
    ``agree`` is None when the model does not record them. ``background``: the frame's level between columns
    (image units; None where it cannot be compared, e.g. in MAADF, whose simulated frames carry a physical
    background of 35-65 % of a metal column): the ratio above it is compared with the model's
    (``CONTRAST_SPREAD_LOG``); ``contrast_within_simulated_spread`` is None when it is not compared."""
    centre = np.asarray(centre, dtype=np.float64)
    sublattice = np.asarray(sublattice)
    typical = [float(np.median(centre[sublattice == k])) if (sublattice == k).any() else None for k in (0, 1)]
    frame = None
    if None not in typical:
        frame = SUBLATTICES[0] if typical[0] >= typical[1] else SUBLATTICES[1]
    model = (model_case or {}).get("brighter_sublattice")
    model_ratio = (model_case or {}).get("metal_to_chalcogen_intensity")
    ratio = typical[0] / typical[1] if None not in typical and typical[1] else None
    above = gap = None
    if background is not None and None not in typical and min(typical) > background:
        above = (typical[0] - background) / (typical[1] - background)
        gap = float(np.log(above / model_ratio)) if model_ratio else None
    return {"frame_brighter_sublattice": frame, "model_brighter_sublattice": model,
            "frame_metal_to_chalcogen_intensity": ratio,
            "model_metal_to_chalcogen_intensity": model_ratio,
            "frame_background": background, "frame_metal_to_chalcogen_above_background": above,
            "log_contrast_gap": gap,
            "contrast_within_simulated_spread": None if gap is None else bool(abs(gap) <= CONTRAST_SPREAD_LOG),
            "agree": None if model is None or frame is None else frame == model}

