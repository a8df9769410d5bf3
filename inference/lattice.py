"""Lattice and columns of a 1H-MX2 image: pure array-in/array-out functions.

Coordinates are pixels, ``(row, col) = (y, x)``. In projection a 1H-MX2 layer is a honeycomb: two
interpenetrating triangular sublattices (metal and chalcogen) of lattice constant ``a``, nearest columns
``a/√3`` apart, plus the empty hollow sites of the third offset.

* ``lattice_constant_px``: radially averaged autocorrelation. Its first peak may be the M–X distance a/√3,
  not a (seen on MX2 images, ../shared/NOTES.md). The ring at ``a`` holds the 6 same-sublattice neighbours of
  both sublattices, the one at a/√3 the 3 cross neighbours: per unit of circumference the ``a`` ring is
  higher by (I_M² + I_X²)/(√3 I_M I_X) >= 2/√3, so the highest peak is taken, not the first.
* ``find_peaks``: local maxima at a minimum distance from the lattice, with parabolic sub-pixel refinement.
* ``fit_lattice`` / ``lattice_sites``: the honeycomb fitted to the peaks by least squares (an affine map from
  lattice indices), then every site of both sublattices inside the image generated from the fit, so that
  columns without a peak (double vacancies, dim dopants) are still placed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SQRT3 = 3 ** 0.5


def check_image(image) -> np.ndarray:
    """A 2-D finite float64 copy of ``image``, or ``ValueError`` saying why not."""
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"image must be 2-D (rows, columns), got {arr.ndim}-D with shape {arr.shape}")
    if min(arr.shape) < 16:
        raise ValueError(f"image is too small ({arr.shape}): need at least 16 x 16 pixels")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"image must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"image holds {int(bad.sum())} NaN or infinite pixel(s), first at (row {r}, col {c})")
    if arr.std() == 0:
        raise ValueError("image is constant: no lattice to find")
    return arr


RADIAL_BIN_PX = 0.25
"""Radial bin of the autocorrelation profile: integer-pixel bins biased the peak by up to 2.4 % on a
14 px lattice with sharp columns; quarter-pixel bins (lightly smoothed) keep it under 0.5 %."""


def autocorrelation(image: np.ndarray) -> np.ndarray:
    """2-D autocorrelation of the mean-subtracted image, lag (0, 0) at the centre ``(rmax, rmax)``, lags up to
    ``rmax = min(H, W) // 2``: ``(H, W) -> (2 rmax + 1, 2 rmax + 1)``, normalised to 1 at zero lag. Zero
    padding avoids wrap-around; each lag is divided by its overlap area so that long lags are not damped."""
    img = check_image(image)
    img = img - img.mean()
    h, w = img.shape
    f = np.fft.rfft2(img, s=(2 * h, 2 * w))
    ac = np.fft.irfft2(np.abs(f) ** 2, s=(2 * h, 2 * w))
    ones = np.fft.rfft2(np.ones_like(img), s=(2 * h, 2 * w))
    overlap = np.fft.irfft2(np.abs(ones) ** 2, s=(2 * h, 2 * w))
    ac = np.fft.fftshift(ac / np.maximum(overlap, 1.0))
    rmax = min(h, w) // 2
    ac = ac[h - rmax:h + rmax + 1, w - rmax:w + rmax + 1]
    return ac / ac[rmax, rmax]


def radial_autocorrelation(image: np.ndarray) -> np.ndarray:
    """Radially averaged autocorrelation (integer-pixel radius bins): ``(H, W) -> (rmax + 1,)``, 1 at r = 0."""
    ac = autocorrelation(image)
    rmax = ac.shape[0] // 2
    yy, xx = np.indices(ac.shape)
    r = np.hypot(yy - rmax, xx - rmax)
    sel = r <= rmax
    ri = np.rint(r[sel]).astype(int)
    return np.bincount(ri, ac[sel]) / np.maximum(np.bincount(ri), 1)


def lattice_constant_px(image: np.ndarray, min_px: float = 3.0) -> float:
    """Lattice constant ``a`` in pixels.

    1. Coarse: the highest peak of the radially averaged autocorrelation beyond its first minimum (the ``a``
       ring, not the first, a/√3 one: module docstring).
    2. Fine: the radial peak is pulled outwards by the neighbouring 2a/√3 ring (3.4 % seen with sharp
       columns), so ``a`` is the median distance of the 2-D autocorrelation maxima (the six same-sublattice
       neighbour spots, parabola-refined) in 0.75-1.3 x the coarse value that reach 75 % of the highest one:
       the a spots carry I_M² + I_X², at least twice the I_M·I_X of the 2a/√3 spots (and the radial peak
       itself may sit on either ring when columns are sharp).
    Raises ``ValueError`` when there is no peak.
    """
    ac = autocorrelation(image)
    rmax = ac.shape[0] // 2
    yy, xx = np.indices(ac.shape)
    r = np.hypot(yy - rmax, xx - rmax)
    ri = np.rint(r[r <= rmax]).astype(int)
    prof = np.bincount(ri, ac[r <= rmax]) / np.maximum(np.bincount(ri), 1)
    start = int(max(min_px, 1))
    while start < len(prof) - 2 and not (prof[start] <= prof[start - 1] and prof[start] <= prof[start + 1]):
        start += 1  # skip the central peak: start after its first local minimum
    inner = np.arange(start + 1, len(prof) - 1)
    peaks = inner[(prof[inner] > prof[inner - 1]) & (prof[inner] >= prof[inner + 1])]
    if len(peaks) == 0:
        raise ValueError("no peak in the radially averaged autocorrelation: is this an atomic-resolution image "
                         "of a lattice, with at least a few unit cells across?")
    coarse = float(peaks[np.argmax(prof[peaks])])
    is_max = (ac == ndimage.maximum_filter(ac, size=3)) & (r >= 0.75 * coarse) & (r <= 1.3 * coarse) & (ac > 0)
    is_max[[0, -1], :] = is_max[:, [0, -1]] = False
    rows, cols = np.nonzero(is_max)
    if len(rows) < 2:
        return coarse
    # the a spots (I_M^2 + I_X^2) are at least twice the 2a/√3 spots (I_M I_X) beside them
    strong = ac[rows, cols] >= 0.75 * ac[rows, cols].max()
    rows, cols = rows[strong], cols[strong]
    dy = _parabola_vertex(ac[rows - 1, cols], ac[rows, cols], ac[rows + 1, cols])
    dx = _parabola_vertex(ac[rows, cols - 1], ac[rows, cols], ac[rows, cols + 1])
    return float(np.median(np.hypot(rows + dy - rmax, cols + dx - rmax)))


def _parabola_vertex(m, c, p):
    """Offset in [-0.5, 0.5] of the vertex of the parabola through (-1, m), (0, c), (1, p)."""
    d = m - 2 * c + p
    return np.where(d < 0, 0.5 * (m - p) / np.where(d < 0, d, -1), 0.0).clip(-0.5, 0.5)


def find_peaks(image: np.ndarray, min_distance_px: float, smooth_sigma_px: float = 1.0,
               threshold: float | None = None) -> np.ndarray:
    """Column candidates: local maxima of the Gaussian-smoothed image within a disk of radius
    ``min_distance_px``, above ``threshold`` (default: the smoothed image's median), refined to sub-pixel
    positions by a parabola along each axis. Returns (K, 2) float64 (row, col) and (K,) smoothed heights."""
    img = check_image(image)
    if min_distance_px < 1:
        raise ValueError(f"min_distance_px must be >= 1, got {min_distance_px}")
    s = ndimage.gaussian_filter(img, smooth_sigma_px, mode="nearest") if smooth_sigma_px > 0 else img
    r = int(np.floor(min_distance_px))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    footprint = yy**2 + xx**2 <= min_distance_px**2
    is_max = s == ndimage.maximum_filter(s, footprint=footprint, mode="nearest")
    thr = np.median(s) if threshold is None else threshold
    is_max &= s > thr
    is_max[0, :] = is_max[-1, :] = is_max[:, 0] = is_max[:, -1] = False  # no parabola on the edge
    rows, cols = np.nonzero(is_max)

    dy = _parabola_vertex(s[rows - 1, cols], s[rows, cols], s[rows + 1, cols])
    dx = _parabola_vertex(s[rows, cols - 1], s[rows, cols], s[rows, cols + 1])
    return np.c_[rows + dy, cols + dx], s[rows, cols]


@dataclass(frozen=True)
class HoneycombFit:
    """``position = origin + basis @ (i + k/3, j + k/3)`` in (row, col) pixels, ``basis`` (2, 2) with the
    lattice vectors as columns (|a1| = |a2| = a, 60° apart); occupied offsets ``sublattice_offsets`` (two of
    0, 1, 2; the third is the empty hollow). ``rms_px``: residual of the peaks used."""

    origin: np.ndarray
    basis: np.ndarray
    sublattice_offsets: tuple[int, int]
    rms_px: float
    n_peaks: int

    @property
    def lattice_constant_px(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.basis)) * 2 / SQRT3))

    @property
    def angle_deg(self) -> float:
        return float(np.degrees(np.arctan2(self.basis[0, 0], self.basis[1, 0])))


def _initial_basis(peaks: np.ndarray, a_px: float) -> np.ndarray:
    """Two lattice vectors of length ~a, 60° apart, from the peak pair vectors near length a."""
    from scipy.spatial import cKDTree

    tree = cKDTree(peaks)
    pairs = tree.query_pairs(1.15 * a_px, output_type="ndarray")
    if len(pairs) == 0:
        raise ValueError("no pair of columns at the lattice constant: cannot fit the lattice")
    vec = peaks[pairs[:, 1]] - peaks[pairs[:, 0]]
    length = np.hypot(*vec.T)
    vec = vec[(length > 0.85 * a_px)]
    if len(vec) < 3:
        raise ValueError("fewer than 3 column pairs at the lattice constant: cannot fit the lattice")
    # orientation modulo 60°: average e^{6 i θ}
    theta = np.arctan2(vec[:, 0], vec[:, 1])
    phi = np.angle(np.exp(6j * theta).mean()) / 6
    length = np.median(np.hypot(*vec.T))
    a1 = length * np.array([np.sin(phi), np.cos(phi)])
    a2 = length * np.array([np.sin(phi + np.pi / 3), np.cos(phi + np.pi / 3)])
    return np.c_[a1, a2]


def fit_lattice(peaks: np.ndarray, a_px: float, iterations: int = 3) -> HoneycombFit:
    """Least-squares honeycomb fit to (K, 2) peak positions given the lattice constant estimate ``a_px``.

    Each peak gets integer indices and the offset k in {0, 1, 2} nearest to it; the two most populated
    offsets are the sublattices. The affine map (origin + 2 x 2 basis) is refit on the peaks within
    0.25 a/√3 of their site, ``iterations`` times.
    """
    peaks = np.asarray(peaks, dtype=np.float64)
    if peaks.ndim != 2 or peaks.shape[1] != 2 or len(peaks) < 6:
        raise ValueError(f"need at least 6 peaks as (K, 2) positions to fit a lattice, got shape {peaks.shape}")
    basis = _initial_basis(peaks, a_px)
    # origin: a real column, not a noise peak: of the peaks with 3 neighbours at a/√3, the one nearest the
    # centroid (any peak when none has 3)
    from scipy.spatial import cKDTree

    nn = np.array([len(v) - 1 for v in cKDTree(peaks).query_ball_point(peaks, 1.15 * a_px / SQRT3)])
    far = np.array([len(v) - 1 for v in cKDTree(peaks).query_ball_point(peaks, 0.85 * a_px / SQRT3)])
    ring = (nn - far) >= 3
    candidates = peaks[ring] if ring.any() else peaks
    origin = candidates[np.argmin(np.hypot(*(candidates - peaks.mean(axis=0)).T))]
    offsets_frac = np.array([[0, 0], [1 / 3, 1 / 3], [2 / 3, 2 / 3]])
    for _ in range(iterations + 1):
        frac = np.linalg.solve(basis, (peaks - origin).T).T  # (K, 2)
        cand = frac[:, None, :] - offsets_frac[None]  # (K, 3, 2)
        ij = np.rint(cand)
        resid = np.einsum("ab,kob->koa", basis, cand - ij)
        dist = np.hypot(resid[..., 0], resid[..., 1])
        k = np.argmin(dist, axis=1)
        d = dist[np.arange(len(peaks)), k]
        good = d < 0.25 * np.hypot(*basis[:, 0]) / SQRT3
        counts = np.bincount(k[good], minlength=3)
        occupied = tuple(int(v) for v in np.sort(np.argsort(counts)[1:]))
        good &= np.isin(k, occupied)
        if good.sum() < 6:
            raise ValueError("too few columns sit on one honeycomb: cannot fit the lattice")
        lattice_frac = ij[np.arange(len(peaks)), k] + offsets_frac[k]  # (K, 2)
        design = np.c_[np.ones(good.sum()), lattice_frac[good]]  # position = origin + frac @ basis.T
        coef, *_ = np.linalg.lstsq(design, peaks[good], rcond=None)
        origin, basis = coef[0], coef[1:].T
    fitted = origin + lattice_frac[good] @ basis.T
    rms = float(np.sqrt(np.mean(np.sum((fitted - peaks[good]) ** 2, axis=1))))
    return HoneycombFit(origin=origin, basis=basis, sublattice_offsets=occupied, rms_px=rms,
                        n_peaks=int(good.sum()))


def lattice_sites(fit: HoneycombFit, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Every site of both occupied sublattices inside an image of ``shape`` (0 <= row <= H-1, same for col).

    Returns (N, 2) float64 (row, col) positions and (N,) int sublattice index (0: the first occupied
    offset, 1: the second); which one is the metal is decided by the caller.
    """
    h, w = shape
    corners = np.array([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1]], dtype=np.float64)
    frac = np.linalg.solve(fit.basis, (corners - fit.origin).T).T
    lo, hi = np.floor(frac.min(axis=0)) - 1, np.ceil(frac.max(axis=0)) + 1
    i, j = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    ij = np.c_[i.ravel(), j.ravel()]
    pos, sub = [], []
    for s, k in enumerate(fit.sublattice_offsets):
        p = fit.origin + (ij + k / 3) @ fit.basis.T
        pos.append(p)
        sub.append(np.full(len(p), s))
    pos, sub = np.concatenate(pos), np.concatenate(sub)
    inside = (pos[:, 0] >= 0) & (pos[:, 0] <= h - 1) & (pos[:, 1] >= 0) & (pos[:, 1] <= w - 1)
    return pos[inside], sub[inside]


def snap_to_peaks(sites: np.ndarray, peaks: np.ndarray, max_distance_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Replace each lattice site by its nearest peak within ``max_distance_px`` (a column's own refined
    position); sites without one keep their lattice position. Returns (N, 2) positions and (N,) bool
    ``has_peak``."""
    from scipy.spatial import cKDTree

    sites = np.asarray(sites, dtype=np.float64)
    if len(peaks) == 0 or len(sites) == 0:
        return sites.copy(), np.zeros(len(sites), dtype=bool)
    d, idx = cKDTree(peaks).query(sites, distance_upper_bound=max_distance_px)
    has = np.isfinite(d)
    out = sites.copy()
    out[has] = np.asarray(peaks)[idx[has]]
    return out, has


def border_flags(positions: np.ndarray, shape: tuple[int, int], margin_px: float) -> np.ndarray:
    """(N,) bool: True for a site closer than ``margin_px`` (√3·a/2 for a patch) to an image edge."""
    p = np.asarray(positions, dtype=np.float64)
    h, w = shape
    return ((p[:, 0] < margin_px) | (p[:, 1] < margin_px) | (p[:, 0] > h - 1 - margin_px)
            | (p[:, 1] > w - 1 - margin_px))
