"""The COM family in NumPy against abTEM's own center_of_mass / integrated_center_of_mass, on noisy counts of
shifted discs (no simulation), and exact properties of each map."""
from __future__ import annotations

import numpy as np
import pytest

from kernels import com


def disc_patterns(ny, nx, k, shift_px, radius_px=4.0, dose=400.0, seed=0):
    """(ny, nx, k, k) Poisson counts of a bright-field disc displaced by shift_px[y, x] = (dky, dkx) pixels."""
    rng = np.random.default_rng(seed)
    ky, kx = np.mgrid[0:k, 0:k] - k // 2
    out = np.empty((ny, nx, k, k))
    for iy in range(ny):
        for ix in range(nx):
            dky, dkx = shift_px[iy, ix]
            disc = np.clip(radius_px + 0.5 - np.hypot(ky - dky, kx - dkx), 0, 1)  # anti-aliased edge
            out[iy, ix] = rng.poisson(disc / disc.sum() * dose)
    return out


def abtem_measurement(patterns, angular_sampling_mrad, scan_sampling, energy_ev=80e3):
    """The same counts as an abTEM DiffractionPatterns in abTEM's order (scan x, scan y, kx, ky)."""
    from abtem.core.axes import ScanAxis
    from abtem.core.energy import energy2wavelength
    from abtem.measurements import DiffractionPatterns

    wavelength = energy2wavelength(energy_ev)
    sampling = angular_sampling_mrad * 1e-3 / wavelength  # 1/Å per pixel
    array = np.ascontiguousarray(patterns.transpose(1, 0, 3, 2)).astype(np.float32)
    axes = [ScanAxis(label="x", sampling=scan_sampling[0], units="Å"),
            ScanAxis(label="y", sampling=scan_sampling[1], units="Å")]
    return DiffractionPatterns(array, sampling=sampling, fftshift=True, ensemble_axes_metadata=axes,
                               metadata={"energy": energy_ev}), wavelength


def test_numpy_com_and_icom_agree_with_abtem_on_noisy_counts():
    ny, nx, k = 12, 10, 21
    yy, xx = np.mgrid[0:ny, 0:nx]
    shift = np.stack([1.5 * np.sin(2 * np.pi * yy / ny), 2.0 * np.cos(2 * np.pi * xx / nx)], -1)  # periodic field
    patterns = disc_patterns(ny, nx, k, shift, dose=4000)
    dtheta, scan = 1.7, (0.25, 0.2)
    measurement, wavelength = abtem_measurement(patterns, dtheta, scan)
    ref = measurement.center_of_mass(units="mrad").array  # (nx, ny) complex: x + i y
    cx, cy = com.center_of_mass(patterns, dtheta)
    np.testing.assert_allclose(cx, ref.real.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cy, ref.imag.T, rtol=1e-4, atol=1e-4)
    icom_ref = measurement.integrated_center_of_mass().array.T
    maps = com.com_family(patterns, dtheta, scan, wavelength)
    np.testing.assert_allclose(maps["icom"], icom_ref, rtol=1e-4, atol=1e-4 * np.abs(icom_ref).max())
    # and the COM follows the disc: shift [px] x sampling [mrad/px]
    np.testing.assert_allclose(cy, shift[..., 0] * dtheta, atol=0.25)  # 0.15 px: the edge's pixelation
    np.testing.assert_allclose(cx, shift[..., 1] * dtheta, atol=0.25)


def test_empty_patterns_get_the_map_mean_not_nan():
    patterns = disc_patterns(3, 3, 11, np.zeros((3, 3, 2)), dose=50)
    patterns[1, 1] = 0
    cx, cy = com.center_of_mass(patterns, 1.0)
    assert np.isfinite(cx).all() and cx[1, 1] == pytest.approx(np.delete(cx.ravel(), 4).mean())
    with pytest.raises(ValueError, match="no counts"):
        com.center_of_mass(np.zeros((2, 2, 5, 5)), 1.0)
    with pytest.raises(ValueError, match=r"\(ny, nx, K, K\)"):
        com.center_of_mass(np.zeros((2, 5, 5)), 1.0)


def test_divergence_and_integration_of_known_fields():
    ny, nx, d = 32, 40, (0.5, 0.25)
    y, x = np.mgrid[0:ny, 0:nx] * np.array([d[1], d[0]])[:, None, None]
    lx, ly = nx * d[0], ny * d[1]
    potential = np.sin(2 * np.pi * x / lx) + 0.5 * np.cos(4 * np.pi * y / ly)
    gx = 2 * np.pi / lx * np.cos(2 * np.pi * x / lx)
    gy = -0.5 * 4 * np.pi / ly * np.sin(4 * np.pi * y / ly)
    t = com.integrated_com(gx, gy, d)
    np.testing.assert_allclose(t, potential - potential.min(), atol=1e-10)
    lap = -(2 * np.pi / lx) ** 2 * np.sin(2 * np.pi * x / lx) - 0.5 * (4 * np.pi / ly) ** 2 * np.cos(4 * np.pi * y / ly)
    np.testing.assert_allclose(com.divergence(gx, gy, d, periodic=True), lap, atol=0.05 * np.abs(lap).max())
