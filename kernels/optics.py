"""Electron-optical and grid arithmetic that needs no simulator: the closed-form relativistic wavelength and
the 2,3,5-smooth FFT sizes. The quantities that must agree with abTEM's own grids (antialias reach, grid sizes
reaching a detector) ask abTEM and stay in ``simulate.optics``."""
from __future__ import annotations

import math

from scipy import constants


def wavelength_angstrom(beam_energy_kev: float) -> float:
    """Relativistic electron wavelength [Å]: h c / √(E (E + 2 m c²)). ``simulate.optics.wavelength_angstrom`` asks
    abTEM, whose import takes 5-20 s; this one agrees with it to 1e-6 (tested) and costs nothing."""
    energy_ev = beam_energy_kev * 1e3
    mc2_ev = constants.m_e * constants.c**2 / constants.e
    hc_ev_angstrom = constants.h * constants.c / constants.e * 1e10
    return hc_ev_angstrom / math.sqrt(energy_ev * (energy_ev + 2 * mc2_ev))


def is_smooth_235(n: int) -> bool:
    """True when ``n`` has no prime factor other than 2, 3 and 5 (fast FFT sizes)."""
    if n < 1:
        return False
    for p in (2, 3, 5):
        while n % p == 0:
            n //= p
    return n == 1


def next_smooth_235(n: int) -> int:
    """Smallest even 2,3,5-smooth integer ≥ ``n``."""
    m = max(2, math.ceil(n))
    while not (m % 2 == 0 and is_smooth_235(m)):
        m += 1
    return m
