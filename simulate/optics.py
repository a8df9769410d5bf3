"""Electron-optical quantities for grid and scan choices that ask abTEM, so that a check here agrees with what
abTEM does. The closed-form wavelength and the FFT-size helpers, which need no abTEM, are in ``kernels.optics``."""
from __future__ import annotations

import math
from functools import lru_cache

from kernels.optics import next_smooth_235


def wavelength_angstrom(beam_energy_kev: float) -> float:
    """Relativistic electron wavelength [Å] at ``beam_energy_kev``, as abTEM computes it (the simulator's value;
    ``kernels.optics.wavelength_angstrom`` is the closed form, which agrees to 1e-6 without importing abTEM)."""
    from abtem.core.energy import energy2wavelength

    return float(energy2wavelength(beam_energy_kev * 1e3))


def nyquist_scan_sampling_angstrom(beam_energy_kev: float, convergence_semiangle_mrad: float) -> float:
    """Largest probe step [Å] that samples the image at Nyquist: λ / (4 α) (the probe passes spatial
    frequencies up to 2α/λ)."""
    return wavelength_angstrom(beam_energy_kev) / (4 * convergence_semiangle_mrad * 1e-3)


@lru_cache(maxsize=None)
def detector_reach_mrad(extent_angstrom: tuple[float, float], gpts: tuple[int, int], beam_energy_kev: float) -> float:
    """Largest scattering angle [mrad] that abTEM keeps on this grid (its antialias cutoff), smallest over x, y.

    Asked of abTEM itself (no arrays are built) so that it matches what the detector will see.
    """
    import abtem

    probe = abtem.Probe(energy=beam_energy_kev * 1e3, extent=extent_angstrom, gpts=gpts, semiangle_cutoff=1.0)
    return float(min(probe.cutoff_angles))


def gpts_reaching(extent_angstrom: tuple[float, float], beam_energy_kev: float, outer_mrad: float) -> int:
    """Smallest even 2,3,5-smooth square grid size whose antialias cutoff reaches ``outer_mrad`` on ``extent``."""
    # λ/(3 dx) is the 2/3 antialias limit; start from it and step up (the taper costs a few percent).
    start = math.ceil(3 * max(extent_angstrom) * outer_mrad * 1e-3 / wavelength_angstrom(beam_energy_kev))
    n = next_smooth_235(start)
    while detector_reach_mrad(tuple(extent_angstrom), (n, n), beam_energy_kev) < outer_mrad:
        n = next_smooth_235(n + 1)
    return n
