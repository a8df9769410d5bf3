"""The centre-of-mass (COM) family of 4D-STEM maps, in NumPy, for noisy counts: the classical baseline.

Patterns ``(ny, nx, K, K)`` indexed [scan y, scan x, ky, kx] (K odd, zero angle on the centre pixel), angular
pixel ``angular_sampling_mrad``. For each probe position:

* COM = Σ k I(k) / Σ I(k): ``com_x``, ``com_y`` [mrad]; a pattern with no counts (possible at low dose) gets the
  map's mean, not a division by zero;
* |COM| [mrad] and its direction atan2(com_y, com_x) [rad] (from +x towards +y, as every angle here);
* divergence ∂com_x/∂x + ∂com_y/∂y [mrad/Å] (central differences; periodic for a scan of a periodic cell);
* integrated COM (iCOM): the potential-like map whose gradient is the COM field, by Fourier integration
  (periodic), as abTEM's ``integrate_gradient``: shifted so that its minimum is 0. Computed from COM in Å⁻¹
  (k = θ/λ) as abTEM does, so the two agree.

abTEM's own ``DiffractionPatterns.center_of_mass`` / ``integrated_center_of_mass`` compute the same from a
noise-free measurement; ``tests/test_rvae_com.py`` checks that they agree.
"""
from __future__ import annotations

import numpy as np


def _check(patterns: np.ndarray) -> np.ndarray:
    p = np.asarray(patterns, dtype=np.float64)
    if p.ndim != 4 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"patterns must be (ny, nx, K, K), got shape {p.shape}")
    return p


def center_of_mass(patterns: np.ndarray, angular_sampling_mrad: float) -> tuple[np.ndarray, np.ndarray]:
    """(ny, nx, K, K) -> (com_x, com_y), each (ny, nx) [mrad], about the pattern's centre pixel (a
    K-even pattern: about index K // 2, abTEM's zero angle)."""
    p = _check(patterns)
    k = p.shape[-1]
    coords = (np.arange(k) - k // 2) * float(angular_sampling_mrad)
    total = p.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = (p.sum(axis=-2) * coords).sum(axis=-1) / total
        cy = (p.sum(axis=-1) * coords).sum(axis=-1) / total
    empty = ~(total > 0)
    if empty.any():
        if empty.all():
            raise ValueError("every pattern is empty: no counts")
        cx[empty], cy[empty] = cx[~empty].mean(), cy[~empty].mean()
    return cx, cy


def divergence(com_x: np.ndarray, com_y: np.ndarray, scan_sampling_angstrom: tuple[float, float],
               periodic: bool = True) -> np.ndarray:
    """∂com_x/∂x + ∂com_y/∂y on the (ny, nx) scan grid [unit of com per Å]; x along columns, y along rows."""
    dx, dy = scan_sampling_angstrom
    if periodic:
        ddx = (np.roll(com_x, -1, axis=1) - np.roll(com_x, 1, axis=1)) / (2 * dx)
        ddy = (np.roll(com_y, -1, axis=0) - np.roll(com_y, 1, axis=0)) / (2 * dy)
    else:
        ddx, ddy = np.gradient(com_x, dx, axis=1), np.gradient(com_y, dy, axis=0)
    return ddx + ddy


def integrated_com(com_x: np.ndarray, com_y: np.ndarray, scan_sampling_angstrom: tuple[float, float]) -> np.ndarray:
    """The periodic map T with ∇T = (com_x, com_y) in the least-squares sense (Fourier integration), min 0."""
    dx, dy = scan_sampling_angstrom
    ny, nx = com_x.shape
    kx = np.fft.fftfreq(nx, d=dx)[None, :]
    ky = np.fft.fftfreq(ny, d=dy)[:, None]
    k2 = kx**2 + ky**2
    k2[0, 0] = 1e-12
    that = (np.fft.fft2(com_x) * kx + np.fft.fft2(com_y) * ky) / (2j * np.pi * k2)
    t = np.real(np.fft.ifft2(that))
    return t - t.min()


def com_family(patterns: np.ndarray, angular_sampling_mrad: float, scan_sampling_angstrom: tuple[float, float],
               wavelength_angstrom: float, periodic: bool = True) -> dict[str, np.ndarray]:
    """Every map of the family, each (ny, nx): ``com_x``, ``com_y``, ``com_magnitude`` [mrad],
    ``com_direction`` [rad], ``com_divergence`` [mrad/Å] and ``icom`` [Å⁻¹·Å, arbitrary offset]."""
    cx, cy = center_of_mass(patterns, angular_sampling_mrad)
    to_inv_angstrom = 1e-3 / wavelength_angstrom  # k = θ / λ
    return {"com_x": cx, "com_y": cy, "com_magnitude": np.hypot(cx, cy), "com_direction": np.arctan2(cy, cx),
            "com_divergence": divergence(cx, cy, scan_sampling_angstrom, periodic),
            "icom": integrated_com(cx * to_inv_angstrom, cy * to_inv_angstrom, scan_sampling_angstrom)}
