"""Features and class probabilities of every located site (``classify_sites``), and which sublattice is the metal.

Which of the two sublattices is the metal cannot be told from geometry (in projection they are equivalent)
nor safely from brightness (the metal column is the brighter in HAADF, the chalcogen pair can be in MAADF: WSe2
at 60 keV in docs/frame-matching.md, "Blur calibration"). With
``metal_sublattice="auto"`` both assignments are tried and the one under which the model gives the higher
mean log-probability to sublattice-consistent classes (metal sites: M or D; chalcogen sites: X2, VacX,
VacX2) is kept. The features do not depend on that choice (the site-symmetry flags follow brightness), so
the model runs once.
"""
from __future__ import annotations

import time

import numpy as np

from contract.classes import CHALCOGEN_SITE_CLASSES, CLASS_IDS, CLASS_NAMES, METAL, METAL_SITE_CLASSES
from contract.context import absent_classes
from features.site_symmetry import central_intensity, typical_intensities

from .classifier import predict_probabilities
from .patches import cut_patches, site_features
from .sites import Sites


def choose_metal_sublattice(probs: np.ndarray, fitted_sublattice: np.ndarray) -> int:
    """The fitted sublattice index (0/1) that is the metal one: higher mean log-probability of
    sublattice-consistent classes."""
    p_metal = probs[:, list(METAL_SITE_CLASSES)].sum(axis=1).clip(1e-12, 1)
    p_chal = probs[:, list(CHALCOGEN_SITE_CLASSES)].sum(axis=1).clip(1e-12, 1)
    score = [np.where(fitted_sublattice == m, np.log(p_metal), np.log(p_chal)).mean() for m in (0, 1)]
    return int(np.argmax(score))


def classify_sites(image: np.ndarray, sites: Sites, model, context: dict, patch_size_px: int,
                   metal_sublattice: str = "auto", feature_columns=None) -> dict:
    """Features and probabilities of every site. ``feature_columns``: the stored columns the model reads
    (default all 31). ``metal_sublattice``: ``auto`` (module docstring), ``brighter`` or ``dimmer``. Returns a
    dict of arrays: sublattice (0 metal, 1 chalcogen), probs (N, 5), label (N,), entropy (N,) nats, the 31
    features, plus timings and ``masked_classes`` (names). An undoped context (dopant ``"none"``) masks the
    dopant class: its probability is 0 and the other four are renormalised, so no site is called D."""
    if metal_sublattice not in ("auto", "brighter", "dimmer"):
        raise ValueError(f"metal_sublattice must be auto, brighter or dimmer, got {metal_sublattice!r}")
    t0 = time.perf_counter()
    patches = cut_patches(image, sites.positions, sites.lattice_constant_px, patch_size_px, sites.transforms)
    t1 = time.perf_counter()
    # the flags depend only on which sites are brighter, so sublattice 0/1 of the geometry can stand in here
    feats = site_features(patches, sites.fitted_sublattice, metal=context["metal"], chalcogen=context["chalcogen"],
                          dopant=context["dopant"], detector=context["detector"],
                          beam_energy_kev=context["beam_energy_kev"])
    t2 = time.perf_counter()
    x = feats if feature_columns is None else np.ascontiguousarray(feats[:, list(feature_columns)])
    masked = [CLASS_IDS[n] for n in absent_classes(context["dopant"])]  # D when undoped
    probs = predict_probabilities(model, x, masked_classes=masked)
    t3 = time.perf_counter()
    centre = central_intensity(patches)
    if metal_sublattice == "auto":
        metal = choose_metal_sublattice(probs, sites.fitted_sublattice)
    else:  # the sublattice of the brighter typical column (the site-symmetry rule's)
        bright = int(np.argmax(typical_intensities(centre, sites.fitted_sublattice)))
        metal = bright if metal_sublattice == "brighter" else 1 - bright
    sublattice = np.where(sites.fitted_sublattice == metal, METAL, 1 - METAL)
    entropy = -(probs * np.log(probs.clip(1e-30))).sum(axis=1)
    return {"sublattice": sublattice, "probs": probs, "label": probs.argmax(axis=1), "entropy": entropy,
            "features": feats, "centre": centre, "patches": patches,
            "masked_classes": [CLASS_NAMES[c] for c in masked],
            "timings_s": {"patches": t1 - t0, "features": t2 - t1, "model": t3 - t2}}
