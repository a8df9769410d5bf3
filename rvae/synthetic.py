"""Test data with known truth, rendered in NumPy (no multislice): pure functions of a ``numpy.random.Generator``.

* ``rotated_shapes``: small items of one asymmetric motif (period n: n side lobes) at known angles, shifts and two
  known content factors (core width, lobe brightness): the tiny training set of the exact-property tests.
* ``two_grain_field``: an ADF-like image of a 1H-MX2 honeycomb with two grains of different lattice orientation
  (a wavy boundary along x) and a thickness (intensity) gradient along x, so that grain and thickness are
  independent; a few dopants (bright metal sites) and single chalcogen vacancies; probe blur, row jitter,
  Poisson counts, read noise and a DC offset (``kernels.noise.noisy_image``, the project's noise chain).
  Per-atom truth: position, grain, site type, local orientation, thickness factor, distance to the boundary.
* ``perovskite_field``: the same for a cubic perovskite ABO3 seen along [001] (a square lattice: bright A and
  fainter B columns, 4-fold sites, and faint O columns, 2-fold sites) in three grains stacked along y with
  wavy boundaries, and the same thickness gradient along x: the second lattice of issue 25.
"""
from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from contract.jsonio import json_text
from kernels.noise import noisy_image

SQRT3 = 3 ** 0.5
SITE_TYPES = ("M", "X2", "D", "VacX")
"""Site types of the rendered field (the metal and chalcogen columns of ``contract.classes`` and two defects)."""
PEROVSKITE_SITES = ("A", "B", "O")
"""Site types of ``perovskite_field``."""
PEROVSKITE_SITE_PERIOD = {"A": 4, "B": 4, "O": 2}
"""Rotational order of each perovskite site in projection: its angle is defined modulo 2π / n."""


def rotated_shapes(n: int, size: int, rng: np.random.Generator, period: int = 1, max_shift: float = 0.0,
                   noise_std: float = 0.02) -> dict[str, np.ndarray]:
    """``n`` (size, size) float32 items of a motif rotated by known angles (uniform on the circle).

    Motif in normalised coordinates (see ``rvae.model.coordinate_grid``): a Gaussian core of width
    ``width`` (content factor 1, uniform 0.15..0.3) at the centre and ``period`` lobes of brightness
    ``lobe`` (content factor 2, uniform 0.4..1.0) at radius 0.55, the first one at angle φ from +x towards +y;
    the whole motif shifted by t (uniform in ±``max_shift``). Returns images, angle, shift, width, lobe.
    """
    r = np.linspace(-1.0, 1.0, size)
    yy, xx = np.meshgrid(r, r, indexing="ij")
    angle = rng.uniform(-np.pi, np.pi, n)
    shift = rng.uniform(-max_shift, max_shift, (n, 2)) if max_shift > 0 else np.zeros((n, 2))
    width = rng.uniform(0.15, 0.3, n)
    lobe = rng.uniform(0.4, 1.0, n)
    images = np.empty((n, size, size))
    for i in range(n):
        x, y = xx - shift[i, 0], yy - shift[i, 1]
        img = np.exp(-(x**2 + y**2) / (2 * width[i] ** 2))
        for j in range(period):
            a = angle[i] + 2 * np.pi * j / period
            lx, ly = 0.55 * np.cos(a), 0.55 * np.sin(a)
            img += lobe[i] * np.exp(-((x - lx) ** 2 + (y - ly) ** 2) / (2 * 0.12**2))
        images[i] = img
    images += rng.normal(0, noise_std, images.shape)
    return {"images": images.astype(np.float32), "angle": angle, "shift": shift, "width": width, "lobe": lobe}


@dataclass(frozen=True)
class FieldSpec:
    """A rendered two-grain field. Units in the names; angles in degrees."""

    size_px: int = 512
    pixel_size_angstrom: float = 0.16
    lattice_constant_angstrom: float = 3.28  # WSe2
    grain_angles_deg: tuple[float, float] = (8.0, 38.0)
    boundary_amplitude_angstrom: float = 4.0
    thickness_range: tuple[float, float] = (0.6, 1.4)  # intensity factor at the left and right edges
    metal_amplitude: float = 0.030  # detected beam fraction at a metal column's centre (thickness 1)
    chalcogen_amplitude: float = 0.018
    dopant_amplitude: float = 0.045
    vacancy_amplitude: float = 0.009
    column_sigma_angstrom: float = 0.38
    background_fraction: float = 0.002
    dopant_fraction: float = 0.03
    vacancy_fraction: float = 0.04
    dose_e_per_angstrom2: float = 2e5
    probe_blur_sigma_angstrom: float = 0.1
    scan_jitter_px: float = 0.3
    read_noise_counts: float = 2.0
    dc_offset_counts: float = 500.0


def _honeycomb(spec: FieldSpec, angle_deg: float, extent: float):
    """Metal and chalcogen column positions (x, y) [Å] of a lattice rotated by ``angle_deg`` covering
    [-extent, 2 extent]² (orientation of a metal site's chalcogen neighbours: angle + 30° mod 120°)."""
    a = spec.lattice_constant_angstrom
    t = np.radians(angle_deg)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    a1, a2 = rot @ np.array([a, 0.0]), rot @ np.array([a / 2, a * SQRT3 / 2])
    n = int(np.ceil(3 * extent / a)) + 2
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    base = np.c_[i.ravel(), j.ravel()] @ np.stack([a1, a2]) + extent / 2
    out = []
    for k, site in enumerate(("M", "X2")):
        p = base + k * (a1 + a2) / 3
        keep = (p[:, 0] > -extent) & (p[:, 0] < 2 * extent) & (p[:, 1] > -extent) & (p[:, 1] < 2 * extent)
        out.append((p[keep], site))
    return out


def _gaussian_columns(shape: tuple[int, int], cols, rows, amplitudes, sigma_px: float, background: float) -> np.ndarray:
    """A clean (H, W) image: ``background`` plus one Gaussian column of ``sigma_px`` per (col, row, amplitude)."""
    h, w = shape
    clean = np.full((h, w), background)
    r = int(np.ceil(4 * sigma_px))
    for c, rr, amp in zip(cols, rows, amplitudes):
        c0, r0 = int(round(c)), int(round(rr))
        if c0 < -r or r0 < -r or c0 > w + r or r0 > h + r:
            continue
        ys, xs = slice(max(r0 - r, 0), min(r0 + r + 1, h)), slice(max(c0 - r, 0), min(c0 + r + 1, w))
        yy, xx = np.mgrid[ys, xs]
        clean[ys, xs] += amp * np.exp(-((xx - c) ** 2 + (yy - rr) ** 2) / (2 * sigma_px**2))
    return clean


def _render_columns(spec, pos: np.ndarray, amplitude: np.ndarray, rng: np.random.Generator):
    """The image of columns at ``pos`` (x, y) [Å] with ``amplitude`` (thickness 1), the thickness gradient along
    x and the noise chain of ``spec`` (a ``FieldSpec`` or ``PerovskiteSpec``). Returns (image (H, W) counts,
    cols, rows [px], thickness, inside: the column lies on the image)."""
    h = w = spec.size_px
    px = spec.pixel_size_angstrom
    lo, hi = spec.thickness_range
    thickness = lo + (hi - lo) * np.clip(pos[:, 0] / (h * px), 0, 1)
    cols, rows = pos[:, 0] / px, pos[:, 1] / px
    clean = _gaussian_columns((h, w), cols, rows, amplitude * thickness, spec.column_sigma_angstrom / px,
                              spec.background_fraction)
    image = noisy_image(clean, pixel_size_angstrom=px, probe_blur_sigma_angstrom=spec.probe_blur_sigma_angstrom,
                        scan_jitter_px=spec.scan_jitter_px, dose_e_per_angstrom2=spec.dose_e_per_angstrom2,
                        read_noise_counts=spec.read_noise_counts, rng=rng) + spec.dc_offset_counts
    inside = (cols >= 0) & (cols <= w - 1) & (rows >= 0) & (rows <= h - 1)
    return image, cols, rows, thickness, inside


def two_grain_field(spec: FieldSpec, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(image (H, W) float32 counts, per-atom truth) of ``spec`` (see the module docstring).

    Truth: ``x_px``, ``y_px`` (column, row), ``grain`` (0 above the boundary, 1 below), ``site`` (index into
    ``SITE_TYPES``), ``orientation_rad`` (direction to the nearest neighbours, modulo 2π/3, in the image frame:
    from +x towards +y), ``thickness`` (intensity factor), ``boundary_distance_angstrom``.
    """
    h = w = spec.size_px
    px = spec.pixel_size_angstrom
    extent = h * px
    def boundary_y(x):  # a wavy grain boundary across the field, along x: grain and thickness independent
        return extent / 2 + spec.boundary_amplitude_angstrom * np.sin(2 * np.pi * x / extent)

    pos, site, grain, orient = [], [], [], []
    for g, angle in enumerate(spec.grain_angles_deg):
        for p, s in _honeycomb(spec, angle, extent):
            mine = (p[:, 1] < boundary_y(p[:, 0])) if g == 0 else (p[:, 1] >= boundary_y(p[:, 0]))
            p = p[mine]
            pos.append(p)
            site += [s] * len(p)
            grain += [g] * len(p)
            offset = 30.0 if s == "M" else 90.0
            orient += [np.radians(angle + offset) % (2 * np.pi / 3)] * len(p)
    pos, grain, orient = np.concatenate(pos), np.asarray(grain), np.asarray(orient)
    site = np.asarray([SITE_TYPES.index(s) for s in site])
    # across the boundary, drop the later of two columns closer than half the M-X distance
    tree = cKDTree(pos)
    drop = np.zeros(len(pos), dtype=bool)
    for i, j in tree.query_pairs(0.5 * spec.lattice_constant_angstrom / SQRT3):
        if grain[i] != grain[j]:
            drop[max(i, j)] = True
    pos, grain, orient, site = pos[~drop], grain[~drop], orient[~drop], site[~drop]
    u = rng.random(len(pos))
    site[(site == 0) & (u < spec.dopant_fraction)] = SITE_TYPES.index("D")
    site[(site == 1) & (u < spec.vacancy_fraction)] = SITE_TYPES.index("VacX")
    amplitude = np.array([spec.metal_amplitude, spec.chalcogen_amplitude, spec.dopant_amplitude,
                          spec.vacancy_amplitude])[site]
    image, cols, rows, thickness, inside = _render_columns(spec, pos, amplitude, rng)
    truth = {"x_px": cols[inside], "y_px": rows[inside], "grain": grain[inside], "site": site[inside],
             "orientation_rad": orient[inside], "thickness": thickness[inside],
             "boundary_distance_angstrom": np.abs(pos[inside, 1] - boundary_y(pos[inside, 0]))}
    return image.astype(np.float32), truth


@dataclass(frozen=True)
class PerovskiteSpec:
    """A rendered three-grain ABO3 [001] field (units in the names; angles in degrees)."""

    size_px: int = 384
    pixel_size_angstrom: float = 0.16
    lattice_constant_angstrom: float = 3.9  # SrTiO3
    grain_angles_deg: tuple[float, float, float] = (5.0, 25.0, 62.0)
    boundary_amplitude_angstrom: float = 3.0
    thickness_range: tuple[float, float] = (0.6, 1.4)
    a_amplitude: float = 0.030
    b_amplitude: float = 0.020
    o_amplitude: float = 0.008
    column_sigma_angstrom: float = 0.38
    background_fraction: float = 0.002
    dose_e_per_angstrom2: float = 2e5
    probe_blur_sigma_angstrom: float = 0.1
    scan_jitter_px: float = 0.3
    read_noise_counts: float = 2.0
    dc_offset_counts: float = 500.0


def perovskite_field(spec: PerovskiteSpec, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(image (H, W) float32 counts, per-atom truth) of ``spec``: three grains stacked along y (wavy
    boundaries at a third and two thirds of the height), each a square ABO3 [001] lattice rotated by its angle.

    Truth as ``two_grain_field`` with ``site`` an index into ``PEROVSKITE_SITES`` and ``orientation_rad`` the
    lattice direction a1 for A and B sites (modulo 2π/4) and, for O sites, the direction to their two B
    neighbours (modulo π; the two O sublattices differ by 90°).
    """
    h = w = spec.size_px
    px = spec.pixel_size_angstrom
    extent = h * px
    a = spec.lattice_constant_angstrom

    def boundary_y(x, k):
        return extent * k / 3 + spec.boundary_amplitude_angstrom * np.sin(2 * np.pi * x / extent + k)

    pos, site, grain, orient = [], [], [], []
    for g, angle in enumerate(spec.grain_angles_deg):
        t = np.radians(angle)
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        a1, a2 = rot @ np.array([a, 0.0]), rot @ np.array([0.0, a])
        n = int(np.ceil(1.5 * extent / a)) + 2
        i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
        base = np.c_[i.ravel(), j.ravel()] @ np.stack([a1, a2]) + extent / 2
        for offset, s, o in (((0, 0), "A", t), ((0.5, 0.5), "B", t), ((0.5, 0), "O", t + np.pi / 2),
                             ((0, 0.5), "O", t)):
            p = base + offset[0] * a1 + offset[1] * a2
            y = p[:, 1]
            mine = (y >= boundary_y(p[:, 0], g)) if g > 0 else np.ones(len(p), bool)
            if g < 2:
                mine &= y < boundary_y(p[:, 0], g + 1)
            mine &= (p[:, 0] > -2) & (p[:, 0] < extent + 2) & (y > -2) & (y < extent + 2)
            p = p[mine]
            pos.append(p)
            site += [PEROVSKITE_SITES.index(s)] * len(p)
            grain += [g] * len(p)
            orient += [o % (2 * np.pi / PEROVSKITE_SITE_PERIOD[s])] * len(p)
    pos, site, grain, orient = np.concatenate(pos), np.asarray(site), np.asarray(grain), np.asarray(orient)
    drop = np.zeros(len(pos), dtype=bool)
    for i, j in cKDTree(pos).query_pairs(0.3 * a):  # across a boundary: keep the first of two close columns
        if grain[i] != grain[j]:
            drop[max(i, j)] = True
    pos, site, grain, orient = pos[~drop], site[~drop], grain[~drop], orient[~drop]
    amplitude = np.array([spec.a_amplitude, spec.b_amplitude, spec.o_amplitude])[site]
    image, cols, rows, thickness, inside = _render_columns(spec, pos, amplitude, rng)
    by = np.stack([boundary_y(pos[:, 0], k) for k in (1, 2)], axis=1)
    truth = {"x_px": cols[inside], "y_px": rows[inside], "grain": grain[inside], "site": site[inside],
             "orientation_rad": orient[inside], "thickness": thickness[inside],
             "boundary_distance_angstrom": np.abs(pos[inside, 1, None] - by[inside]).min(axis=1)}
    return image.astype(np.float32), truth


def write_field(out_dir, seed: int = 0, spec: FieldSpec | PerovskiteSpec | None = None):
    """Render ``two_grain_field`` (a ``FieldSpec``) or ``perovskite_field`` (a ``PerovskiteSpec``) and write
    ``image.npy``, ``image.json`` (pixel size: what ``inference`` and ``fit-image`` read beside an .npy) and
    ``truth.csv`` (one row per column). Returns the directory."""
    spec = spec or FieldSpec()
    render, names = (perovskite_field, PEROVSKITE_SITES) if isinstance(spec, PerovskiteSpec) \
        else (two_grain_field, SITE_TYPES)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    image, truth = render(spec, np.random.default_rng(np.random.SeedSequence(seed)))
    np.save(out / "image.npy", image)
    (out / "image.json").write_text(json_text({"pixel_size_angstrom": spec.pixel_size_angstrom,
                                                "rendered": asdict(spec), "seed": seed}, indent=2))
    columns = list(truth)
    with open(out / "truth.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns + ["site_type"])
        for i in range(len(truth["x_px"])):
            w.writerow([f"{truth[n][i]:.6g}" for n in columns] + [names[int(truth["site"][i])]])
    return out


def read_truth(path) -> dict[str, np.ndarray]:
    """``truth.csv`` back as arrays (``site_type`` dropped; ``site``/``grain`` as int)."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    out = {k: np.array([float(r[k]) for r in rows]) for k in rows[0] if k != "site_type"}
    for k in ("site", "grain"):
        out[k] = out[k].astype(int)
    return out
