"""Features and class probabilities of every located site (``classify_sites``), and which sublattice is the metal.

Which of the two sublattices is the metal cannot be told from geometry (in projection they are equivalent)
nor safely from brightness (the metal column is the brighter in HAADF, the chalcogen pair can be in MAADF: WSe2
at 60 keV in docs/frame-matching.md, "Blur calibration"). With
``metal_sublattice="auto"`` both assignments are tried and the one under which the model gives the higher
mean log-probability to sublattice-consistent classes (metal sites: M or D; chalcogen sites: X2, VacX,
VacX2) is kept.

The site-symmetry flags follow the frame's own brightness (``kernels.site_symmetry``), so the features do not
depend on the assignment and the model runs once. For a context the model was trained on whose intact
metal/chalcogen contrast is clearly away from 1 (``CLEAR_CONTRAST_LOG_RATIO``), the frame's brighter or dimmer
sublattice is the metal, as that training case's order says, instead of the model's choice. Flags taken from the
training case instead of the frame were tried (2026-12-07, under site-symmetry rule 2, whose store ratios were
noisy): they mended NbS2 MAADF on the every-host bench but made the five-class model of
tests/test_site_symmetry_fields.py swap the sublattices of a WSe2 HAADF field (store ratio near 1), so they were
not kept. Once assigned, each site's probabilities are restricted to its
sublattice's classes (``restrict_to_sublattice``).
"""
from __future__ import annotations

import time

import numpy as np

from contract.classes import CHALCOGEN_SITE_CLASSES, CLASS_IDS, CLASS_NAMES, METAL, METAL_SITE_CLASSES
from contract.context import Case, absent_classes
from kernels.context import case_model_context, model_inputs
from kernels.patches import cut_patches, site_features
from kernels.site_symmetry import central_intensity, typical_intensities

from .classifier import predict_probabilities
from .sites import Sites


def restrict_to_sublattice(probs: np.ndarray, sublattice: np.ndarray,
                           masked_classes=()) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities given the site's sublattice: ``(N, 5), (N,) -> (N, 5) float32, (N,) bool``.

    A metal site holds M or D, a chalcogen site X2, VacX or VacX2, so once the sublattices are assigned the
    other classes are impossible: their probability is set to 0 and the rest renormalised (``masked_classes``,
    e.g. D when undoped, stay 0; a row whose possible classes all underflowed to 0 becomes uniform over them).
    The second array marks the sites whose model argmax was a class of the other sublattice: the model's own
    disagreement, reported, not hidden. Where a context's intact columns are nearly equally bright (MoS2, NbS2 in
    MAADF) the model called 7 of 17-19 X2 columns M before this (bench/every_host_detectors.py)."""
    probs = np.asarray(probs, dtype=np.float64)
    on_metal = np.asarray(sublattice) == METAL
    allowed = np.zeros(probs.shape, dtype=bool)
    allowed[np.ix_(on_metal, list(METAL_SITE_CLASSES))] = True
    allowed[np.ix_(~on_metal, list(CHALCOGEN_SITE_CLASSES))] = True
    off = ~allowed[np.arange(len(probs)), probs.argmax(axis=1)] if len(probs) else np.zeros(0, dtype=bool)
    allowed[:, list(masked_classes)] = False
    kept = np.where(allowed, probs, 0.0)
    total = kept.sum(axis=1, keepdims=True)
    kept = np.where(total > 0, kept / np.where(total > 0, total, 1.0), allowed / allowed.sum(axis=1, keepdims=True))
    return kept.astype(np.float32), off


CLEAR_CONTRAST_LOG_RATIO = 0.25
"""``|ln(metal / chalcogen)|`` of the training case's intact columns above which the frame's brightness names the
metal sublattice (ratio outside 0.78-1.28). Measured on bench/every_host_detectors.py (13 hosts x 2 detectors,
60 keV, static; bench/results/every-host-detectors-20261207T123318Z.json): with the store's ratio taken from its
noiseless clean patches (site-symmetry rule 3), a field's ratio at its true intact columns differed from it by
-0.07 to +0.26 in ln (mean +0.06) and crossed 1 in none of the 26 fields; so a case at |ln| >= 0.25 cannot swap by
that spread. Below the threshold the model's consistency decides (7 of the 26 fields, all with sublattice
agreement 1.0). Under rule 2 (the noisy patches' mean, whose random doses moved a case's ratio by up to 0.24 in
ln: WSe2 MAADF 0.77 -> 0.98) the model's consistency swapped NbSe2 MAADF (before this rule) and TaSe2 MAADF
(kappa -0.31)."""


def _consistency(probs: np.ndarray, on_metal: np.ndarray) -> float:
    """Mean log-probability of the sublattice-consistent classes (metal sites: M or D; chalcogen sites: X2,
    VacX, VacX2) when the sites ``on_metal`` are the metal ones."""
    p_metal = probs[:, list(METAL_SITE_CLASSES)].sum(axis=1).clip(1e-12, 1)
    p_chal = probs[:, list(CHALCOGEN_SITE_CLASSES)].sum(axis=1).clip(1e-12, 1)
    return float(np.where(on_metal, np.log(p_metal), np.log(p_chal)).mean())


def choose_metal_sublattice(probs: np.ndarray, fitted_sublattice: np.ndarray) -> int:
    """The fitted sublattice index (0/1) that is the metal one: higher mean log-probability of
    sublattice-consistent classes."""
    return int(np.argmax([_consistency(probs, fitted_sublattice == m) for m in (0, 1)]))


def classify_sites(image: np.ndarray, sites: Sites, model, context: Case, patch_size_px: int,
                   metal_sublattice: str = "auto", feature_columns=None, known_ratio: float | None = None,
                   context_encoding: str = "shells") -> dict:
    """Features and probabilities of every site. ``feature_columns``: the stored columns the model reads
    (default all 31), after the physical context block when ``context_encoding`` is ``physical``. ``context``: the frame's ``FrameContext`` (or any ``Case``). ``metal_sublattice``: ``auto`` (module docstring), ``brighter`` or ``dimmer``. Returns a
    dict of arrays: sublattice (0 metal, 1 chalcogen), probs (N, 5), label (N,), entropy (N,) nats, the 31
    features, plus timings and ``masked_classes`` (names). An undoped context (dopant ``"none"``) masks the
    dopant class: its probability is 0 and the other four are renormalised, so no site is called D.
    ``known_ratio``: the metal / chalcogen intensity ratio of this context's intact columns in the model's training
    store (None for an unseen context); when it is clearly away from 1
    (``CLEAR_CONTRAST_LOG_RATIO``) the metal sublattice under ``auto`` is the one the known order names (the frame's
    brighter or dimmer), not the model's choice; ``metal_sublattice_source`` in the result says which rule chose."""
    if metal_sublattice not in ("auto", "brighter", "dimmer"):
        raise ValueError(f"metal_sublattice must be auto, brighter or dimmer, got {metal_sublattice!r}")
    t0 = time.perf_counter()
    patches = cut_patches(image, sites.positions, sites.lattice_constant_px, patch_size_px, sites.transforms)
    t1 = time.perf_counter()
    # the flags depend only on which sites are brighter, so sublattice 0/1 of the geometry can stand in here
    feats = site_features(patches, sites.fitted_sublattice, metal=context.metal, chalcogen=context.chalcogen,
                          dopant=context.dopant, detector=context.detector, beam_energy_kev=context.beam_energy_kev)
    t2 = time.perf_counter()
    masked = [CLASS_IDS[n] for n in absent_classes(context.dopant)]  # D when undoped
    centre = central_intensity(patches)

    bright = int(np.argmax(typical_intensities(centre, sites.fitted_sublattice)))
    fixed = None if metal_sublattice == "auto" else (bright if metal_sublattice == "brighter" else 1 - bright)
    chose = "option --metal-sublattice" if fixed is not None else "model consistency"
    if fixed is None and known_ratio is not None and known_ratio > 0 \
            and abs(np.log(known_ratio)) >= CLEAR_CONTRAST_LOG_RATIO:
        fixed = bright if known_ratio > 1 else 1 - bright
        chose = "brightness (the training case's clear contrast)"
    # the flags follow the frame's brightness: one run whatever the assignment
    columns = range(feats.shape[1]) if feature_columns is None else feature_columns
    x = model_inputs(feats, columns, case_model_context(context, context_encoding))
    probs = predict_probabilities(model, x, masked_classes=masked)
    metal = choose_metal_sublattice(probs, sites.fitted_sublattice) if fixed is None else fixed
    t3 = time.perf_counter()
    sublattice = np.where(sites.fitted_sublattice == metal, METAL, 1 - METAL)
    probs, off_sublattice = restrict_to_sublattice(probs, sublattice, masked)
    entropy = -(probs * np.log(probs.clip(1e-30))).sum(axis=1)
    return {"sublattice": sublattice, "probs": probs, "label": probs.argmax(axis=1), "entropy": entropy,
            "features": feats, "centre": centre, "patches": patches,
            "metal_sublattice_source": chose,
            "off_sublattice": off_sublattice,
            "masked_classes": [CLASS_NAMES[c] for c in masked],
            "timings_s": {"patches": t1 - t0, "features": t2 - t1, "model": t3 - t2}}
