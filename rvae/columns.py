"""Atom-centred sub-images of an ADF frame: columns (any lattice) and cutting. Pure array-in/array-out
functions; coordinates are pixels ``(row, col) = (y, x)``.

Columns are the local maxima of the project's generic peak finder (``kernels.lattice.find_peaks``: smoothed
image, a minimum distance, batched sub-pixel centroid refinement), with the distances given in Å here.
Sub-images are cut with ``contract.patches.cut_patches`` (bilinear, the column on the centre pixel of an odd
grid).
"""
from __future__ import annotations

import numpy as np

from contract.patches import check_patch_size, cut_patches
from kernels.lattice import find_peaks


def find_columns(image: np.ndarray, pixel_size_angstrom: float, min_distance_angstrom: float = 1.2,
                 smooth_sigma_angstrom: float = 0.2) -> np.ndarray:
    """(K, 2) sub-pixel (row, col) column positions of an ADF image (any lattice)."""
    if not pixel_size_angstrom > 0:
        raise ValueError(f"pixel size must be > 0, got {pixel_size_angstrom}")
    min_px = max(1.0, min_distance_angstrom / pixel_size_angstrom)
    peaks, _ = find_peaks(image, min_px, smooth_sigma_angstrom / pixel_size_angstrom)
    return peaks


def cut_subimages(image: np.ndarray, positions: np.ndarray, window_angstrom: float, pixel_size_angstrom: float,
                  size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, P, P) float32 sub-images of side ``window_angstrom`` centred on ``positions`` (P = ``size_px``, odd),
    and (N,) bool ``border``: True where the window reaches beyond the image (cut from a mirror-padded copy)."""
    check_patch_size(size_px)
    if not window_angstrom > 0:
        raise ValueError(f"window must be > 0 Å, got {window_angstrom}")
    half = window_angstrom / 2 / pixel_size_angstrom
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    h, w = np.shape(image)
    border = (pos[:, 0] < half) | (pos[:, 1] < half) | (pos[:, 0] > h - 1 - half) | (pos[:, 1] > w - 1 - half)
    return cut_patches(np.asarray(image, dtype=np.float64), pos, half, size_px), border
