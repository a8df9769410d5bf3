"""What a frame's imaging looks like, measured from the image and its located sites, and the dataset-config
overrides that make a model's training data look the same (docs/frame-matching.md).

``measure_frame_imaging`` is pure: image + ``inference.classify.Sites`` in, a frozen ``FrameImaging`` out.

- **Sampling**: the lattice constant in pixels (and, given the host's lattice constant, the pixel size).
- **Column width**: an isotropic 2-D Gaussian (plus a background and the three nearest columns of the other
  sublattice, fitted with them) fitted to the pixels around every column of a sublattice, each pixel at its
  exact offset from its column (no resampling), with a robust loss so that vacancies and dopants do not pull it.
  The probe blur the simulation's noise model adds (``kernels.noise.probe_blur``, σ in Å) is then
  ``sqrt(σ_column² - σ_intrinsic²)``, where σ_intrinsic is the width of an unblurred simulated column:
  ``INTRINSIC_COLUMN_SIGMA_PER_LAMBDA_OVER_ALPHA`` × λ/α (calibrated on abTEM columns, tests/test_frame_imaging.py).
- **Levels and noise**: the pixel nearest each column centre (corrected to the centre with the fitted Gaussian)
  and nearest each hollow site (the empty centre of a hexagon, a stationary point of the image), per group the
  median and a robust standard deviation; and the noise variance against the expected level from every fitted
  pixel (``noise_against_level``).
- **Raw counts**: not display data, and a noise variance that grows linearly with the level (the slope is the
  gain in counts per electron; an intercept beyond read noise is a DC offset, zero electrons at -intercept/gain).
  Then the electrons per pixel ((lattice mean - zero level) / gain) and, given the context's detected
  fraction of the beam (``lattice_mean_fraction``, from a clean simulated image of the context) and the pixel
  size, the dose in e/Å².
- **Display export**: the file reader's word (``contract.images``: display, normalised, raw), else an 8-bit
  array, integers 0..255 reaching 250, or floats within [-1, 1]; the fractions of pixels clipped at the black
  level and at white, the grey levels used and the range spanned. For every frame the peak signal-to-noise
  (brighter column over the noise at its peaks: not biased by a clipped background).

What cannot be measured is said in ``FrameImaging.not_estimated`` (plain sentences).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.signal import resample
from scipy.spatial import cKDTree
from scipy.stats import median_abs_deviation

from kernels.noise import DISPLAY_EXPORT_RANGES, probe_blur
from kernels.optics import wavelength_angstrom

from .sites import Sites

SQRT3 = 3 ** 0.5

INTRINSIC_COLUMN_SIGMA_PER_LAMBDA_OVER_ALPHA = {"HAADF": 0.206, "MAADF": 0.220}
"""σ of an unblurred simulated column (this module's Gaussian fit to the brighter sublattice, Å) in units of λ/α
(α the convergence semi-angle), per detector. An aberration-free probe's Gaussian σ is about 0.21 λ/α. Measured on
clean abTEM WSe2 fields (project multislice settings; tests/fields/): HAADF 0.209, 0.207, 0.210 (60, 80, 100 keV),
MAADF 0.225 (60 keV, where Se2 is the brighter column); the values here are those that recover a known blur of
0.2-0.4 Å best (a column is not exactly Gaussian, so blurs add in quadrature only approximately)."""

FIT_RADIUS_BONDS = 0.85
"""Pixels within this many nearest-neighbour distances (a/√3) of a column enter the column fit."""
MAX_FIT_SITES = 80
"""Columns per sublattice used for the fit (evenly spaced through the list): enough for a smooth average."""
MAX_FIT_PIXELS = 40_000
"""... and fewer where that many pixels are reached first (a finely sampled frame has ~1 200 pixels per column):
the fit's cost grows with its pixels, its precision no longer does."""
MIN_INTEGER_FRACTION = 0.999
"""Fraction of pixels with integer values for an integer-valued frame."""
INTENSITY_KINDS = ("display", "normalised", "raw")
DISPLAY_WHITE_MIN = 250
"""An integer frame within 0..255 that reaches this value is a display export (a display stretch puts its white
level at 255; raw counts that stop just short of 256 would be a coincidence). Zeros alone do not tell: a
low-dose counting frame has many."""
POISSON_MIN_VARIANCE_RATIO = 1.5
"""Raw counts need the brightest level's noise variance at least this many times the background's."""
POISSON_MIN_R2 = 0.9
"""... and a straight line through the (level, variance) bins explaining at least this fraction of their spread."""
POISSON_MAX_INTERCEPT = 0.3
"""A fitted intercept within this fraction of the brightest level's variance is read noise on counts that start
at 0 (the variances are known to ~5-10 %); a larger one is a DC offset: zero electrons sit at -intercept/gain
(DigiScan frames carry offsets of ~1e6)."""
CLIP_SIGMAS = 3.0
"""Noise std per group: values further than this many std from the median are dropped (vacancies, dopants) until
none is; the std is then corrected for the clipped tails of a normal distribution."""


_CLIPPED_STD_RATIO = math.sqrt(1 - 2 * CLIP_SIGMAS * math.exp(-CLIP_SIGMAS**2 / 2) / math.sqrt(2 * math.pi)
                               / math.erf(CLIP_SIGMAS / math.sqrt(2)))  # std of a normal cut at ±k σ, over σ


@dataclass(frozen=True)
class FrameImaging:
    """A frame's imaging (module docstring). Levels are in the frame's units (counts or grey values); ``None``
    where not measured (``not_estimated`` says why)."""

    lattice_constant_px: float
    pixel_size_angstrom: float | None
    column_sigma_px: float  # the brighter sublattice's column
    column_sigma_angstrom: float | None
    intrinsic_column_sigma_angstrom: float | None
    probe_blur_sigma_angstrom: float | None
    sublattice_levels: tuple[float, float]  # median column centre of sublattice 0, 1
    sublattice_noise_std: tuple[float, float]
    background_level: float  # median hollow site
    background_noise_std: float
    lattice_mean_level: float
    peak_snr: float  # (brighter column - background) / noise std at the brighter columns
    integer_valued: bool
    display_export: bool
    eight_bit: bool
    normalised: bool
    black_clip_fraction: float
    white_clip_fraction: float
    grey_levels_used: int
    display_range_fraction: float  # display data: (max - min) over the format's range (255, or 1 for normalised)
    noise_gain: float | None  # d variance / d level: counts per electron for raw counts
    noise_intercept: float | None
    zero_level: float | None  # the level of zero electrons (a DC offset), for Poisson-like frames
    poisson_like: bool
    raw_counts: bool
    electrons_per_pixel: float | None  # lattice mean
    dose_e_per_angstrom2: float | None
    columns_fitted: int
    not_estimated: tuple[str, ...]

    def as_dict(self) -> dict:
        return asdict(self)


def intrinsic_column_sigma_angstrom(beam_energy_kev: float, convergence_semiangle_mrad: float,
                                    detector: str) -> float:
    """σ [Å] of an unblurred simulated column at this beam energy, probe convergence and detector (calibrated)."""
    return INTRINSIC_COLUMN_SIGMA_PER_LAMBDA_OVER_ALPHA[detector.upper()] * wavelength_angstrom(beam_energy_kev) / (
        convergence_semiangle_mrad * 1e-3)


def _neighbour_geometry(own: np.ndarray, other: np.ndarray, bond_px: float):
    """Mean offsets (3, 2) (row, col) from a column of ``own`` to its three nearest columns of ``other``, and
    each column of ``own`` placed where those neighbours put it (mean of neighbour - offset; rows whose three
    neighbours are not all within 1.3 bonds are dropped). The placement is independent of the column's own
    pixels: a detected peak position leans towards that column's noise, which would bias its value upwards and
    its spread downwards. None when fewer than 3 columns have three neighbours."""
    if len(own) == 0 or len(other) < 3:
        return None
    dist, idx = cKDTree(other).query(own, k=3)
    ok = np.all(dist < 1.3 * bond_px, axis=1)
    if ok.sum() < 3:
        return None
    vec = other[idx[ok]] - own[ok, None, :]  # (n, 3, 2)
    theta = np.arctan2(vec[..., 0], vec[..., 1])
    base = np.angle(np.exp(3j * theta).mean()) / 3  # the three directions are 120° apart: 3θ agree
    directions = base + np.arange(3) * 2 * np.pi / 3
    k = np.argmin(np.abs(np.angle(np.exp(1j * (theta[..., None] - directions)))), axis=-1)  # (n, 3)
    offsets = np.stack([vec[k == j].mean(axis=0) if np.any(k == j) else bond_px * np.array(
        [np.sin(directions[j]), np.cos(directions[j])]) for j in range(3)])
    placed = (other[idx[ok]] - offsets[k]).mean(axis=1)
    return offsets, placed


def _robust_std(values: np.ndarray) -> float:
    """Std of the bulk of ``values`` by iterative clipping at ``CLIP_SIGMAS`` (a MAD start): half the variance
    of the MAD's own estimate, and no steps on integer counts."""
    keep = np.asarray(values, dtype=np.float64)
    std = median_abs_deviation(keep, scale="normal")
    if std == 0:
        std = keep.std()
    for _ in range(10):
        inside = keep[np.abs(keep - np.median(keep)) <= CLIP_SIGMAS * std]
        if len(inside) < 3:
            break
        new = inside.std(ddof=1) / _CLIPPED_STD_RATIO
        if math.isclose(new, std, rel_tol=1e-4):
            break
        std = new
    return float(std)


def _nearest_values(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values of the pixels nearest ``points`` inside the image and those pixels' offsets from the points."""
    pix = np.rint(points).astype(int)
    inside = (pix[:, 0] >= 0) & (pix[:, 1] >= 0) & (pix[:, 0] < image.shape[0]) & (pix[:, 1] < image.shape[1])
    pix = pix[inside]
    return image[pix[:, 0], pix[:, 1]], pix - points[inside]


def _column_terms(params, dy, dx, neighbours):
    """The model's terms: centre Gaussian, its r², the neighbours' summed Gaussians and their Σ e r²."""
    _, _, s0, _, s1 = params
    r0 = dy**2 + dx**2
    centre = np.exp(-r0 / (2 * s0**2))
    ring = np.zeros_like(dy)
    ring_r2 = np.zeros_like(dy)
    for ny, nx in neighbours:
        rk = (dy - ny) ** 2 + (dx - nx) ** 2
        ek = np.exp(-rk / (2 * s1**2))
        ring += ek
        ring_r2 += ek * rk
    return centre, r0, ring, ring_r2


def _column_model(params, dy, dx, neighbours):
    centre, _, ring, _ = _column_terms(params, dy, dx, neighbours)
    return params[0] + params[1] * centre + params[3] * ring


def _column_jacobian(params, dy, dx, neighbours):
    _, a0, s0, a1, s1 = params
    centre, r0, ring, ring_r2 = _column_terms(params, dy, dx, neighbours)
    return np.stack([np.ones_like(dy), centre, a0 * centre * r0 / s0**3, ring, a1 * ring_r2 / s1**3], axis=1)


def fit_sites(n_columns: int, bond_px: float) -> int:
    """How many of ``n_columns`` columns enter the fit (``MAX_FIT_SITES``, ``MAX_FIT_PIXELS``), at least 20."""
    per_column = math.pi * (FIT_RADIUS_BONDS * bond_px) ** 2
    return int(min(n_columns, MAX_FIT_SITES, max(20, MAX_FIT_PIXELS // max(per_column, 1.0))))


@dataclass(frozen=True)
class ColumnFit:
    """The fitted column model (background, amplitude, σ_px, neighbour amplitude, neighbour σ_px) and the
    pixels it was fitted to: values, offsets from their column (dy, dx) and the model there."""

    params: np.ndarray
    values: np.ndarray
    dy: np.ndarray
    dx: np.ndarray
    model: np.ndarray


def fit_column(image: np.ndarray, centres: np.ndarray, neighbours: np.ndarray, bond_px: float,
               noise_std: float) -> ColumnFit:
    """Fit (background, amplitude, σ_px, neighbour amplitude, neighbour σ_px) to the pixels within
    ``FIT_RADIUS_BONDS`` of every centre, each at its exact offset. Robust (soft-L1) loss at the noise scale."""
    radius = FIT_RADIUS_BONDS * bond_px
    n_sites = fit_sites(len(centres), bond_px)
    centres = centres[np.linspace(0, len(centres) - 1, n_sites).astype(int)]
    span = np.arange(-math.ceil(radius), math.ceil(radius) + 1)
    grid = np.stack(np.meshgrid(span, span, indexing="ij"), axis=-1).reshape(-1, 2)
    pix = np.rint(centres)[:, None, :].astype(int) + grid[None]
    off = pix - centres[:, None, :]
    keep = ((off**2).sum(-1) <= radius**2) & (pix[..., 0] >= 0) & (pix[..., 1] >= 0) & \
        (pix[..., 0] < image.shape[0]) & (pix[..., 1] < image.shape[1])
    values = image[pix[keep][:, 0], pix[keep][:, 1]]
    dy, dx = off[keep][:, 0], off[keep][:, 1]
    r2 = dy**2 + dx**2
    background = float(np.percentile(values, 5))
    centre = float(np.median(values[r2 <= 1.0])) - background
    x0 = [background, max(centre, 1e-9), 0.2 * bond_px, 0.5 * max(centre, 1e-9), 0.2 * bond_px]
    scale = max(noise_std, 1e-6 * max(abs(centre), 1.0))
    fit = least_squares(lambda p: (_column_model(p, dy, dx, neighbours) - values) / scale, x0, loss="soft_l1",
                        jac=lambda p: _column_jacobian(p, dy, dx, neighbours) / scale, x_scale="jac",
                        bounds=([-np.inf, 0, 0.02 * bond_px, 0, 0.02 * bond_px],
                                [np.inf, np.inf, bond_px, np.inf, bond_px]))
    return ColumnFit(fit.x, values, dy, dx, _column_model(fit.x, dy, dx, neighbours))


LEVEL_BINS = 8
"""Noise variance is measured in this many bins of the column model's level (equal numbers of pixels). The top
bin holds the columns' flanks, where an error in a column's placement adds to the spread (its variance came out
~9 % above the Poisson value on synthetic lattices, the other bins within ~5 %): it is reported, not fitted."""
OFFSET_BIN_PX = 0.5
"""The model's shape error is removed per bin of this size in the pixel's offset from its column."""
MIN_PIXELS_PER_OFFSET_BIN = 3
"""Fewest pixels in an offset bin for its residuals to count (each is rescaled by √(n/(n-1)) for the bin mean
taken out); a frame of few columns has few pixels per bin."""


def noise_against_level(fits: list[ColumnFit]) -> tuple[np.ndarray, np.ndarray]:
    """(levels, variances) of the noise in ``LEVEL_BINS`` bins of the expected value, from every fitted pixel:
    residual from the fitted model less the mean residual at that offset (what the Gaussian misses), robust std
    per bin. Thousands of pixels per bin, against a few hundred column centres."""
    levels, residuals = [], []
    for fit in fits:
        r0 = fit.values - fit.model
        row, col = (np.floor(d / OFFSET_BIN_PX).astype(np.int64) for d in (fit.dy, fit.dx))
        key = row * 100003 + col
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        shape_error = np.bincount(inverse, weights=r0) / counts
        enough = counts[inverse] >= MIN_PIXELS_PER_OFFSET_BIN
        n = counts[inverse][enough]
        # a residual from a mean of n values has (n - 1)/n of the noise variance
        residuals.append((r0 - shape_error[inverse])[enough] * np.sqrt(n / (n - 1)))
        levels.append((fit.model + shape_error[inverse])[enough])
    level, resid = np.concatenate(levels), np.concatenate(residuals)
    if len(level) < 20 * LEVEL_BINS:  # too few columns for a noise measurement
        return np.empty(0), np.empty(0)
    edges = np.quantile(level, np.linspace(0, 1, LEVEL_BINS + 1))
    which = np.clip(np.searchsorted(edges, level, side="right") - 1, 0, LEVEL_BINS - 1)
    out = [(float(np.median(level[which == b])), _robust_std(resid[which == b]) ** 2)
           for b in range(LEVEL_BINS) if np.sum(which == b) >= 20]
    return np.array([o[0] for o in out]), np.array([o[1] for o in out])


def _hollow_sites(sublattice0: np.ndarray, offsets0: np.ndarray) -> np.ndarray:
    """One hollow site (hexagon centre) per column of sublattice 0: opposite one of its bonds."""
    return sublattice0 - offsets0[0][None, :]


def measure_frame_imaging(image: np.ndarray, sites, *, lattice_constant_angstrom: float | None = None,
                          beam_energy_kev: float | None = None, convergence_semiangle_mrad: float | None = None,
                          detector: str | None = None, lattice_mean_fraction: float | None = None,
                          intensity: str | None = None) -> FrameImaging:
    """Measure a frame's imaging (module docstring). ``sites``: ``inference.classify.locate_sites(image)``.
    ``lattice_constant_angstrom``: the host's (gives the pixel size, so the blur in Å); ``beam_energy_kev`` and
    ``convergence_semiangle_mrad`` and ``detector`` (HAADF, MAADF): the probe (gives the intrinsic column width,
    so the blur);
    ``lattice_mean_fraction``: the mean detected fraction of the beam over the context's lattice (from a clean
    simulated image; gives the dose from the electrons per pixel); ``intensity``: what the file reader says the
    values are (``contract.images.ImageFile.intensity``: display, normalised or raw), else decided from the
    values: an 8-bit array, integers 0..255 reaching ``DISPLAY_WHITE_MIN``, or floats within [-1, 1] are display
    data. ``ValueError`` for too few columns."""
    stored_as_8bit = np.asarray(image).dtype == np.uint8
    image = np.asarray(image, dtype=np.float64)
    if intensity not in (None, *INTENSITY_KINDS):
        raise ValueError(f"intensity must be one of {INTENSITY_KINDS} or None, got {intensity!r}")
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {image.shape}")
    missing: list[str] = []
    a_px = float(sites.lattice_constant_px)
    bond = a_px / SQRT3
    usable = np.asarray(sites.has_peak, bool) & ~np.asarray(sites.on_border, bool)
    pos = np.asarray(sites.positions, dtype=np.float64)
    sub = np.asarray(sites.fitted_sublattice)
    groups = [pos[usable & (sub == s)] for s in (0, 1)]
    if min(len(g) for g in groups) < 3:
        raise ValueError(f"too few columns to measure the imaging ({len(groups[0])} and {len(groups[1])} per "
                         "sublattice away from the border)")
    geometry = [_neighbour_geometry(groups[s], pos[sub == 1 - s], bond) for s in (0, 1)]
    if any(g is None for g in geometry):
        raise ValueError("too few columns with three neighbours of the other sublattice to measure the imaging")
    offsets = [g[0] for g in geometry]
    groups = [g[1] for g in geometry]
    # the lattice constant from the measured bonds (a = √3 x the nearest-neighbour distance), over the columns used
    a_px = float(SQRT3 * np.mean(np.linalg.norm(np.concatenate(offsets), axis=1)))
    bond = a_px / SQRT3
    hollow_values, _ = _nearest_values(image, _hollow_sites(groups[0], offsets[0]))
    if len(hollow_values) < 3:
        raise ValueError("too few hollow sites inside the image to measure the background")
    background, background_std = float(np.median(hollow_values)), _robust_std(hollow_values)

    fits, levels, stds = [], [], []
    for s in (0, 1):
        fit = fit_column(image, groups[s], offsets[s], bond, max(background_std, 1e-12))
        fits.append(fit)
        p = fit.params
        values, off = _nearest_values(image, groups[s])
        # the nearest pixel sits off the centre by up to half a pixel: back to the centre along the fitted column
        values = values + p[1] * (1 - np.exp(-(off**2).sum(axis=1) / (2 * p[2] ** 2)))
        levels.append(float(np.median(values)))
        stds.append(_robust_std(values))
    bright = int(np.argmax(levels))
    sigma_px = float(fits[bright].params[2])
    pixel = lattice_constant_angstrom / a_px if lattice_constant_angstrom else None
    sigma_angstrom = sigma_px * pixel if pixel else None
    intrinsic = blur = None
    if pixel is None:
        missing.append("pixel size and blur in Å: the host's lattice constant was not given")
    if beam_energy_kev and convergence_semiangle_mrad and str(detector).upper() in \
            INTRINSIC_COLUMN_SIGMA_PER_LAMBDA_OVER_ALPHA:
        intrinsic = intrinsic_column_sigma_angstrom(beam_energy_kev, convergence_semiangle_mrad, str(detector))
    else:
        missing.append("probe blur: the beam energy, convergence and detector (which set the unblurred column width) "
                       "were not all given")
    if sigma_angstrom is not None and intrinsic is not None:
        blur = math.sqrt(max(sigma_angstrom**2 - intrinsic**2, 0.0))

    # value format: integers, the 8-bit range, normalised floats, clipping
    finite = image[np.isfinite(image)]
    integer_valued = bool(np.mean(finite == np.round(finite)) >= MIN_INTEGER_FRACTION)
    lo, hi = float(finite.min()), float(finite.max())
    black = float(np.mean(finite <= lo))
    white = float(np.mean(finite >= hi))
    eight_bit = integer_valued and lo >= 0 and hi <= 255
    if intensity is None:  # what the values alone say (contract.images decides the same way from the file)
        normalised = not integer_valued and lo >= -1.0 and hi <= 1.0
        display = bool(stored_as_8bit or (eight_bit and hi >= DISPLAY_WHITE_MIN) or normalised)
    else:
        normalised = intensity == "normalised"
        display = intensity in ("display", "normalised")
    if not display:
        black = white = 0.0  # the extreme values of counts are data, not a display's clipping
    grey_levels = int(len(np.unique(finite))) if eight_bit or display else 0
    # the contrast stretch: how much of the format's range the frame spans
    stretch = (hi - lo) / (255.0 if eight_bit else 1.0) if display else 0.0

    # noise: variance against expected level over the fitted pixels (the top bin, the columns' flanks, not fitted)
    means, variances = noise_against_level(fits)
    gain = intercept = zero_level = None
    poisson = False
    if len(means) >= 3 and np.ptp(means[:-1]) > 0:
        gain, intercept = (float(v) for v in np.polyfit(means[:-1], variances[:-1], 1))
        fitted = variances[:-1]
        r2 = 1 - np.sum((fitted - gain * means[:-1] - intercept) ** 2) / max(np.sum((fitted - fitted.mean()) ** 2),
                                                                             1e-300)
        dark, brightest = int(np.argmin(means)), int(np.argmax(means))
        poisson = bool(gain > 0 and variances[brightest] >= POISSON_MIN_VARIANCE_RATIO * variances[dark]
                       and r2 >= POISSON_MIN_R2)
        if poisson:  # the level of zero electrons: 0 unless the line says there is an offset
            offset = abs(intercept) > POISSON_MAX_INTERCEPT * variances[brightest]
            zero_level = -intercept / gain if offset else 0.0
    raw = bool(poisson and not display)
    lattice_mean = float(np.mean(image[sites.lattice_mask])) if getattr(sites, "lattice_mask", None) is not None \
        and np.any(sites.lattice_mask) else float(np.mean(finite))
    electrons = dose = None
    if raw:
        electrons = (lattice_mean - zero_level) / gain
        if pixel is not None and lattice_mean_fraction:
            dose = electrons / (pixel**2 * lattice_mean_fraction)
        else:
            missing.append("dose: needs the pixel size and the context's detected fraction of the beam "
                           "(lattice_mean_fraction from a clean simulated image)")
    elif display:
        missing.append("dose: a display export keeps no counts (the signal-to-noise stands in for it)")
        missing.append("palette gamma: not separable from the columns' own contrast")
    else:
        missing.append("dose: the values are not raw counts (their noise variance does not grow in proportion to "
                       "the level: processed, filtered or scan-noise-dominated data)")
    snr = (levels[bright] - background) / stds[bright] if stds[bright] > 0 else float("inf")
    return FrameImaging(
        lattice_constant_px=a_px, pixel_size_angstrom=pixel, column_sigma_px=sigma_px,
        column_sigma_angstrom=sigma_angstrom, intrinsic_column_sigma_angstrom=intrinsic,
        probe_blur_sigma_angstrom=blur, sublattice_levels=(levels[0], levels[1]),
        sublattice_noise_std=(stds[0], stds[1]), background_level=background, background_noise_std=background_std,
        lattice_mean_level=lattice_mean, peak_snr=float(snr), integer_valued=integer_valued,
        display_export=display, eight_bit=eight_bit, normalised=normalised, black_clip_fraction=black,
        white_clip_fraction=white, grey_levels_used=grey_levels, display_range_fraction=float(stretch),
        noise_gain=gain, noise_intercept=intercept, zero_level=zero_level, poisson_like=poisson, raw_counts=raw,
        electrons_per_pixel=electrons, dose_e_per_angstrom2=dose,
        columns_fitted=fit_sites(len(groups[0]), bond) + fit_sites(len(groups[1]), bond),
        not_estimated=tuple(missing))


REFERENCE_PIXEL_ANGSTROM = 0.1
"""A clean reference field is Fourier-resampled to about this pixel (exact for a scan at Nyquist) before it is
measured: finer than real frames, so the column fit is not limited by the simulation's coarse scan."""


def reference_imaging(field, blur_angstrom: float = 0.0,
                      pixel_angstrom: float = REFERENCE_PIXEL_ANGSTROM) -> FrameImaging:
    """This module's measurement of a clean simulated field (``simulate.fullfield.CleanField``: values are
    fractions of the beam) blurred by ``blur_angstrom``, at the field's own column positions: the ``reference``
    of ``frame_overrides`` (column and background fractions, the lattice mean fraction)."""
    clean = np.asarray(field.clean, dtype=np.float64)
    n = int(round(clean.shape[0] * field.pixel_angstrom / pixel_angstrom))
    fine = resample(resample(clean, n, axis=0), n, axis=1)
    pixel = clean.shape[0] * field.pixel_angstrom / n
    image = probe_blur(fine, blur_angstrom, pixel)
    a_angstrom = float(field.meta["lattice_constant_angstrom"])
    positions = np.stack([field.truth["y_angstrom"], field.truth["x_angstrom"]], axis=1) / pixel
    a_px = a_angstrom / pixel
    border = np.any((positions < a_px) | (positions > np.array(image.shape) - 1 - a_px), axis=1)
    sublattice = (np.asarray(field.truth["sublattice"]) == "chalcogen").astype(int)
    sites = Sites(positions, sublattice, np.ones(len(positions), bool), border, a_px, a_px, 0.0, 0.0)
    return measure_frame_imaging(image, sites, lattice_constant_angstrom=a_angstrom)


BLUR_HALF_WIDTH_ANGSTROM = (0.05, 0.25)
"""Half-width of the matched blur range: the larger of 0.05 Å and 25 % of the measured blur (the calibration
recovers a known blur to about 0.02 Å; frames vary across the field)."""
DOSE_HALF_WIDTH = 0.4
"""The matched dose range is the measured dose ± 40 % (raw counts give it to ~5 %, the signal-to-noise route to
~20 %; frames vary in thickness and contamination)."""
CLIP_HALF_WIDTH = (0.03, 0.3)
"""Half-width of a matched clipped-fraction range: the larger of 3 % of the pixels and 30 % of the measured
fraction."""
MIN_PATCH_SIZE_PX = 9


def matched_patch_size_px(lattice_constant_px: float) -> int:
    """The odd patch size whose pixels per lattice constant, (P - 1)/√3 on a patch of side √3·a
    (``contract.patches.extract_patch``), are nearest the frame's."""
    size = SQRT3 * lattice_constant_px + 1
    return max(MIN_PATCH_SIZE_PX, int(2 * round((size - 1) / 2) + 1))


def dose_from_snr(peak_snr: float, peak_fraction: float, background_fraction: float,
                  pixel_size_angstrom: float) -> float:
    """Dose [e/Å²] at which Poisson noise gives a column of detected fraction ``peak_fraction`` over a background
    of ``background_fraction`` this peak signal-to-noise per pixel: SNR = (N_p - N_b)/√N_p with N = dose ×
    pixel area × fraction."""
    contrast = peak_fraction - background_fraction
    if not (contrast > 0 and peak_fraction > 0 and pixel_size_angstrom > 0):
        raise ValueError("dose_from_snr: needs a column brighter than the background and a pixel size")
    return float(peak_snr**2 * peak_fraction / (contrast**2 * pixel_size_angstrom**2))


def _around(value: float, half: float, low: float = 0.0, high: float = math.inf) -> list[float]:
    return [float(max(low, value - half)), float(min(high, value + half))]


def frame_overrides(imaging: FrameImaging, base_noise: dict, *, reference: FrameImaging | None = None
                    ) -> tuple[dict, tuple[str, ...]]:
    """Dataset-config overrides for a model built for this frame, and what stays at the base config's values
    (plain sentences: ``imaging.not_estimated``, one per topic, the topic being the text before the colon; a
    topic the overrides settle anyway, such as a display frame's dose through its signal-to-noise, is dropped).

    ``base_noise``: the base config's ``noise`` section (ranges not matched are kept). ``reference``: this
    function's measurement of a clean simulated image of the frame's context (values are fractions of the beam),
    blurred by the frame's blur; it turns a display frame's signal-to-noise, or raw counts without a detected
    fraction, into a dose.

    Returns ({"noise": {...}, "patches": {"patch_size_px": P}}, unmatched)."""
    noise = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in base_noise.items()}
    unmatched = {note.split(":")[0]: note for note in imaging.not_estimated}
    blur = imaging.probe_blur_sigma_angstrom
    if blur is not None:
        half = max(BLUR_HALF_WIDTH_ANGSTROM[0], BLUR_HALF_WIDTH_ANGSTROM[1] * blur)
        noise["probe_blur_sigma_angstrom"] = _around(blur, half)
    else:
        unmatched["probe blur"] = unmatched.get("probe blur", "probe blur: not measured") + \
            "; kept at the base config's range"
    dose = imaging.dose_e_per_angstrom2
    bright = int(np.argmax(reference.sublattice_levels)) if reference is not None else None
    if dose is None and reference is not None and imaging.pixel_size_angstrom:
        if imaging.raw_counts and imaging.electrons_per_pixel:
            dose = imaging.electrons_per_pixel / (imaging.pixel_size_angstrom**2 * reference.lattice_mean_level)
        elif np.isfinite(imaging.peak_snr):
            dose = dose_from_snr(imaging.peak_snr, reference.sublattice_levels[bright], reference.background_level,
                                 imaging.pixel_size_angstrom)
    if dose is not None:
        noise["dose_e_per_angstrom2"] = _around(dose, DOSE_HALF_WIDTH * dose, low=1e-3 * dose)
        unmatched.pop("dose", None)
    else:
        unmatched["dose"] = ("dose: kept at the base config's range (needs raw counts or the signal-to-noise, the "
                             "pixel size, and a clean simulated reference of the context)")
    if imaging.display_export:
        export = {"black_clip_fraction": _around(imaging.black_clip_fraction, max(
                      CLIP_HALF_WIDTH[0], CLIP_HALF_WIDTH[1] * imaging.black_clip_fraction), high=0.45),
                  "white_clip_fraction": _around(imaging.white_clip_fraction, max(
                      CLIP_HALF_WIDTH[0] / 3, CLIP_HALF_WIDTH[1] * imaging.white_clip_fraction), high=0.45),
                  "gamma": list(DISPLAY_EXPORT_RANGES["gamma"])}
        noise["display_export"] = export
        unmatched["palette gamma"] = ("palette gamma: not separable from the columns' own contrast; drawn from the "
                                      "span display exports use ({}-{})".format(*DISPLAY_EXPORT_RANGES["gamma"]))
    patches = {"patch_size_px": matched_patch_size_px(imaging.lattice_constant_px)}
    return {"noise": noise, "patches": patches}, tuple(unmatched.values())
