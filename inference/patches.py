"""Patches and the 31 features of every site of an image: pure array-in/array-out functions.

A patch spans √3·a around its site (as in the simulated stores: ``simulate.noise.extract_patch`` with the
site on the centre pixel of an odd grid), resampled bilinearly onto the model's ``patch_size_px``. Sites
near the border are cut from a mirror-padded copy so that they can still be classified (they are flagged
and left out of the counts by the caller).
"""
from __future__ import annotations

import numpy as np

from features.context import CONTEXT_SIZE, context_vector
from features.normalise import standardised_contrast_features
from features.site_symmetry import central_intensity, site_symmetry
from simulate.noise import extract_patch

SQRT3 = 3 ** 0.5


def patch_half_width_px(lattice_constant_px: float) -> float:
    """Half the patch side √3·a, in pixels."""
    return SQRT3 * lattice_constant_px / 2


def cut_patches(image: np.ndarray, positions: np.ndarray, lattice_constant_px: float,
                patch_size_px: int) -> np.ndarray:
    """(H, W) image, (N, 2) (row, col) site positions -> (N, P, P) float32 patches of side √3·a, each site on
    the centre pixel (P = ``patch_size_px``, odd)."""
    if patch_size_px % 2 == 0 or patch_size_px < 3:
        raise ValueError(f"patch_size_px must be odd and >= 3, got {patch_size_px}")
    if lattice_constant_px <= 0:
        raise ValueError(f"lattice_constant_px must be > 0, got {lattice_constant_px}")
    half = patch_half_width_px(lattice_constant_px)
    pad = int(np.ceil(half)) + 2
    padded = np.pad(np.asarray(image, dtype=np.float64), pad, mode="reflect")
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    out = np.empty((len(pos), patch_size_px, patch_size_px), dtype=np.float32)
    for n, (r, c) in enumerate(pos):
        out[n] = extract_patch(padded, (r + pad, c + pad), half, patch_size_px)
    return out


def site_features(patches: np.ndarray, sublattice_ids: np.ndarray, *, metal: str, chalcogen: str, dopant: str,
                  detector: str, beam_energy_kev: float) -> np.ndarray:
    """(N, P, P) patches, (N,) sublattice ids (0 metal, 1 chalcogen) -> (N, 31) float32 features in the
    stored order (``features.context.feature_names``): context 23, Zernike 6, site symmetry 2, the site
    symmetry measured on this image's own sublattice brightness (one group)."""
    context = context_vector(metal, chalcogen, dopant, detector, beam_energy_kev)
    zern = standardised_contrast_features(np.asarray(patches, dtype=np.float32))
    flags = site_symmetry(central_intensity(patches), np.asarray(sublattice_ids))
    out = np.concatenate([np.broadcast_to(context, (len(zern), CONTEXT_SIZE)), zern, flags], axis=1)
    return out.astype(np.float32)
