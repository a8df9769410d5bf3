"""The sites of one image: the local lattice, its columns and empty sites, the two sublattices and the lattice
area (``locate_sites``, pure), and whether that is a lattice worth classifying (``lattice_refusal``)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from kernels.lattice import border_flags, check_image, lattice_constant_candidates_px, locate_columns
from kernels.patches import patch_half_width_px

MIN_COLUMNS = 20
"""Fewest columns (with a peak) for a lattice worth classifying."""
MIN_LATTICE_AREA_FRACTION = 0.10
"""Smallest fraction of the image that must be lattice area. Measured values: docs/classify.md, "Refusals" (noise,
amorphous-like texture and a square lattice give no honeycomb or a few per mille of the image, the real MoS2
frame 0.99). Tested: tests/test_inference_fuzz.py refuses those no-lattice images, tests/test_inference_real.py
checks the real frame's fraction."""
MAX_CATALOG_DEVIATION = 0.15
"""A lattice constant (from the image and a known pixel size) further than this from every catalog host is not
a 1H-MX2 lattice at that pixel size: refused. Real calibrations are off by up to ~5 %; the hosts span
3.16-3.72 Å."""


@dataclass
class Sites:
    """Sites of one image: (N, 2) (row, col) px, (N,) sublattice index from geometry (0/1), (N,) has_peak,
    (N,) on_border; (N, 2, 2) local lattice transforms; (H, W) lattice mask; the lattice estimates."""

    positions: np.ndarray
    fitted_sublattice: np.ndarray
    has_peak: np.ndarray
    on_border: np.ndarray
    lattice_constant_px: float
    autocorrelation_lattice_constant_px: float
    angle_deg: float
    fit_rms_px: float
    timings_s: dict = field(default_factory=dict)
    transforms: np.ndarray | None = None
    lattice_mask: np.ndarray | None = None
    lattice_constant_px_range: tuple[float, float] | None = None
    stats: dict = field(default_factory=dict)

    @property
    def lattice_area_fraction(self) -> float:
        return float(self.lattice_mask.mean()) if self.lattice_mask is not None else 1.0


GOOD_LATTICE_AREA_FRACTION = 0.3
"""``locate_sites`` tries the next autocorrelation estimate of ``a`` unless the first gives lattice over at least
this fraction of the image."""


def locate_sites(image: np.ndarray, smooth_sigma_fraction: float = 0.08) -> Sites:
    """Lattice constant (autocorrelation: a first estimate), then columns, empty sites, sublattices and the
    lattice area from the local honeycomb (``kernels.lattice.locate_columns``). When the most likely
    estimate of ``a`` finds lattice over less than ``GOOD_LATTICE_AREA_FRACTION`` of the image, the next ones are
    tried and the one covering most lattice kept. ``ValueError`` when there is no honeycomb at all."""
    image = check_image(image)
    t0 = time.perf_counter()
    estimates = lattice_constant_candidates_px(image)
    t1 = time.perf_counter()
    best, best_a0, error = None, None, None
    for a0 in estimates:
        try:
            lat = locate_columns(image, a0, smooth_sigma_fraction)
        except ValueError as err:
            error = error or err
            continue
        if best is None or lat.lattice_area_fraction > best.lattice_area_fraction:
            best, best_a0 = lat, a0
        if lat.lattice_area_fraction >= GOOD_LATTICE_AREA_FRACTION:
            break
    if best is None:
        raise error
    t2 = time.perf_counter()
    lat = best
    a = lat.lattice_constant_px
    return Sites(lat.positions, lat.sublattice, lat.has_peak, border_flags(lat.positions, image.shape,
                                                                            patch_half_width_px(a)),
                 a, best_a0, lat.angle_deg, lat.local_rms_px, {"lattice": t1 - t0, "columns": t2 - t1},
                 lat.transforms, lat.lattice_mask, lat.lattice_constant_px_range, lat.stats)


def lattice_refusal(sites: Sites, pixel_size_angstrom: float | None, catalog) -> str | None:
    """Why this image holds no lattice worth classifying, or None: too few columns, too little lattice area
    (no significant periodicity), or (with a known pixel size) a lattice constant far from every catalog
    host."""
    n_cols = int(sites.has_peak.sum())
    if n_cols < MIN_COLUMNS:
        return (f"no lattice: {n_cols} columns found (need at least {MIN_COLUMNS}); is this an atomic-resolution "
                "image of a 1H-MX2 layer?")
    frac = sites.lattice_area_fraction
    if frac < MIN_LATTICE_AREA_FRACTION:
        return (f"no lattice: only {100 * frac:.1f} % of the image shows a periodic honeycomb (need "
                f"{100 * MIN_LATTICE_AREA_FRACTION:.0f} %): noise, amorphous material or another structure?")
    if pixel_size_angstrom:
        a = sites.lattice_constant_px * pixel_size_angstrom
        dev = {name: a / h.lattice_constant_angstrom - 1 for name, h in catalog.hosts.items()}
        nearest = min(dev, key=lambda k: abs(dev[k]))
        if abs(dev[nearest]) > MAX_CATALOG_DEVIATION:
            return (f"lattice constant {a:.3f} Å ({sites.lattice_constant_px:.2f} px x {pixel_size_angstrom:.4g} Å) "
                    f"is {100 * dev[nearest]:+.0f} % from the nearest catalog host ({nearest}, "
                    f"{catalog.hosts[nearest].lattice_constant_angstrom} Å): wrong pixel size "
                    "(--pixel-size-angstrom), or not a 1H-MX2 image")
    return None
