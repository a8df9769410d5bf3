"""The 31-column feature vector of a patch (paper section 3), in stored order, and the one function that
assembles it.

======  =======  ===================================================================================
column  group    meaning
======  =======  ===================================================================================
0-17    context  electrons per shell K..P / Z of the host metal (0-5), chalcogen (6-11), dopant (12-17)
18-19   context  detector one-hot (``contract.context.DETECTOR_NAMES`` order)
20-22   context  beam-energy one-hot (``contract.context.BEAM_ENERGIES_KEV`` order)
23-28   zernike  signed Zernike moments a_n0, n = 0, 2, ..., 10 of the standardised patch
29-30   site     site symmetry one-hot: [1, 0] brighter sublattice, [0, 1] dimmer sublattice
======  =======  ===================================================================================

A model reads either all 31 columns (feature set ``all``) or only the Zernike ones (``zernike``,
MLP-NoContext): ``FEATURE_SETS``.
"""
from __future__ import annotations

import numpy as np

from .context import BEAM_ENERGIES_KEV, CONTEXT_SIZE, DETECTOR_NAMES, ROLES, SHELLS
from .physical_context import PHYSICAL_CONTEXT_NAMES, check_context_encoding

ZERNIKE_ORDERS = (0, 2, 4, 6, 8, 10)
"""Radial orders n of the six m = 0 Zernike features, in stored order."""

CONTEXT_NAMES = tuple(
    [f"{role}_shell_{s}_per_z" for role in ROLES for s in SHELLS]
    + [f"detector_{d.lower()}" for d in DETECTOR_NAMES]
    + [f"beam_energy_{e}kev" for e in BEAM_ENERGIES_KEV]
)
ZERNIKE_NAMES = tuple(f"zernike_n{n}_m0" for n in ZERNIKE_ORDERS)
SITE_SYMMETRY_NAMES = ("site_brighter_sublattice", "site_dimmer_sublattice")
SITE_SYMMETRY_RULE_VERSION = 3
"""Version of the rule that decides which sublattice is the brighter one (``kernels.site_symmetry``), recorded in
a store's ``features.attrs["site_symmetry"]["rule_version"]`` and in checkpoints. 3: each sublattice's intact
columns (M, X2) in the store's noiseless clean patches; 2: the same columns' noisy patches, whose random doses
flipped near-1 cases (``features.encode``); 1 (before 2026-12-07): the mean over all of a case's patches, wrong in
MAADF where the X2 column outshines the metal. Features encoded by another version are refused by training and re-encoded by
``python -m features encode``."""
FEATURE_NAMES = CONTEXT_NAMES + ZERNIKE_NAMES + SITE_SYMMETRY_NAMES
N_FEATURES = len(FEATURE_NAMES)  # 31
N_ZERNIKE = len(ZERNIKE_NAMES)
N_SITE_SYMMETRY = len(SITE_SYMMETRY_NAMES)

CONTEXT_COLUMNS = slice(0, CONTEXT_SIZE)
ZERNIKE_COLUMNS = slice(CONTEXT_SIZE, CONTEXT_SIZE + N_ZERNIKE)
SITE_SYMMETRY_COLUMNS = slice(ZERNIKE_COLUMNS.stop, N_FEATURES)

FEATURE_SETS = {
    "all": tuple(range(N_FEATURES)),
    "zernike": tuple(range(ZERNIKE_COLUMNS.start, ZERNIKE_COLUMNS.stop)),
}
"""Feature set name -> the stored columns a model of that set reads."""


def feature_columns(feature_set: str) -> list[int]:
    """Stored columns a model with ``feature_set`` reads (``ValueError`` for an unknown set)."""
    if feature_set not in FEATURE_SETS:
        raise ValueError(f"feature_set must be one of {tuple(FEATURE_SETS)}, got {feature_set!r}")
    return list(FEATURE_SETS[feature_set])


def model_feature_columns(feature_set: str, context_encoding: str = "shells") -> list[int]:
    """The stored columns a model reads. With the ``physical`` context encoding (``contract.physical_context``) a
    model of feature set ``all`` reads the Zernike and site-symmetry columns after the 10 physical values, which
    are computed per case and not stored; the paper's 23 stored context columns are not read."""
    columns = feature_columns(feature_set)
    if check_context_encoding(context_encoding) == "physical" and feature_set == "all":
        return [c for c in columns if c >= CONTEXT_COLUMNS.stop]
    return columns


def model_input_names(feature_set: str, context_encoding: str = "shells") -> list[str]:
    """Names of what a model reads, in order (``model_feature_columns`` after the physical context, if any)."""
    columns = model_feature_columns(feature_set, context_encoding)
    physical = context_encoding == "physical" and feature_set == "all"
    return (list(PHYSICAL_CONTEXT_NAMES) if physical else []) + [FEATURE_NAMES[c] for c in columns]


def feature_set_names(feature_set: str) -> list[str]:
    """Names of the columns of ``feature_set``, in the order a model reads them."""
    return [FEATURE_NAMES[c] for c in feature_columns(feature_set)]


def site_symmetry_rule_problem(site_symmetry_attr) -> str | None:
    """Why a store's ``features.attrs["site_symmetry"]`` was not made by this version's rule, or None."""
    version = (site_symmetry_attr or {}).get("rule_version", 1) if isinstance(site_symmetry_attr, dict) else None
    if version == SITE_SYMMETRY_RULE_VERSION:
        return None
    return (f"site-symmetry flags made by rule version {version}, this version uses "
            f"{SITE_SYMMETRY_RULE_VERSION} (the brighter sublattice judged by its intact columns)")


def check_feature_names(names, source: str = "features") -> None:
    """``ValueError`` unless ``names`` is exactly ``FEATURE_NAMES`` (a store or model of another layout)."""
    names = tuple(str(n) for n in (names or ()))
    if names != FEATURE_NAMES:
        first = next((i for i, (a, b) in enumerate(zip(names, FEATURE_NAMES)) if a != b), min(len(names), N_FEATURES))
        raise ValueError(f"{source}: feature layout differs from this version's ({len(names)} columns, first "
                         f"difference at column {first}: {names[first] if first < len(names) else None!r} vs "
                         f"{FEATURE_NAMES[first] if first < N_FEATURES else None!r})")


def assemble_features(context, zernike, site_symmetry) -> np.ndarray:
    """The feature rows: context ``(23,)`` (one case for all rows) or ``(N, 23)``, zernike ``(N, 6)``,
    site_symmetry ``(N, 2)`` -> ``(N, 31)`` float32 in stored order."""
    zernike = np.asarray(zernike)
    site_symmetry = np.asarray(site_symmetry)
    context = np.asarray(context)
    n = zernike.shape[0] if zernike.ndim == 2 else -1
    if zernike.ndim != 2 or zernike.shape[1] != N_ZERNIKE:
        raise ValueError(f"zernike must have shape (N, {N_ZERNIKE}), got {zernike.shape}")
    if site_symmetry.shape != (n, N_SITE_SYMMETRY):
        raise ValueError(f"site_symmetry must have shape ({n}, {N_SITE_SYMMETRY}), got {site_symmetry.shape}")
    if context.shape == (CONTEXT_SIZE,):
        context = np.broadcast_to(context, (n, CONTEXT_SIZE))
    if context.shape != (n, CONTEXT_SIZE):
        raise ValueError(f"context must have shape ({CONTEXT_SIZE},) or ({n}, {CONTEXT_SIZE}), got {context.shape}")
    return np.concatenate([context, zernike, site_symmetry], axis=1).astype(np.float32)
