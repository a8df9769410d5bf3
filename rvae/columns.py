"""Atom-centred sub-images of an ADF frame: columns (any lattice) and cutting. Pure array-in/array-out
functions; coordinates are pixels ``(row, col) = (y, x)``.

Columns are the local maxima of the project's generic peak finder (``kernels.lattice.find_peaks``: smoothed
image, a minimum distance, batched sub-pixel centroid refinement), with the distances given in Å here
(``finder="new"``). ``finder="old"`` adds the refinement ``rvae`` used before issue 9's finder: a batched,
Gaussian-weighted centroid of the background-subtracted smoothed intensity (``refine_gaussian``), kept to
check that an angle result does not hang on how the columns were centred.
Sub-images are cut with ``contract.patches.cut_patches`` (bilinear, the column on the centre pixel of an odd
grid).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from contract.patches import check_patch_size, cut_patches
from kernels.lattice import find_peaks


FINDERS = ("new", "old")


def refine_gaussian(image: np.ndarray, positions: np.ndarray, sigma_px: float, iterations: int = 3) -> np.ndarray:
    """(N, 2) (row, col) positions -> refined (N, 2): each iteration moves every position to the centroid of
    ``w · (I - min)`` over a (2R+1)² stencil, w a Gaussian of ``sigma_px`` about the current position
    (R = ⌈2.5σ⌉, bilinear samples, all positions at once); a position never moves more than σ from its start."""
    img = np.asarray(image, dtype=np.float64)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2).copy()
    if len(pos) == 0:
        return pos
    if not sigma_px > 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    start = pos.copy()
    r = int(np.ceil(2.5 * sigma_px))
    dy, dx = (g.ravel() for g in np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64))
    weight = np.exp(-(dy**2 + dx**2) / (2 * sigma_px**2))
    for _ in range(iterations):
        values = ndimage.map_coordinates(img, [pos[:, 0, None] + dy, pos[:, 1, None] + dx], order=1, mode="nearest")
        values = (values - values.min(axis=1, keepdims=True)) * weight
        total = values.sum(axis=1)
        ok = total > 0
        pos[ok] += np.c_[(values[ok] * dy).sum(axis=1), (values[ok] * dx).sum(axis=1)] / total[ok, None]
        moved = pos - start
        dist = np.hypot(moved[:, 0], moved[:, 1])
        far = dist > sigma_px
        pos[far] = start[far] + moved[far] * (sigma_px / dist[far])[:, None]
    return pos


def find_columns(image: np.ndarray, pixel_size_angstrom: float, min_distance_angstrom: float = 1.2,
                 smooth_sigma_angstrom: float = 0.2, finder: str = "new") -> np.ndarray:
    """(K, 2) sub-pixel (row, col) column positions of an ADF image (any lattice); ``finder`` one of
    ``FINDERS`` (see the module docstring)."""
    if not pixel_size_angstrom > 0:
        raise ValueError(f"pixel size must be > 0, got {pixel_size_angstrom}")
    if finder not in FINDERS:
        raise ValueError(f"finder must be one of {FINDERS}, got {finder!r}")
    min_px = max(1.0, min_distance_angstrom / pixel_size_angstrom)
    smooth_px = smooth_sigma_angstrom / pixel_size_angstrom
    peaks, _ = find_peaks(image, min_px, smooth_px)
    if finder == "old" and len(peaks):
        img = np.asarray(image, dtype=np.float64)
        smoothed = ndimage.gaussian_filter(img, smooth_px) if smooth_px > 0 else img
        peaks = refine_gaussian(smoothed, peaks, sigma_px=max(1.0, min_px / 2.5))
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
