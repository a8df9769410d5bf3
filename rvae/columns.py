"""Atom-centred sub-images of an ADF frame: columns (any lattice), sub-pixel refinement, cutting. Pure
array-in/array-out functions; coordinates are pixels ``(row, col) = (y, x)``.

Columns are the local maxima of the project's generic peak finder (``inference.lattice.find_peaks``: smoothed
image, a minimum distance, parabolic sub-pixel vertex), refined here by a batched, Gaussian-weighted centroid
of the background-subtracted intensity around each peak (all columns at once, a few iterations), which uses the
whole column profile rather than three pixels per axis. Sub-images are cut with ``contract.patches.cut_patches``
(bilinear, the column on the centre pixel of an odd grid).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def refine_positions(image: np.ndarray, positions: np.ndarray, sigma_px: float, iterations: int = 3,
                     max_step_px: float | None = None) -> np.ndarray:
    """(N, 2) (row, col) positions -> refined (N, 2): each iteration moves every position to the centroid of
    ``w · (I - min)`` over a (2R+1)² stencil, with w a Gaussian of ``sigma_px`` about the current position
    (R = ⌈2.5σ⌉; bilinear samples of the image, all positions in one call). A position never moves more than
    ``max_step_px`` (default σ) from where it started."""
    img = np.asarray(image, dtype=np.float64)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2).copy()
    if len(pos) == 0:
        return pos
    if not sigma_px > 0:
        raise ValueError(f"sigma_px must be > 0, got {sigma_px}")
    start = pos.copy()
    limit = sigma_px if max_step_px is None else max_step_px
    r = int(np.ceil(2.5 * sigma_px))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    dy, dx = dy.ravel(), dx.ravel()
    weight = np.exp(-(dy**2 + dx**2) / (2 * sigma_px**2))
    for _ in range(iterations):
        rows = pos[:, 0, None] + dy[None]
        cols = pos[:, 1, None] + dx[None]
        values = ndimage.map_coordinates(img, [rows, cols], order=1, mode="nearest")
        values = (values - values.min(axis=1, keepdims=True)) * weight[None]
        total = values.sum(axis=1)
        ok = total > 0
        step = np.zeros_like(pos)
        step[ok, 0] = (values[ok] * dy).sum(axis=1) / total[ok]
        step[ok, 1] = (values[ok] * dx).sum(axis=1) / total[ok]
        pos = pos + step
        moved = pos - start
        far = np.hypot(moved[:, 0], moved[:, 1]) > limit
        pos[far] = start[far] + moved[far] * (limit / np.hypot(moved[far, 0], moved[far, 1]))[:, None]
    return pos


def find_columns(image: np.ndarray, pixel_size_angstrom: float, min_distance_angstrom: float = 1.2,
                 smooth_sigma_angstrom: float = 0.2, refine: bool = True) -> np.ndarray:
    """(K, 2) sub-pixel (row, col) column positions of an ADF image (any lattice)."""
    from inference.lattice import find_peaks

    if not pixel_size_angstrom > 0:
        raise ValueError(f"pixel size must be > 0, got {pixel_size_angstrom}")
    min_px = max(1.0, min_distance_angstrom / pixel_size_angstrom)
    smooth_px = smooth_sigma_angstrom / pixel_size_angstrom
    peaks, _ = find_peaks(image, min_px, smooth_px)
    if refine and len(peaks):
        smoothed = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), smooth_px) if smooth_px > 0 \
            else np.asarray(image, dtype=np.float64)
        peaks = refine_positions(smoothed, peaks, sigma_px=max(1.0, min_px / 2.5))
    return peaks


def cut_subimages(image: np.ndarray, positions: np.ndarray, window_angstrom: float, pixel_size_angstrom: float,
                  size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, P, P) float32 sub-images of side ``window_angstrom`` centred on ``positions`` (P = ``size_px``, odd),
    and (N,) bool ``border``: True where the window reaches beyond the image (cut from a mirror-padded copy)."""
    from contract.patches import check_patch_size, cut_patches

    check_patch_size(size_px)
    if not window_angstrom > 0:
        raise ValueError(f"window must be > 0 Å, got {window_angstrom}")
    half = window_angstrom / 2 / pixel_size_angstrom
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    h, w = np.shape(image)
    border = (pos[:, 0] < half) | (pos[:, 1] < half) | (pos[:, 0] > h - 1 - half) | (pos[:, 1] > w - 1 - half)
    return cut_patches(np.asarray(image, dtype=np.float64), pos, half, size_px), border
