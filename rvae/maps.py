"""Maps of per-position outputs over a scan or a lattice: the periodic residual and the anomaly score. Pure.

``periodic_residual``: a map that repeats with the lattice is folded onto one cell of ``period`` (rows, cols)
scan pixels (the scan is commensurate with the lattice: ``scan_steps_per_cell``); the per-cell median over all
cells is the lattice-periodic average (a median, so that the few cells holding a defect do not shift it), and
the residual is the map minus that average tiled back. ``anomaly_score`` turns residual channels into one
score: each channel divided by its robust scale (1.4826 x median absolute residual), then the root mean square
over channels. An angle enters as (cos nφ, sin nφ): residuals of a circular quantity without a wrap-around.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def _fold(shape: tuple[int, int], period: tuple[int, int]) -> tuple[int, int]:
    py, px = (int(p) for p in period)
    if py < 1 or px < 1 or shape[0] % py or shape[1] % px:
        raise ValueError(f"fold period {period} must divide the map shape {shape[:2]} (a scan commensurate "
                         "with the lattice)")
    return py, px


def periodic_average(values: np.ndarray, period: tuple[int, int]) -> np.ndarray:
    """(H, W, ...) -> (H, W, ...): the per-cell median over all cells of ``period``, tiled over the map."""
    v = np.asarray(values, dtype=np.float64)
    py, px = _fold(v.shape, period)
    h, w = v.shape[:2]
    cells = v.reshape(h // py, py, w // px, px, *v.shape[2:])
    median = np.median(cells, axis=(0, 2))  # (py, px, ...)
    return np.tile(median, (h // py, w // px) + (1,) * (v.ndim - 2))


def periodic_residual(values: np.ndarray, period: tuple[int, int]) -> np.ndarray:
    """(H, W, ...) map minus its lattice-periodic average."""
    return np.asarray(values, dtype=np.float64) - periodic_average(values, period)


def circular_channels(angle: np.ndarray, period: int = 1, angle_std: np.ndarray | None = None) -> np.ndarray:
    """(...,) angles φ -> (..., 2) (cos nφ, sin nφ); with the posterior's circular standard deviation
    ``angle_std`` (of φ), its expectation A·(cos nφ, sin nφ) under the von Mises posterior, A = exp(-(n σ)² / 2)
    the mean resultant length: an angle the model is unsure of contributes little."""
    c = np.stack([np.cos(period * angle), np.sin(period * angle)], axis=-1)
    if angle_std is not None:
        c = c * np.exp(-0.5 * (period * np.asarray(angle_std)) ** 2)[..., None]
    return c


def smooth(values: np.ndarray, sigma_px: float, periodic: bool = True) -> np.ndarray:
    """(H, W, ...) map with each channel Gaussian-smoothed over the scan by ``sigma_px`` (wrapping at the edges of
    a periodic scan): trades resolution for noise, the same for every map compared."""
    v = np.asarray(values, dtype=np.float64)
    if sigma_px <= 0:
        return v
    sigma = (sigma_px, sigma_px) + (0,) * (v.ndim - 2)
    return ndimage.gaussian_filter(v, sigma, mode="wrap" if periodic else "nearest")


def anomaly_score(channels: np.ndarray, period: tuple[int, int], smooth_px: float = 0.0) -> np.ndarray:
    """(H, W, C) channels (or (H, W)) -> (H, W) anomaly score (module docstring), the channels first smoothed
    by ``smooth_px`` when > 0. Channels without spread (constant) contribute nothing."""
    c = np.asarray(channels, dtype=np.float64)
    if c.ndim == 2:
        c = c[..., None]
    c = smooth(c, smooth_px)
    r = periodic_residual(c, period)
    scale = 1.4826 * np.median(np.abs(r), axis=(0, 1))
    fallback = r.std(axis=(0, 1))
    scale = np.where(scale > 0, scale, fallback)
    use = scale > 0
    if not use.any():
        return np.zeros(c.shape[:2])
    return np.sqrt(np.mean((r[..., use] / scale[use]) ** 2, axis=-1))
