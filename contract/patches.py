"""Patch geometry shared by simulation and micrographs (paper section 3).

A patch is a square of side √3·a (a: lattice constant) centred on one atomic column, resampled bilinearly onto
an odd ``P x P`` grid whose centre pixel holds the column; pixel centres span centre ± √3·a/2, edges included,
so the patch pixel size is √3·a / (P - 1). The simulated store and every micrograph use these functions.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

SQRT3 = 3 ** 0.5


def patch_half_width(lattice_constant: float) -> float:
    """Half the patch side, √3·a/2, in the unit of ``lattice_constant`` (Å or px)."""
    if not lattice_constant > 0:
        raise ValueError(f"lattice constant must be > 0, got {lattice_constant!r}")
    return SQRT3 * lattice_constant / 2


def patch_pixel_size(lattice_constant: float, patch_size_px: int) -> float:
    """Pixel size of a ``patch_size_px`` patch of a lattice of ``lattice_constant`` (same unit)."""
    check_patch_size(patch_size_px)
    return 2 * patch_half_width(lattice_constant) / (patch_size_px - 1)


def check_patch_size(patch_size_px) -> int:
    """An odd integer >= 3 (the column sits on the centre pixel), or ``ValueError``."""
    if isinstance(patch_size_px, bool) or int(patch_size_px) != patch_size_px or patch_size_px < 3 \
            or patch_size_px % 2 == 0:
        raise ValueError(f"patch size must be an odd integer >= 3 (the column sits on the centre pixel), "
                         f"got {patch_size_px!r}")
    return int(patch_size_px)


def _patch_offsets(half_width_px: float, patch_size_px: int) -> np.ndarray:
    return np.linspace(-half_width_px, half_width_px, check_patch_size(patch_size_px))


def extract_patch(image: np.ndarray, centre_px: tuple[float, float], half_width_px: float,
                  patch_size_px: int) -> np.ndarray:
    """Sample a (P, P) float32 patch spanning ``centre ± half_width_px`` (edge pixel centres included)
    bilinearly from a (H, W) ``image``; the centre (row, col) lands on the centre pixel. ``ValueError`` when
    the patch reaches beyond the image."""
    offsets = _patch_offsets(half_width_px, patch_size_px)
    rows = centre_px[0] + offsets[:, None] + 0 * offsets[None, :]
    cols = centre_px[1] + 0 * offsets[:, None] + offsets[None, :]
    lo = min(rows.min(), cols.min())
    if lo < 0 or rows.max() > image.shape[0] - 1 or cols.max() > image.shape[1] - 1:
        raise ValueError("patch reaches beyond the image: increase the scan margin")
    return ndimage.map_coordinates(image, [rows, cols], order=1).astype(np.float32)


def cut_patches(image: np.ndarray, positions: np.ndarray, half_width_px: float, patch_size_px: int) -> np.ndarray:
    """(H, W) image, (N, 2) (row, col) centres -> (N, P, P) float32 patches of half-width ``half_width_px``.

    Patches reaching beyond the image are sampled from a mirror-padded copy (sites near the border can still
    be classified; callers flag them). Values equal ``extract_patch`` on the padded image.
    """
    offsets = _patch_offsets(half_width_px, patch_size_px)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    pad = int(np.ceil(half_width_px)) + 2
    padded = np.pad(np.asarray(image, dtype=np.float64), pad, mode="reflect")
    p = len(offsets)
    rows = pos[:, 0, None, None] + pad + offsets[None, :, None] + np.zeros((1, 1, p))
    cols = pos[:, 1, None, None] + pad + offsets[None, None, :] + np.zeros((1, p, 1))
    if len(pos) and (min(rows.min(), cols.min()) < 0 or rows.max() > padded.shape[0] - 1
                     or cols.max() > padded.shape[1] - 1):
        raise ValueError("a site lies outside the image")
    return ndimage.map_coordinates(padded, [rows, cols], order=1).astype(np.float32)
