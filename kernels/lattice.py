"""Lattice and columns of a 1H-MX2 image, found locally: pure array-in/array-out functions.

Coordinates are pixels, ``(row, col) = (y, x)``. In projection a 1H-MX2 layer is a honeycomb: two
interpenetrating triangular sublattices (metal and chalcogen) of lattice constant ``a``, nearest columns
``d = a/√3`` apart, plus the empty hollow sites of the third offset. Real frames are drifted, sheared,
glitched, miscalibrated and interrupted by holes and contamination, so nothing here fits one global lattice:

* ``lattice_constant_px``: a first estimate of ``a`` from the radially averaged autocorrelation (its highest
  peak, not the first: the first ring is the M–X distance a/√3, whose six spots each carry I_M·I_X, while the
  six spots of the ``a`` ring carry I_M² + I_X², at least twice as much).
* ``find_peaks``: column candidates, local maxima (``skimage.feature.peak_local_max``) of the smoothed image,
  refined to sub-pixel positions by a batched, iterated centre of mass (``refine_centroids``; no per-column
  fit).
* ``locate_columns``: the honeycomb built from local neighbourhoods, never from a global grid:
  1. the lattice vectors are measured locally: pairs of candidates about ``a`` apart (same-sublattice neighbours,
     present whether one or both sublattices show) folded onto three directions and smoothed into a field over
     ~1.5 a, so drift, shear, scan skew and miscalibration of several percent are followed;
  2. a candidate is a lattice point when at least two of its six same-sublattice neighbours sit where the
     local lattice puts them (noise peaks and amorphous texture fail this), inside the area where the image
     correlates with itself shifted by a lattice vector (``periodicity_map``);
  3. every pair of neighbouring lattice points has a honeycomb offset (0, 1/3 or 2/3 of the way along the
     lattice diagonal, in local lattice coordinates); offsets propagate through the neighbour graph
     (breadth-first, then majority votes, so one bond distorted by a scan-line glitch flips nothing), and of
     the three offsets the darkest is the hollow, the other two the sublattices (sublattice 1 at sublattice 0 +
     (1/3, 1/3): the same convention in every separate piece of lattice);
  4. dimmer peaks that their lattice neighbours place on a sublattice are columns too; sites with no peak are
     placed where three columns of the other sublattice (or five of six of their own) predict one, at the mean
     of their predictions (the centroid of the surrounding columns corrected by the local lattice);
  5. areas with no column within ~a/√3 or without periodicity (holes, contamination, amorphous carbon) are
     masked: no site is placed there.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components
from scipy.spatial import cKDTree
from scipy.stats import median_abs_deviation
from skimage.feature import peak_local_max

from contract.images import MAX_IMAGE_PIXELS, check_image  # noqa: F401 (defined with the reader; used here)

SQRT3 = 3 ** 0.5

OUTLIER_MADS = 20.0
"""``clip_outliers``: pixels further than this many (normal-scaled) median absolute deviations from the median
are hot pixels, cosmic rays or flipped bits, not columns (columns in the real MoS2 frame reach ~6)."""


def clip_outliers(image: np.ndarray) -> tuple[np.ndarray, int]:
    """``image`` with pixels beyond ``OUTLIER_MADS`` robust deviations from the median clipped to that bound,
    and how many were clipped (a single hot pixel otherwise dominates the autocorrelation and the peaks)."""
    img = np.asarray(image, dtype=np.float64)
    med = float(np.median(img))
    mad = float(median_abs_deviation(img, axis=None, scale="normal"))  # 1.4826 x the MAD: the normal sigma
    if mad == 0:
        return img, 0
    lo, hi = med - OUTLIER_MADS * mad, med + OUTLIER_MADS * mad
    n = int(((img < lo) | (img > hi)).sum())
    return (np.clip(img, lo, hi) if n else img), n


AUTOCORRELATION_MAX_PX = 512
"""The autocorrelation is computed on a central crop of at most this side: a dozen or more unit cells at the
usual 10-40 px lattice constants, enough for a first estimate of ``a`` (measured locally later), at 1/16 of
the cost on a 2048² frame."""


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


def _central_crop(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape
    r0, c0 = max((h - side) // 2, 0), max((w - side) // 2, 0)
    return img[r0:r0 + side, c0:c0 + side]


def lattice_constant_candidates_px(image: np.ndarray, min_px: float = 3.0, n: int = 3) -> list[float]:
    """Up to ``n`` estimates of the lattice constant ``a`` in pixels, most likely first (on a central crop of at
    most ``AUTOCORRELATION_MAX_PX``, after removing features larger than a tenth of it: a hole or a blob of
    contamination dominates the autocorrelation of a small frame otherwise).

    1. The peaks of the radially averaged autocorrelation beyond its first minimum, highest first (the ``a``
       ring is higher than the first, a/√3 one: module docstring).
    2. Each refined to the median distance of the 2-D autocorrelation maxima in 0.75-1.3 x its value that reach
       75 % of the highest one (the six same-sublattice spots carry I_M² + I_X², at least twice the I_M·I_X of
       the 2a/√3 spots beside them).
    Raises ``ValueError`` when there is no peak.
    """
    img = _central_crop(check_image(image), AUTOCORRELATION_MAX_PX)
    img = img - ndimage.gaussian_filter(img, max(min(img.shape) / 10, 2 * min_px), mode="nearest")
    ac = autocorrelation(img)
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
    out = []
    for coarse in peaks[np.argsort(-prof[peaks], kind="stable")][:n].astype(float):
        is_max = (ac == ndimage.maximum_filter(ac, size=3)) & (r >= 0.75 * coarse) & (r <= 1.3 * coarse) & (ac > 0)
        is_max[[0, -1], :] = is_max[:, [0, -1]] = False
        rows, cols = np.nonzero(is_max)
        if len(rows) < 2:
            out.append(coarse)
            continue
        strong = ac[rows, cols] >= 0.75 * ac[rows, cols].max()
        rows, cols = rows[strong], cols[strong]
        dy = _parabola_vertex(ac[rows - 1, cols], ac[rows, cols], ac[rows + 1, cols])
        dx = _parabola_vertex(ac[rows, cols - 1], ac[rows, cols], ac[rows, cols + 1])
        out.append(float(np.median(np.hypot(rows + dy - rmax, cols + dx - rmax))))
    return out


def lattice_constant_px(image: np.ndarray, min_px: float = 3.0) -> float:
    """The most likely estimate of the lattice constant in pixels (``lattice_constant_candidates_px``)."""
    return lattice_constant_candidates_px(image, min_px, 1)[0]


def _parabola_vertex(m, c, p):
    """Offset in [-0.5, 0.5] of the vertex of the parabola through (-1, m), (0, c), (1, p)."""
    d = m - 2 * c + p
    return np.where(d < 0, 0.5 * (m - p) / np.where(d < 0, d, -1), 0.0).clip(-0.5, 0.5)


def refine_centroids(image: np.ndarray, positions: np.ndarray, radius_px: float, iterations: int = 3) -> np.ndarray:
    """Sub-pixel column positions: each (K, 2) start moved to the intensity centroid of ``image`` (minus the
    window's minimum) in a disk of ``radius_px`` around the current estimate, ``iterations`` times, all
    columns at once (bilinear sampling). A column whose centroid would leave its start by more than
    ``radius_px`` keeps its start. Returns (K, 2) float64."""
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    if len(pos) == 0:
        return pos.copy()
    r = max(float(radius_px), 1.0)
    n = int(np.ceil(r))
    oy, ox = np.mgrid[-n:n + 1, -n:n + 1].astype(np.float64)
    disk = oy**2 + ox**2 <= r**2
    oy, ox = oy[disk], ox[disk]  # (M,)
    start, cur = pos.copy(), pos.copy()
    h, w = image.shape
    for _ in range(iterations):
        rows = (cur[:, 0, None] + oy[None]).clip(0, h - 1)
        cols = (cur[:, 1, None] + ox[None]).clip(0, w - 1)
        v = ndimage.map_coordinates(image, [rows.ravel(), cols.ravel()], order=1, mode="nearest").reshape(rows.shape)
        wgt = v - v.min(axis=1, keepdims=True)
        tot = wgt.sum(axis=1)
        ok = tot > 0
        step = np.zeros_like(cur)
        step[ok, 0] = (wgt[ok] * oy).sum(axis=1) / tot[ok]
        step[ok, 1] = (wgt[ok] * ox).sum(axis=1) / tot[ok]
        cur = cur + step
    cur[:, 0] = cur[:, 0].clip(0, h - 1)
    cur[:, 1] = cur[:, 1].clip(0, w - 1)
    far = np.hypot(*(cur - start).T) > r
    cur[far] = start[far]
    return cur


def _disk(radius_px: float) -> np.ndarray:
    """Boolean disk footprint of radius ``radius_px`` (skimage's square ``min_distance`` footprint merged
    honeycomb neighbours a/√3 apart along the diagonals)."""
    r = max(int(np.floor(radius_px)), 1)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return yy**2 + xx**2 <= max(radius_px, 1.0) ** 2


def find_peaks(image: np.ndarray, min_distance_px: float, smooth_sigma_px: float = 1.0,
               threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Column candidates: local maxima (``skimage.feature.peak_local_max``) within a disk of radius
    ``min_distance_px`` of the Gaussian-smoothed image above ``threshold`` (default: the smoothed image's
    median), refined by ``refine_centroids`` in a disk of ``min_distance_px / 2``. Returns (K, 2) float64
    (row, col) and (K,) smoothed heights at the integer maxima."""
    img = check_image(image)
    if min_distance_px < 1:
        raise ValueError(f"min_distance_px must be >= 1, got {min_distance_px}")
    s = ndimage.gaussian_filter(img, smooth_sigma_px, mode="nearest") if smooth_sigma_px > 0 else img
    thr = np.median(s) if threshold is None else threshold
    idx = peak_local_max(s, footprint=_disk(min_distance_px), min_distance=1, threshold_abs=thr, exclude_border=1)
    idx = idx[s[idx[:, 0], idx[:, 1]] > thr] if len(idx) else idx.reshape(0, 2)
    heights = s[idx[:, 0], idx[:, 1]] if len(idx) else np.zeros(0)
    pos = refine_centroids(s, idx.astype(np.float64), max(0.5 * min_distance_px, 1.0))
    return pos, heights


def border_flags(positions: np.ndarray, shape: tuple[int, int], margin_px: float) -> np.ndarray:
    """(N,) bool: True for a site closer than ``margin_px`` (√3·a/2 for a patch) to an image edge."""
    p = np.asarray(positions, dtype=np.float64).reshape(-1, 2)
    h, w = shape
    return ((p[:, 0] < margin_px) | (p[:, 1] < margin_px) | (p[:, 0] > h - 1 - margin_px)
            | (p[:, 1] > w - 1 - margin_px))


# ---------------------------------------------------------------------------------------------------------
# the local honeycomb

SAME_RANGE = (0.85, 1.09)
"""Same-sublattice neighbours are searched between these multiples of ``a`` (the next ring, M–X at 2a/√3 =
1.155 a, stays out even where the lattice is stretched by 5 %)."""
MATCH_TOLERANCE = 0.3
"""A predicted neighbour is found when a candidate lies within this fraction of d = a/√3 (a scan-line glitch of
3 px moves a 15 px bond by 0.2 d)."""
OFFSET_TOLERANCE = 0.35
"""Two candidates are on the same honeycomb when their offset, in local lattice coordinates x 3, is within this
of integers (u, v) with u ≡ v (mod 3): 0.35 / 3 ≈ 0.12 a."""
FIELD_SIGMA_A = 1.5
"""Smoothing of the local lattice-vector field, in lattice constants: long enough to average a few dozen
neighbour pairs, short enough to follow drift and shear of several percent across the frame."""
MASK_DISTANCE = 1.05
"""A pixel is lattice area when a column lies within this multiple of d (every point of a honeycomb, and of
either of its triangular sublattices, is within d of a column)."""
MIN_COMPONENT = 6
"""Smallest group of connected columns kept: fewer are stray peaks, not a lattice."""


@dataclass
class ColumnLattice:
    """Columns and empty sites of an image, from ``locate_columns``.

    positions (N, 2) px; sublattice (N,) 0/1 (geometry; which one is the metal is decided by the caller);
    has_peak (N,) bool (False: an empty site placed from its neighbours); transforms (N, 2, 2): the local affine
    map from a perfect honeycomb of constant ``lattice_constant_px`` to the image (identity on a perfect
    lattice); lattice_mask (H, W) bool, True where there is lattice; lattice_constant_px: the median of the
    local, area-equivalent lattice constants, lattice_constant_px_range their 5th-95th percentiles; angle_deg:
    direction of the first lattice vector (from the col axis towards +row); local_rms_px: rms distance of the
    found same-sublattice neighbours from where the local lattice predicts them; stats: counts for the report.
    """

    positions: np.ndarray
    sublattice: np.ndarray
    has_peak: np.ndarray
    transforms: np.ndarray
    lattice_mask: np.ndarray
    lattice_constant_px: float
    lattice_constant_px_range: tuple[float, float]
    angle_deg: float
    local_rms_px: float
    stats: dict = field(default_factory=dict)

    @property
    def lattice_area_fraction(self) -> float:
        return float(self.lattice_mask.mean())


class _Grid:
    """A coarse grid over the image for smoothed fields (normalised convolution: sums and weights are
    smoothed alike, so a field value is the average of the samples near it wherever there are any)."""

    def __init__(self, shape, cell_px: float):
        self.cell = float(cell_px)
        self.shape = (int(np.ceil(shape[0] / self.cell)) + 1, int(np.ceil(shape[1] / self.cell)) + 1)

    def smooth(self, points, values, sigma_px: float):
        """(M, 2) points, (M, C) values -> (gh, gw, C) smoothed means and (gh, gw) smoothed weights."""
        values = np.asarray(values, dtype=np.float64).reshape(len(points), -1)
        ij = np.floor(np.asarray(points) / self.cell).astype(int)
        i, j = ij[:, 0].clip(0, self.shape[0] - 1), ij[:, 1].clip(0, self.shape[1] - 1)
        flat = i * self.shape[1] + j
        n = self.shape[0] * self.shape[1]
        s = sigma_px / self.cell
        wts = ndimage.gaussian_filter(np.bincount(flat, minlength=n).reshape(self.shape).astype(float), s,
                                      mode="constant")
        sums = np.stack([ndimage.gaussian_filter(np.bincount(flat, values[:, c], n).reshape(self.shape), s,
                                                 mode="constant") for c in range(values.shape[1])], axis=-1)
        return sums / np.maximum(wts, 1e-12)[..., None], wts

    def sample(self, grid, points) -> np.ndarray:
        """Bilinear samples of a (gh, gw) or (gh, gw, C) grid at (M, 2) pixel points -> (M,) or (M, C)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) / self.cell - 0.5
        if grid.ndim == 2:
            return ndimage.map_coordinates(grid, [pts[:, 0], pts[:, 1]], order=1, mode="nearest")
        return np.stack([ndimage.map_coordinates(grid[..., c], [pts[:, 0], pts[:, 1]], order=1, mode="nearest")
                         for c in range(grid.shape[-1])], axis=-1)


def _pairs(points: np.ndarray, rmin: float, rmax: float):
    """Ordered pairs (i, j), i != j, of points between ``rmin`` and ``rmax`` apart: (E,), (E,), (E, 2) x_j - x_i."""
    if len(points) < 2:
        return np.zeros(0, int), np.zeros(0, int), np.zeros((0, 2))
    tree = cKDTree(points)
    m = tree.sparse_distance_matrix(tree, rmax, output_type="ndarray")
    keep = (m["v"] >= rmin) & (m["i"] != m["j"])
    i, j = m["i"][keep].astype(int), m["j"][keep].astype(int)
    return i, j, points[j] - points[i]


@dataclass
class _Basis:
    """Local lattice vectors: a field of A0 (at ``phi``) and A1 (at phi + 60°) over a grid."""

    grid: _Grid
    field: np.ndarray  # (gh, gw, 4): A0 (row, col), A1 (row, col)
    weight: np.ndarray  # (gh, gw)
    fallback: np.ndarray  # (2, 2): global medians, columns A0, A1
    phi: float  # rad
    order: float  # |<exp(6iθ)>| of the pairs: 1 on a perfect lattice, ~0 for random peaks

    def at(self, points) -> np.ndarray:
        """(M, 2, 2) local bases at points, lattice vectors as columns (row, col)."""
        f = self.grid.sample(self.field, points).reshape(-1, 2, 2).transpose(0, 2, 1)
        weak = self.grid.sample(self.weight, points) < 0.05
        f[weak] = self.fallback
        return f


def _local_basis(pos: np.ndarray, a_px: float, grid: _Grid) -> _Basis | None:
    """The local lattice vectors from the pairs of points about ``a`` apart (same-sublattice neighbours: present
    whether one or both sublattices are visible): directions folded onto phi, phi + 60°, phi + 120° (the
    orientation phi from <exp(6iθ)>), the third turned into A1 - A0 and A0 + A2 estimates, smoothed."""
    i, j, v = _pairs(pos, SAME_RANGE[0] * a_px, SAME_RANGE[1] * a_px)
    if len(v) < 6:
        return None
    theta = np.arctan2(v[:, 0], v[:, 1])
    w6 = np.exp(6j * theta).mean()
    phi = float(np.angle(w6)) / 6
    k = np.rint((theta - phi) / (np.pi / 3)).astype(int) % 6
    flip = k >= 3
    v = np.where(flip[:, None], -v, v)
    k = k % 3
    mid = (pos[i] + pos[j]) / 2
    # A0 from k = 0 and from (k = 1) - (k = 2); A1 from k = 1 and from (k = 0) + (k = 2)
    est = [(mid[k == 0], v[k == 0], 0), (mid[k == 1], v[k == 1], 1), (mid[k == 2], v[k == 2], 2)]
    if any(len(e[1]) == 0 for e in est):
        return None
    fields, weights, meds = [], [], []
    for m, vv, _ in est:
        f, wt = grid.smooth(m, vv, FIELD_SIGMA_A * a_px)
        fields.append(f)
        weights.append(wt)
        meds.append(np.median(vv, axis=0))
    f0, f1, f2 = fields
    w0, w1, w2 = weights
    a0 = (f0 * w0[..., None] + (f1 - f2) * np.minimum(w1, w2)[..., None]) / np.maximum(w0 + np.minimum(w1, w2), 1e-12)[..., None]
    a1 = (f1 * w1[..., None] + (f0 + f2) * np.minimum(w0, w2)[..., None]) / np.maximum(w1 + np.minimum(w0, w2), 1e-12)[..., None]
    fallback = np.c_[(meds[0] + meds[1] - meds[2]) / 2, (meds[1] + meds[0] + meds[2]) / 2]
    return _Basis(grid, np.concatenate([a0, a1], axis=-1), np.minimum(np.minimum(w0, w1), w2), fallback, phi,
                  float(abs(w6)))


def _same_neighbours(pos, targets, basis: _Basis, tol_px):
    """For each point, its six same-sublattice neighbours x ± A0, x ± A1, x ± (A1 - A0) predicted by the local
    lattice: (K, 6, 2) predictions, (K, 6) index of the target found within ``tol_px`` (-1: none), distances."""
    b = basis.at(pos)
    vecs = np.stack([b[:, :, 0], b[:, :, 1], b[:, :, 1] - b[:, :, 0]], axis=1)  # (K, 3, 2)
    pred = pos[:, None, :] + np.concatenate([vecs, -vecs], axis=1)
    if len(targets) == 0:
        return pred, np.full(pred.shape[:2], -1), np.full(pred.shape[:2], np.inf)
    d, idx = cKDTree(targets).query(pred.reshape(-1, 2), k=1, distance_upper_bound=tol_px)
    d, idx = d.reshape(pred.shape[:2]), idx.reshape(pred.shape[:2])
    return pred, np.where(np.isfinite(d), idx, -1), d


def _offset_labels(pos, i, j, basis: _Basis):
    """For pairs (i, j): the honeycomb offset class of j relative to i (0, 1, 2: same sublattice, +(1/3, 1/3),
    +(2/3, 2/3) in lattice coordinates) and whether the pair sits on one honeycomb at all."""
    b = basis.at(pos[i])
    uv = np.linalg.solve(b, (pos[j] - pos[i])[..., None])[..., 0] * 3  # (E, 2)
    r = np.rint(uv)
    ok = (np.abs(uv - r) < OFFSET_TOLERANCE).all(axis=1) & ((r[:, 0] - r[:, 1]) % 3 == 0)
    return r[:, 0].astype(int) % 3, ok


def _propagate_classes(n, i, j, label, nodes_mask):
    """Offset class (0, 1, 2) of every node of the graph of pairs (i, j) (both directions present) whose labels
    are class_j - class_i (mod 3), per connected component: breadth-first from one node, then three sweeps of
    majority voting over all edges (one bad edge does not flip a subtree). Returns (n,) class and (n,)
    component id (-1 for nodes outside ``nodes_mask``)."""
    sel = nodes_mask[i] & nodes_mask[j]
    gi, gj, gl = i[sel], j[sel], label[sel]
    graph = coo_matrix((np.ones(len(gi)), (gi, gj)), shape=(n, n)).tocsr()
    n_comp, comp = connected_components(graph, directed=False)
    keys = gi.astype(np.int64) * n + gj
    order_k = np.argsort(keys)
    keys, labels_sorted = keys[order_k], gl[order_k]
    cls = np.full(n, -1)
    for c in np.unique(comp[nodes_mask]):
        first = int(np.flatnonzero((comp == c) & nodes_mask)[0])
        order, pred = breadth_first_order(graph, first, directed=True, return_predecessors=True)
        if len(order) > 1:
            k = np.searchsorted(keys, pred[order[1:]].astype(np.int64) * n + order[1:])
            step = labels_sorted[np.minimum(k, len(keys) - 1)].tolist()
        else:
            step = []
        cl = {first: 0}
        for node, p, st in zip(order[1:].tolist(), pred[order[1:]].tolist(), step):
            cl[node] = (cl[p] + st) % 3
        cls[list(cl)] = list(cl.values())
    for _ in range(3):
        votes = np.zeros((n, 3))
        ok = cls[gi] >= 0
        np.add.at(votes, (gj[ok], (cls[gi[ok]] + gl[ok]) % 3), 1.0)
        has = (votes.sum(axis=1) > 0) & nodes_mask
        cls[has] = votes[has].argmax(axis=1)
    return cls, np.where(nodes_mask, comp, -1)


def band_pass(image: np.ndarray, a_px: float, smooth_sigma_fraction: float = 0.08) -> np.ndarray:
    """Gaussian of ``smooth_sigma_fraction`` a minus a Gaussian of a/2: column contrast stays, DC offsets,
    slow gradients and contamination haze go. (H, W) -> (H, W) float64."""
    img = np.asarray(image, dtype=np.float64)
    s = ndimage.gaussian_filter(img, max(smooth_sigma_fraction * a_px, 0.5), mode="nearest")
    return s - _smooth_background(img, 0.5 * a_px)


def _smooth_background(img: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian of ``sigma_px`` of a large image, computed on f x f block means (f = sigma/4) and
    interpolated back: the same to ~1e-3 of the contrast, f² times fewer operations."""
    f = int(sigma_px // 4)
    h, w = img.shape
    if f < 2 or min(h, w) < 8 * f:
        return ndimage.gaussian_filter(img, sigma_px, mode="nearest")
    hb, wb = -(-h // f), -(-w // f)
    padded = np.pad(img, ((0, hb * f - h), (0, wb * f - w)), mode="edge")
    blocks = padded.reshape(hb, f, wb, f).mean(axis=(1, 3))
    # a block mean is a box of width f: its variance f²/12 is taken from the Gaussian's
    sb = ndimage.gaussian_filter(blocks, np.sqrt(max(sigma_px**2 - f**2 / 12, 0)) / f, mode="nearest")
    rows = (np.arange(h) + 0.5) / f - 0.5
    cols = (np.arange(w) + 0.5) / f - 0.5
    return ndimage.map_coordinates(sb, np.meshgrid(rows, cols, indexing="ij"), order=1, mode="nearest")


def _candidates(s: np.ndarray, a_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Column candidates of a band-passed image ``s``: every local maximum above the local mean within 0.35 a,
    refined by centroid; of two that converge on one column the higher stays. Returns positions (K, 2) and
    heights (K,)."""
    d = a_px / SQRT3
    # a square of half-side 0.25 a (inside the 0.35 a disk, and separable: fast; as a footprint, since
    # ``min_distance`` > 1 adds a slow spacing pass); extra maxima in the corners merge below or fail the tests
    k = max(int(0.25 * a_px), 1)
    idx = peak_local_max(s, footprint=np.ones((2 * k + 1, 2 * k + 1), bool), min_distance=1, threshold_abs=0.0,
                         exclude_border=1)
    if len(idx) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    heights = s[idx[:, 0], idx[:, 1]]
    pos = refine_centroids(s, idx.astype(np.float64), 0.3 * d)
    order = np.argsort(-heights, kind="stable")
    pos, heights = pos[order], heights[order]
    pairs = cKDTree(pos).query_pairs(0.3 * d, output_type="ndarray")
    drop = np.zeros(len(pos), bool)
    for i, j in pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))].tolist():
        if not drop[i]:
            drop[j] = True
    return pos[~drop], heights[~drop]


PERIODICITY_WINDOW_A = 2.0
"""Side of the window (in lattice constants) over which the periodicity map correlates the image with itself
shifted by a lattice vector."""


def periodicity_map(s: np.ndarray, vectors: np.ndarray, a_px: float) -> np.ndarray:
    """Local periodicity of a band-passed image: the correlation coefficient, over windows of
    ``PERIODICITY_WINDOW_A`` a, between ``s`` and ``s`` shifted by each of the (3, 2) lattice vectors,
    averaged. About 1 on a clean lattice, 0 on noise, amorphous carbon or vacuum. (H, W) -> (H, W)."""
    h, w = s.shape
    f = max(int(a_px // 8), 1)  # computed on f x f blocks (a still >= 8 blocks): f² times cheaper
    hb, wb = h // f, w // f
    sb = s[:hb * f, :wb * f].reshape(hb, f, wb, f).mean(axis=(1, 3))
    size = max(int(round(PERIODICITY_WINDOW_A * a_px / f)), 3)
    u = lambda x: ndimage.uniform_filter(x, size, mode="nearest")  # noqa: E731
    ss = u(sb * sb)
    out = np.zeros_like(sb)
    for v in vectors:
        t = ndimage.shift(sb, -np.asarray(v, dtype=float) / f, order=1, mode="nearest")
        out += u(sb * t) / np.sqrt(np.maximum(ss * u(t * t), 1e-300))
    out /= len(vectors)
    rows = np.minimum(np.arange(h) // f, hb - 1)
    cols = np.minimum(np.arange(w) // f, wb - 1)
    return out[np.ix_(rows, cols)]


def lattice_mask(columns: np.ndarray, shape: tuple[int, int], a_px: float) -> np.ndarray:
    """(H, W) bool: pixels within MASK_DISTANCE x a/√3 of a column, without islands smaller than three unit
    cells (a few stray peaks are no lattice)."""
    d = a_px / SQRT3
    h, w = shape
    cell = max(d / 3, 1.0)
    gh, gw = int(np.ceil(h / cell)), int(np.ceil(w / cell))
    if len(columns) == 0:
        return np.zeros(shape, bool)
    gy, gx = np.meshgrid((np.arange(gh) + 0.5) * cell, (np.arange(gw) + 0.5) * cell, indexing="ij")
    dist, _ = cKDTree(columns).query(np.c_[gy.ravel(), gx.ravel()], k=1, distance_upper_bound=MASK_DISTANCE * d)
    coarse = np.isfinite(dist).reshape(gh, gw)
    labels, n = ndimage.label(coarse)
    if n:
        area = np.bincount(labels.ravel())[1:] * cell**2
        small = np.flatnonzero(area < 3 * (SQRT3 / 2) * a_px**2) + 1
        coarse[np.isin(labels, small)] = False
    rows = np.minimum((np.arange(h) / cell).astype(int), gh - 1)
    cols = np.minimum((np.arange(w) / cell).astype(int), gw - 1)
    return coarse[np.ix_(rows, cols)]



def _empty_sites(cols, sub, basis: _Basis, mask, shape, a_px, cand, used):
    """Sites where no column was found but the lattice puts one: predicted as a cross neighbour by all three
    columns of the other sublattice, or as a same-sublattice neighbour by at least five of six (near the image
    edge: two and four; four of six happens 1 Å inside the rim of a hole), inside the lattice area, each at the mean of its predictions. Returns positions
    (E, 2), sublattice (E,), has_peak (E,) (True when an unused candidate peak lies there: a dim column)."""
    d = a_px / SQRT3
    h, w = shape
    tol = MATCH_TOLERANCE * d
    b = basis.at(cols)
    a0, a1 = b[:, :, 0], b[:, :, 1]
    b0 = (a0 + a1) / 3
    sign = np.where(sub == 0, 1.0, -1.0)[:, None, None]
    cross = cols[:, None] + sign * np.stack([b0, b0 - a0, b0 - a1], axis=1)  # (N, 3, 2)
    same_vec = np.stack([a0, a1, a1 - a0], axis=1)
    same = cols[:, None] + np.concatenate([same_vec, -same_vec], axis=1)  # (N, 6, 2)
    pred = np.concatenate([cross.reshape(-1, 2), same.reshape(-1, 2)])
    kind = np.r_[np.zeros(cross.shape[0] * 3, int), np.ones(same.shape[0] * 6, int)]  # 0 cross, 1 same
    psub = np.r_[np.repeat(1 - sub, 3), np.repeat(sub, 6)]
    inside = (pred[:, 0] >= 0) & (pred[:, 0] <= h - 1) & (pred[:, 1] >= 0) & (pred[:, 1] <= w - 1)
    # a column within half a bond is that site, found (a predicted site is never closer than d to another)
    dcol, _ = cKDTree(cols).query(pred, k=1, distance_upper_bound=0.5 * d)
    miss = inside & ~np.isfinite(dcol)
    pred, kind, psub = pred[miss], kind[miss], psub[miss]
    if len(pred) == 0:
        return np.zeros((0, 2)), np.zeros(0, int), np.zeros(0, bool)
    pairs = cKDTree(pred).query_pairs(tol, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(pred), len(pred)))
    _, comp = connected_components(graph, directed=False)
    n = comp.max() + 1
    cnt = np.bincount(comp, minlength=n)
    n_cross = np.bincount(comp, kind == 0, n)
    n_same = np.bincount(comp, kind == 1, n)
    centre = np.c_[np.bincount(comp, pred[:, 0], n), np.bincount(comp, pred[:, 1], n)] / cnt[:, None]
    csub = (np.bincount(comp, psub, n) / cnt > 0.5).astype(int)
    edge = border_flags(centre, shape, a_px)
    ok = np.where(edge, (n_cross >= 2) | (n_same >= 4), (n_cross >= 3) | (n_same >= 5))
    r, c = np.rint(centre).astype(int).T
    ok &= mask[r.clip(0, h - 1), c.clip(0, w - 1)]
    ok &= ~np.isfinite(cKDTree(cols).query(centre, k=1, distance_upper_bound=0.5 * d)[0])
    centre, csub = centre[ok], csub[ok]
    has_peak = np.zeros(len(centre), bool)
    free = np.flatnonzero(~used)
    if len(free) and len(centre):
        dc, ic = cKDTree(cand[free]).query(centre, k=1, distance_upper_bound=tol)
        has_peak = np.isfinite(dc)
        centre[has_peak] = cand[free[ic[has_peak]]]
    return centre, csub, has_peak


def _area_lattice_constant(bases: np.ndarray) -> np.ndarray:
    """(N, 2, 2) bases (lattice vectors as columns) -> (N,) area-equivalent lattice constant √(2|det|/√3)."""
    return np.sqrt(2 * np.abs(np.linalg.det(bases)) / SQRT3)


PERIODICITY_THRESHOLD = 0.2
"""Lattice area needs a local periodicity (``periodicity_map``) above this. Measured when it was set (the values
themselves are not asserted): noise and amorphous texture stay below 0.1, the real MoS2 frame's lattice is
0.4-0.9, holes and contamination fall to about 0 (docs/classify.md). tests/test_inference_fuzz.py checks that noise and amorphous
texture are refused, tests/test_inference_real.py that the real frame is lattice."""


def locate_columns(image: np.ndarray, a_px: float | None = None, smooth_sigma_fraction: float = 0.08) -> ColumnLattice:
    """Columns, empty sites, both sublattices and the lattice area of an image (module docstring).

    ``a_px``: a first estimate of the lattice constant in pixels (default: ``lattice_constant_px``); it sets
    the search scales only, the lattice itself is measured locally. Raises ``ValueError`` when no honeycomb
    is found at all (the caller decides what is too little lattice)."""
    img = check_image(image)
    a = float(a_px) if a_px is not None else lattice_constant_px(img)
    a_first = a
    if not np.isfinite(a) or a < 3:
        raise ValueError(f"lattice constant estimate {a:.2f} px is below 3 px: not an atomic-resolution image")
    s = band_pass(img, a, smooth_sigma_fraction)
    cand, heights = _candidates(s, a)
    if len(cand) < MIN_COMPONENT:
        raise ValueError(f"only {len(cand)} column candidates: no lattice")
    n = len(cand)
    grid = _Grid(img.shape, a / 2)
    # 1. local lattice vectors from pairs about a apart; lattice points: two of their six same-sublattice
    #    neighbours where the local lattice puts them; then the periodic area and again from its points only
    pts = np.ones(n, bool)
    period = None
    for it in range(3):
        basis = _local_basis(cand[pts], a, grid)
        if basis is None:
            raise ValueError("no lattice: the peaks have no neighbours at a common lattice constant")
        a = float(_area_lattice_constant(basis.fallback[None])[0])
        if it == 0:
            v = basis.fallback
            period = periodicity_map(s, np.stack([v[:, 0], v[:, 1], v[:, 1] - v[:, 0]]), a)
            # the window straddles the edge of a hole or blob: the periodic area reaches half a window further
            periodic_area = _dilate_disk(period > PERIODICITY_THRESHOLD, 0.5 * PERIODICITY_WINDOW_A * a,
                                         step=max(int(a // 8), 1))
        r, c = np.rint(cand).astype(int).T
        periodic = periodic_area[r, c]
        _, idx, dist = _same_neighbours(cand, cand[pts], basis, MATCH_TOLERANCE * a / SQRT3)
        pts = ((idx >= 0).sum(axis=1) >= 2) & periodic
        if pts.sum() < MIN_COMPONENT:
            raise ValueError(f"no lattice: {int(pts.sum())} peaks have two neighbours where a lattice puts them")
    # 2. honeycomb offset classes through the neighbour graph
    i, j, _ = _pairs(cand, 0.4 * a / SQRT3, 1.25 * a)
    upper = i < j
    i, j = i[upper], j[upper]
    label, ok = _offset_labels(cand, i, j, basis)
    i, j, label = i[ok], j[ok], label[ok]
    ii, jj, ll = np.r_[i, j], np.r_[j, i], np.r_[label, (-label) % 3]
    cls, comp = _propagate_classes(n, ii, jj, ll, pts)
    sizes = np.bincount(comp[comp >= 0], minlength=max(int(comp.max()) + 1, 1))
    pts &= (comp >= 0) & (sizes[np.maximum(comp, 0)] >= MIN_COMPONENT)
    if not pts.any():
        raise ValueError(f"no lattice: no {MIN_COMPONENT} peaks connected on one honeycomb")
    # 3. other peaks on the lattice (dim columns): class by the votes of their lattice-point neighbours
    other = ~pts & periodic
    e = pts[ii] & other[jj]
    votes = np.zeros((n, 3))
    np.add.at(votes, (jj[e], (cls[ii[e]] + ll[e]) % 3), 1.0)
    comp_vote = np.full(n, -1)
    comp_vote[jj[e]] = comp[ii[e]]
    tot = votes.sum(axis=1)
    dim = other & (tot >= 2) & (votes.max(axis=1) >= 2 / 3 * np.maximum(tot, 1))
    cls = np.where(dim, votes.argmax(axis=1), cls)
    comp = np.where(dim, comp_vote, comp)
    member = pts | dim
    # 4. per connected piece of lattice the hollow is the darkest of the three offsets
    b = basis.at(cand)
    third = (b[:, :, 0] + b[:, :, 1]) / 3
    hollow = {}
    for c in np.unique(comp[member]):
        sel = np.flatnonzero(member & (comp == c))
        mean = []
        for m in range(3):
            p = cand[sel] + m * third[sel]
            vals = ndimage.map_coordinates(s, [p[:, 0], p[:, 1]], order=1, mode="nearest")
            mean.append(np.bincount((cls[sel] + m) % 3, vals, 3) / np.maximum(np.bincount((cls[sel] + m) % 3, None, 3), 1))
        hollow[c] = int(np.argmin(np.sum(mean, axis=0)))
    hol = np.array([hollow.get(c, -1) for c in comp])
    is_col = member & (cls != hol)
    sub_all = (cls - hol - 1) % 3  # 0 or 1 on columns: sublattice 1 sits at sublattice 0 + (1/3, 1/3)
    cols, sub = cand[is_col], sub_all[is_col]
    if len(cols) < MIN_COMPONENT:
        raise ValueError(f"no lattice: {len(cols)} columns on a honeycomb")
    # 5. lattice area, empty sites, local lattice at every site
    mask = lattice_mask(cols, img.shape, a) & periodic_area
    empty, esub, epeak = _empty_sites(cols, sub, basis, mask, img.shape, a, cand, is_col)
    positions = np.concatenate([cols, empty])
    sublattice = np.concatenate([sub, esub]).astype(int)
    has_peak = np.concatenate([np.ones(len(cols), bool), epeak])
    bases = basis.at(positions)
    a_local = _area_lattice_constant(bases)
    a_med = float(np.median(a_local))
    ideal = a_med * np.array([[np.sin(basis.phi), np.sin(basis.phi + np.pi / 3)],
                              [np.cos(basis.phi), np.cos(basis.phi + np.pi / 3)]])
    transforms = bases @ np.linalg.inv(ideal)
    found = np.isfinite(dist[is_col])
    rms = float(np.sqrt(np.mean(dist[is_col][found] ** 2))) if found.any() else float("nan")
    nn_d, nn_i = cKDTree(positions).query(positions, k=min(4, len(positions)))
    three = (nn_d[:, 1:] <= 1.3 * a_med / SQRT3).all(axis=1) if nn_d.shape[1] == 4 else np.zeros(len(positions), bool)
    other_sub = (sublattice[nn_i[:, 1:]] != sublattice[:, None]).all(axis=1) if nn_d.shape[1] == 4 else three
    stats = {"n_candidates": int(n), "n_columns": int(len(cols)), "n_dim_columns": int((dim & is_col).sum()),
             "n_empty_sites": int(len(empty)), "n_empty_sites_on_a_peak": int(epeak.sum()),
             "n_lattice_pieces": int(len(hollow)), "lattice_order": basis.order,
             "autocorrelation_lattice_constant_px": a_first,
             "periodicity_median": float(np.median(period)),
             "n_sites_with_three_neighbours": int(three.sum()),
             "sublattice_consistency": float(other_sub[three].mean()) if three.any() else float("nan")}
    lo, hi = np.percentile(a_local, [5, 95])
    return ColumnLattice(positions, sublattice, has_peak, transforms, mask, a_med, (float(lo), float(hi)),
                         float(np.degrees(basis.phi)), rms, stats)


def _dilate_disk(mask: np.ndarray, radius_px: float, step: int = 1) -> np.ndarray:
    """Binary dilation by a disk (the distance transform of the complement), computed on every ``step``-th
    pixel (a mask that is constant over step x step blocks loses nothing)."""
    if mask.all() or not mask.any():
        return mask.copy()
    coarse = mask[::step, ::step]
    grown = ndimage.distance_transform_edt(~coarse) <= radius_px / step
    h, w = mask.shape
    return grown[np.ix_(np.minimum(np.arange(h) // step, grown.shape[0] - 1),
                        np.minimum(np.arange(w) // step, grown.shape[1] - 1))]
