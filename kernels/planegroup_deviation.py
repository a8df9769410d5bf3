"""The plane group of a periodic image, measured: cell average, symmetry deviations, geometric AIC.

Crystallographic image processing in the manner of Kanatani's geometric AIC as used by Dempsey & Moeck for the
"objective" symmetry classification of 2-D periodic images, on the project's own lattice measurement:

1. the primitive cell (``kernels.cell``, else the power spectrum's peaks) is refined on the Fourier peaks of the
   image (sub-pixel vertex of the strongest reflections, least squares for the reciprocal basis); its best
   sublattices of index 2, 3 and 4 are candidate cells too (a sub-cell from a pseudo-translation);
2. the cell average is taken in Fourier space: its coefficients F(h) are the Hann-windowed DFT of the image
   (plane removed) at the reciprocal-lattice frequencies g_h = A^-T h (h integer, |g| <= ``g_max`` cycles/px).
   The noise of one coefficient comes from the spread of the image about its periodic average
   (sum w^2 r^2 / (sum w)^2, w the window);
3. the lattice's isometries W (integer 2 x 2 in the primitive basis with A W A^-1 orthogonal within
   ``metric_tol``) decide which groups and settings are possible: every group of ``contract.planegroups``
   is carried into the primitive basis by every integer change of basis P (conventional = primitive @ P, det 1
   or 2 for the centred groups) whose operations are isometries. A near-square or near-hexagonal metric outside
   the tolerance therefore never allows a square or hexagonal group;
4. an operation (W, w), f -> W f + w, maps F(h) to F(W^-T h) exp(2 pi i (W^-T h).w). The overlap
   C(w) = <M, T M> of the cell average M with its transform is one inverse FFT over an N x N grid of w; for a
   group the origin o is searched on that grid (w_g = t_g + (I - W_g) o for all operations at once) and refined by
   Newton steps. The group's deviation J(G) = ||M - P_G M||^2 = ||M||^2 - mean_g C_g (P_G the symmetrising
   projection) and each operation's residual ||T_g M - M||^2 / ||M||^2 are reported;
5. the group minimises G-AIC(G) = J(G) + 2 (n / |G|) (sigma^2 + floor), sigma^2 the noise of one coefficient:
   a group of order |G| keeps n/|G| of the n real parameters free, and a true symmetry's expected J,
   n sigma^2 (1 - 1/|G|), is half the penalty it saves. ``floor`` (relative to the signal power per coefficient)
   absorbs systematic deviations of bright images (lattice error, pixel sampling, scan jitter). Across candidate
   cells the energy a cell leaves unmodelled is added, so all (cell, group) pairs compare.

Lengths in pixels, image rows y down, columns x; lattice vectors are rows (dx, dy). Pure NumPy; no I/O.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from scipy import ndimage

from contract.planegroups import CENTRING, OPERATIONS, PLANE_GROUPS, parse_triplet, reduce_basis
from kernels.cell import measure_cell

G_MAX = 0.28
"""Highest spatial frequency of the cell average used (cycles/px)."""
METRIC_TOL = 0.03
"""Largest |R^T R - I| entry for a lattice isometry R = A W A^-1 (about 3 % in length or 1.7 degrees)."""
SYSTEMATIC_FLOOR = 0.006
"""Per-coefficient deviation variance added to the noise, as a fraction of the mean signal power per coefficient."""
SUPERLATTICE_FLOOR = 0.003
"""What a candidate cell larger than the measured one pays, as a fraction of the measured cell's energy, on top of
its criterion (window leakage of a noiseless image stays below ~1e-3 for cells up to a third of the image)."""
GRID = 48
"""Samples per cell side of the translation / origin grid (raised when the cell has finer detail)."""


@dataclass(frozen=True)
class Operation:
    """One symmetry operation f -> W f + w in fractional coordinates of the primitive cell."""

    W: np.ndarray  # (2, 2) int
    w: np.ndarray  # (2,) float, modulo 1
    kind: str  # "identity", "rotation", "mirror" or "glide"
    order: int  # rotation order n (1, 2, 3, 4, 6), 2 for reflections
    residual: float  # ||T M - M||^2 / ||M||^2
    expected: float  # the same for a true symmetry and the measured noise


@dataclass
class DeviationResult:
    """The measured plane group of one image and everything it was decided on."""

    plane_group: str
    runner_up: str
    basis_px: np.ndarray  # (2, 2) refined primitive vectors, rows (dx, dy)
    operations: list[Operation]  # of the chosen group, at its origin
    origin: np.ndarray  # (2,) fractional origin of the chosen setting
    deviation: dict[str, float]  # J(G) / ||M||^2 per allowed group
    criterion: dict[str, float]  # G-AIC(G) / ||M||^2 per allowed group
    noise: float  # sigma^2 per coefficient times n / ||M||^2 (the noise-to-signal ratio of the average)
    n_coefficients: int
    n_cells: float  # unit cells under the window (effective)
    isometries: int  # order of the lattice point group found
    superlattice: int  # index of the cell found over the autocorrelation's (1: none; 2, 3, 4: pseudo-translations)
    motif: np.ndarray = field(repr=False)  # (N, N) cell average sampled on the fractional grid f = (i, j) / N


def fourier_coefficients(image: np.ndarray, basis_px: np.ndarray, hk: np.ndarray):
    """Hann-windowed DFT of an (H, W) image at the reciprocal-lattice points ``hk`` (n, 2) int of ``basis_px``.

    Returns (F (n,) complex: the cell average's Fourier coefficients, origin at the image centre; window (H, W);
    centred pixel coordinates x (W,), y (H,))."""
    img = _remove_plane(np.asarray(image, np.float64))
    h, w = img.shape
    window = np.outer(np.hanning(h + 2)[1:-1], np.hanning(w + 2)[1:-1])
    x = np.arange(w) - (w - 1) / 2
    y = np.arange(h) - (h - 1) / 2
    g = np.asarray(hk, np.float64) @ np.linalg.inv(np.asarray(basis_px, np.float64).T)  # (n, 2) cycles/px
    ex = np.exp(-2j * np.pi * np.outer(g[:, 0], x))  # (n, W)
    ey = np.exp(-2j * np.pi * np.outer(g[:, 1], y))  # (n, H)
    f = np.sum(ey.T * ((img * window) @ ex.T), axis=0) / window.sum()
    return f, img, window, x, y


def cell_average(image: np.ndarray, basis_px: np.ndarray, hk: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Fourier coefficients F (n,) of the cell average at ``hk`` (n, 2), the noise variance of one coefficient
    (from the spread of the image about its periodic average, weighted as the window weights the average) and the
    window's effective number of pixels."""
    f, flat, window, x, y = fourier_coefficients(image, basis_px, hk)
    g = hk @ np.linalg.inv(np.asarray(basis_px, np.float64).T)
    periodic = np.real(np.exp(2j * np.pi * np.outer(y, g[:, 1])) @ (f[:, None] * np.exp(2j * np.pi * np.outer(
        g[:, 0], x))))
    resid = flat - periodic
    resid -= np.sum(window * resid) / window.sum()
    n_eff = window.sum() ** 2 / np.sum(window ** 2)
    var = float(np.sum(window ** 2 * resid ** 2) / window.sum() ** 2) * n_eff / max(n_eff - len(hk), 1.0)
    return f, var, float(n_eff)


def _sublattices(index: int) -> list[np.ndarray]:
    """Integer H (2, 2) whose rows give every sublattice of prime ``index`` (new basis = H @ basis)."""
    return [np.array([[index, 0], [0, 1]])] + [np.array([[1, j], [0, index]]) for j in range(index)]


def candidate_cells(img: np.ndarray, basis: np.ndarray, g_max: float) -> list[tuple[np.ndarray, int]]:
    """The measured cell and, per index 2 and 3 (and 4 = 2 x 2), the sublattice whose extra reflections carry the
    most energy over their noise, when that energy is at least a quarter of it: the true cell when the measured
    one is the sub-cell of a pseudo-translation. Cells longer than a third of the image are left out (window
    leakage mimics their extra reflections). Returns [(basis (2, 2), index)], the measured cell first."""
    out = [(basis, 1)]

    def best_of(parent: np.ndarray, index: int):
        best = None
        for h_mat in _sublattices(index):
            new = reduce_basis(*(h_mat @ parent))
            if max(np.hypot(*new.T)) > min(img.shape) / 3:
                continue
            hk = reciprocal_set(new, [np.eye(2, dtype=int)], g_max)
            old = hk @ np.linalg.inv(np.linalg.solve(parent.T, new.T))  # the same reflections, parent's basis
            extra = np.any(np.abs(old - np.round(old)) > 1e-6, axis=1)
            if not extra.any():
                continue
            f, var, _ = cell_average(img, new, hk)
            ratio = float(np.sum(np.abs(f[extra]) ** 2)) / (2 * extra.sum() * var + 1e-300)
            if ratio > 0.25 and (best is None or ratio > best[0]):
                best = (ratio, new)
        return None if best is None else best[1]

    for index in (2, 3):
        found = best_of(basis, index)
        if found is not None:
            out.append((found, index))
            if index == 2:
                again = best_of(found, 2)
                if again is not None:
                    out.append((again, 4))
    return out


def _measured_basis(img: np.ndarray) -> np.ndarray:
    """The autocorrelation's primitive cell (``kernels.cell``), retried at a lower peak threshold, else the
    reciprocal lattice of the power spectrum's peaks (a sub-cell from a pseudo-translation is corrected later);
    ``ValueError`` when neither finds a lattice."""
    for threshold in (0.8, 0.6):
        try:
            return measure_cell(img, threshold=threshold).vectors_px
        except ValueError as err:
            last = err
    try:
        return fourier_lattice(img)
    except ValueError as err:
        raise ValueError(f"no lattice measured: {last}; {err}") from None


def fourier_lattice(image: np.ndarray, n_peaks: int = 24, min_power: float = 20.0, tol: float = 0.12) -> np.ndarray:
    """Primitive vectors (2, 2) from the power spectrum: the coarsest reciprocal basis, among pairs of the strongest
    peaks, that indexes (integer indices within ``tol``) at least 95 % of the power of the peaks standing
    ``min_power`` x the spectrum's median above it. ``ValueError`` when no pair does."""
    img = _remove_plane(np.asarray(image, np.float64))
    h, w = img.shape
    window = np.outer(np.hanning(h + 2)[1:-1], np.hanning(w + 2)[1:-1])
    size = (2 * h, 2 * w)
    power = np.abs(np.fft.fft2(img * window, s=size)) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(size[0]), np.fft.fftfreq(size[1]), indexing="ij")
    peaks = (power == ndimage.maximum_filter(power, size=5, mode="wrap")) & (np.hypot(fx, fy) > 2.5 / min(h, w))
    peaks &= (fy > 0) | ((fy == 0) & (fx > 0))
    peaks &= power > min_power * np.median(power)
    if peaks.sum() < 2:
        raise ValueError("fewer than two strong Fourier peaks")
    order = np.argsort(-power[peaks])[:n_peaks]
    g = np.stack([fx[peaks], fy[peaks]], axis=1)[order]
    p = power[peaks][order]
    candidates = []
    for i, j in itertools.combinations(range(min(len(g), 10)), 2):
        b = np.stack([g[i], g[j]])
        det = abs(np.linalg.det(b))
        if det < 0.2 * np.hypot(*g[i]) * np.hypot(*g[j]):  # nearly collinear
            continue
        idx = g @ np.linalg.inv(b)
        indexed = np.all(np.abs(idx - np.round(idx)) < tol, axis=1)
        candidates.append((float(p[indexed].sum() / p.sum()), det, b))
    if not candidates:
        raise ValueError("the Fourier peaks lie on one line")
    top = max(c[0] for c in candidates)
    if top < 0.95:
        raise ValueError("no reciprocal lattice indexes the Fourier peaks")
    best = max((c for c in candidates if c[0] >= 0.95), key=lambda c: c[1])
    return reduce_basis(*np.linalg.inv(best[2]).T)  # g = h @ inv(basis^T)


def _remove_plane(img: np.ndarray) -> np.ndarray:
    """Subtract the least-squares plane (background and its gradient)."""
    h, w = img.shape
    yy, xx = np.mgrid[:h, :w]
    design = np.stack([np.ones(img.size), xx.ravel(), yy.ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(design, img.ravel(), rcond=None)
    return img - (design @ coef).reshape(h, w)


def refine_basis(image: np.ndarray, basis_px: np.ndarray, n_peaks: int = 10, rounds: int = 2) -> np.ndarray:
    """Sub-pixel primitive vectors (2, 2) from the strongest low-order Fourier peaks of the image."""
    basis = reduce_basis(*np.asarray(basis_px, np.float64))
    h, w = np.shape(image)
    step = 0.5 / max(h, w)  # cycles/px, a quarter of the Hann main lobe
    hk = np.array([(i, j) for i in range(-3, 4) for j in range(-3, 4) if (i, j) > (0, 0)])
    for _ in range(rounds):
        binv = np.linalg.inv(basis.T)
        g = hk @ binv
        keep = np.hypot(*g.T) < 0.45
        f, img, window, x, y = fourier_coefficients(image, basis, hk[keep])
        strong = hk[keep][np.argsort(-np.abs(f))[:n_peaks]]
        g0 = strong @ binv
        offsets = np.array([(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]) * step
        freqs = (g0[:, None, :] + offsets[None]).reshape(-1, 2)
        amp = np.abs(_dft(img * window, x, y, freqs)).reshape(len(strong), 3, 3)
        peaks = []
        for k in range(len(strong)):
            a = amp[k]
            dx = _vertex(a[0, 1], a[1, 1], a[2, 1])  # first offset index moves g_x
            dy = _vertex(a[1, 0], a[1, 1], a[1, 2])
            peaks.append(g0[k] + step * np.array([dx, dy]))
        weights = np.sqrt(amp[:, 1, 1])
        sol, *_ = np.linalg.lstsq(strong * weights[:, None], np.array(peaks) * weights[:, None], rcond=None)
        if np.linalg.matrix_rank(sol) < 2:
            break
        basis = np.linalg.inv(sol).T  # g = h @ inv(A) -> A = inv(sol)... rows of basis = columns of A
        basis = reduce_basis(*basis)
    return basis


def _dft(img_w: np.ndarray, x: np.ndarray, y: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    ex = np.exp(-2j * np.pi * np.outer(freqs[:, 0], x))
    ey = np.exp(-2j * np.pi * np.outer(freqs[:, 1], y))
    return np.sum(ey.T * (img_w @ ex.T), axis=0)


def _vertex(m: float, c: float, p: float) -> float:
    den = m - 2 * c + p
    return 0.0 if den >= 0 else float(np.clip(0.5 * (m - p) / den, -1.0, 1.0))


def lattice_isometries(basis_px: np.ndarray, metric_tol: float = METRIC_TOL) -> list[np.ndarray]:
    """Integer W (2, 2), entries in {-1, 0, 1}, det +-1, for which A W A^-1 is orthogonal within ``metric_tol``
    (A = basis as columns): the lattice's point group in the (reduced) primitive basis, identity first."""
    a = np.asarray(basis_px, np.float64).T
    scale = np.sqrt(abs(np.linalg.det(a)))
    a = a / scale
    out = []
    for entries in itertools.product((-1, 0, 1), repeat=4):
        w = np.array(entries, dtype=int).reshape(2, 2)
        if abs(round(np.linalg.det(w))) != 1:
            continue
        r = a @ w @ np.linalg.inv(a)
        if np.max(np.abs(r.T @ r - np.eye(2))) <= metric_tol:
            out.append(w)
    out.sort(key=lambda m: (not np.array_equal(m, np.eye(2, dtype=int)), tuple(m.ravel())))
    return out


@lru_cache(maxsize=64)
def _settings(isometry_key: tuple) -> dict[str, list[tuple[tuple, ...]]]:
    """Every group's settings in a primitive basis whose isometries are ``isometry_key``: per group a list of
    operation sets, each a tuple of (W as 4-tuple, t as 2-tuple of halves/thirds modulo 1)."""
    allowed = set(isometry_key)
    out: dict[str, list[tuple]] = {}
    mats = [np.array(e, dtype=int).reshape(2, 2) for e in itertools.product(range(-2, 3), repeat=4)]
    for name in PLANE_GROUPS:
        ops = [parse_triplet(t) for t in OPERATIONS[name]]
        centred = name in CENTRING
        seen: set = set()
        for p in mats:
            det = round(np.linalg.det(p))
            if abs(det) != (2 if centred else 1):
                continue
            pinv = np.linalg.inv(p)
            if centred and not np.allclose(p @ np.array([0.5, 0.5]), np.round(p @ np.array([0.5, 0.5]))):
                continue
            setting = []
            for wc, tc in ops:
                wp = p @ wc @ pinv
                if not np.allclose(wp, np.round(wp)):
                    break
                wp = tuple(int(v) for v in np.round(wp).ravel())
                if wp not in allowed:
                    break
                tp = np.mod(p @ tc, 1.0)
                setting.append((wp, tuple(float(v) for v in np.round(tp * 12) / 12 % 1.0)))
            else:
                key = tuple(sorted(setting))
                if key not in seen:
                    seen.add(key)
            continue
        if seen:
            out[name] = sorted(seen)
    return out


class _Overlaps:
    """The overlaps C_W(w) = <M, T_(W, w) M> of the cell average with its transforms, on an N x N grid of w and as
    continuous sums."""

    def __init__(self, hk: np.ndarray, f: np.ndarray, grid: int):
        self.hk, self.f, self.n = hk, f, grid
        self.index = {tuple(k): i for i, k in enumerate(hk)}
        self.cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def pairs(self, w_key: tuple) -> np.ndarray:
        """P(k) = conj(F(W^T k)) F(k) for every k of the set (closed under the isometries)."""
        w = np.array(w_key, dtype=int).reshape(2, 2)
        image = self.hk @ w  # rows k -> (W^T k)^T = k^T W
        j = np.array([self.index[tuple(v)] for v in image])
        return np.conj(self.f[j]) * self.f, j

    def grid(self, w_key: tuple) -> np.ndarray:
        if w_key not in self.cache:
            p, j = self.pairs(w_key)
            x = np.zeros((self.n, self.n), complex)
            np.add.at(x, (self.hk[:, 0] % self.n, self.hk[:, 1] % self.n), p)
            self.cache[w_key] = (np.real(np.fft.ifft2(x)) * self.n ** 2, j)
        return self.cache[w_key][0]


def _best_origin(ov: _Overlaps, setting: tuple, energy: float) -> tuple[float, np.ndarray]:
    """Largest sum of overlaps over the setting's operations for one common origin: (sum, origin (2,))."""
    n = ov.n
    jj = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), axis=0).reshape(2, -1)
    total = np.zeros(jj.shape[1])
    for w_key, t in setting:
        w = np.array(w_key, dtype=int).reshape(2, 2)
        shift = (np.round(np.array(t) * n).astype(int)[:, None] + (np.eye(2, dtype=int) - w) @ jj) % n
        total += ov.grid(w_key)[shift[0], shift[1]]
    best = int(np.argmax(total))
    o = jj[:, best] / n
    # continuous refinement: S(o) = Re sum c exp(2 pi i q.o)
    cs, qs = [], []
    for w_key, t in setting:
        w = np.array(w_key, dtype=int).reshape(2, 2)
        p, _ = ov.pairs(w_key)
        cs.append(p * np.exp(2j * np.pi * (ov.hk @ np.array(t))))
        qs.append(ov.hk @ (np.eye(2, dtype=int) - w))  # rows ((I - W)^T k)^T
    c, q = np.concatenate(cs), np.concatenate(qs).astype(np.float64)
    value = float(total[best])
    for _ in range(4):
        e = c * np.exp(2j * np.pi * (q @ o))
        grad = np.real((2j * np.pi * e) @ q)
        hess = np.real(((2j * np.pi) ** 2 * e)[:, None, None] * q[:, :, None] * q[:, None, :]).sum(axis=0)
        step = -np.linalg.pinv(hess, rcond=1e-6) @ grad
        trial = o + np.clip(step, -1.0 / n, 1.0 / n)
        new = float(np.real(np.sum(c * np.exp(2j * np.pi * (q @ trial)))))
        if new <= value:
            break
        o, value = trial, new
    return value, np.mod(o, 1.0)


def reciprocal_set(basis_px: np.ndarray, isometries: list[np.ndarray], g_max: float = G_MAX) -> np.ndarray:
    """Integer h (n, 2), h != 0, with |g_h| <= g_max, closed under h -> W^T h for every isometry."""
    a = np.asarray(basis_px, np.float64)
    binv = np.linalg.inv(a.T)
    lim = [int(np.ceil(g_max * np.hypot(*v))) + 1 for v in a]
    hk = np.array([(i, j) for i in range(-lim[0], lim[0] + 1) for j in range(-lim[1], lim[1] + 1)
                   if (i, j) != (0, 0)])
    hk = hk[np.hypot(*(hk @ binv).T) <= g_max]
    found = {tuple(v) for v in hk}
    frontier = list(found)
    while frontier:
        new = []
        for v in frontier:
            for w in isometries:
                u = tuple(int(x) for x in np.array(v) @ w)
                if u not in found:
                    found.add(u)
                    new.append(u)
        frontier = new
    return np.array(sorted(found), dtype=int)


def classify_plane_group(image: np.ndarray, basis_px: np.ndarray | None = None, *, g_max: float = G_MAX,
                         metric_tol: float = METRIC_TOL, floor: float = SYSTEMATIC_FLOOR,
                         refine: bool = True) -> DeviationResult:
    """The plane group of a periodic (H, W) image by symmetry deviations of its cell average and the G-AIC.

    ``basis_px``: primitive vectors (2, 2), rows (dx, dy) px; measured (``kernels.cell``) when None. Raises
    ``ValueError`` for a non-2-D, non-finite or non-periodic image (no lattice) and for a cell too large for the
    image (fewer than two cells along a side)."""
    img = np.asarray(image, np.float64)
    if img.ndim != 2 or min(img.shape) < 8:
        raise ValueError(f"image must be (H, W) with H, W >= 8, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise ValueError("image contains NaN or infinite values")
    if basis_px is None:
        basis_px = _measured_basis(img)
    basis = reduce_basis(*np.asarray(basis_px, np.float64))
    if basis.shape != (2, 2) or abs(np.linalg.det(basis)) < 1.0:
        raise ValueError(f"basis must be two independent vectors (2, 2) in px, got {basis_px!r}")
    if refine:
        basis = refine_basis(img, basis)
    if max(np.hypot(*basis.T)) > min(img.shape) / 2:
        raise ValueError(f"cell ({np.hypot(*basis.T).round(1).tolist()} px) too large for a "
                         f"{img.shape[0]}x{img.shape[1]} image: need two cells along each side")
    candidates = []
    for cell, index in candidate_cells(img, basis, g_max):
        isos = lattice_isometries(cell, metric_tol)
        hk = reciprocal_set(cell, isos, g_max)
        f, var, n_eff = cell_average(img, cell, hk)
        candidates.append((cell, index, isos, hk, f, var, n_eff, float(np.sum(np.abs(f) ** 2))))
    if candidates[0][7] <= 0:
        raise ValueError("the image has no periodic contrast")
    # one noise level and one floor for all cells, so that their criteria compare: the most complete model's
    # noise, the measured cell's signal power per coefficient
    var = min(c[5] for c in candidates)
    var_eff = var + floor * candidates[0][7] / len(candidates[0][3])
    best_total, runner = None, {}
    for cell, index, isos, hk, f, _, n_eff, energy in candidates:
        grid = GRID
        while np.abs(hk).max() >= grid // 2:
            grid += 12
        ov = _Overlaps(hk, f, grid)
        settings = _settings(tuple(tuple(int(v) for v in w.ravel()) for w in isos))
        n = len(hk)
        deviation, criterion, chosen = {}, {}, {}
        for name, options in settings.items():
            best = None
            for setting in options:
                value, origin = _best_origin(ov, setting, energy)
                j = max(energy - value / len(setting), 0.0)
                if best is None or j < best[0]:
                    best = (j, origin, setting)
            deviation[name] = best[0] / energy
            criterion[name] = (best[0] + 2 * n * var_eff / len(best[2])) / energy
            chosen[name] = best
            # over all cells: the energy the cell leaves unmodelled counts against it (- energy), and a
            # pseudo-translation must be broken by SUPERLATTICE_FLOOR of the measured cell's energy
            total = (best[0] - energy + 2 * n * var_eff / len(best[2])
                     + (SUPERLATTICE_FLOOR * candidates[0][7] if index > 1 else 0.0))
            if name not in runner or total < runner[name]:
                runner[name] = total
            if best_total is None or total < best_total[0]:
                best_total = (total, name, cell, index, isos, hk, f, n_eff, energy, ov, grid, deviation, criterion,
                              chosen)
    _, name, basis, superlattice, isos, hk, f, n_eff, energy, ov, grid, deviation, criterion, chosen = best_total
    n = len(hk)
    ranked_all = sorted(runner, key=runner.get)
    runner_up = next((g for g in ranked_all if g != name), name)
    _, origin, setting = chosen[name]
    ops = [_operation(ov, w_key, t, origin, energy, var) for w_key, t in setting]
    motif = np.zeros((grid, grid), complex)
    np.add.at(motif, (hk[:, 0] % grid, hk[:, 1] % grid), f)
    return DeviationResult(
        plane_group=name, runner_up=runner_up, basis_px=basis, operations=ops,
        origin=origin, deviation=deviation, criterion=criterion, noise=n * var / energy, n_coefficients=n,
        n_cells=float(n_eff / abs(np.linalg.det(basis))), isometries=len(isos), superlattice=superlattice,
        motif=np.real(np.fft.ifft2(motif)) * grid ** 2)


def _operation(ov: _Overlaps, w_key: tuple, t: tuple, origin: np.ndarray, energy: float, var: float) -> Operation:
    w = np.array(w_key, dtype=int).reshape(2, 2)
    shift = np.mod(np.array(t) + (np.eye(2) - w) @ origin, 1.0)
    p, j = ov.pairs(w_key)
    overlap = float(np.real(np.sum(p * np.exp(2j * np.pi * (ov.hk @ shift)))))
    moved = j != np.arange(len(j))
    phase = np.exp(2j * np.pi * (ov.hk @ shift))
    expected = var * (2 * moved.sum() + np.sum(np.abs(1 - phase[~moved]) ** 2)) / energy
    det = round(np.linalg.det(w))
    if det == 1:
        tr = int(np.trace(w))
        order = {2: 1, -2: 2, -1: 3, 0: 4, 1: 6}[tr]
        kind = "identity" if order == 1 else "rotation"
    else:
        order = 2
        glide = _glide_part(w, shift)
        kind = "glide" if np.any(np.abs(glide - np.round(glide)) > 0.25) else "mirror"
    return Operation(W=w, w=shift, kind=kind, order=order, residual=max(2 * (energy - overlap) / energy, 0.0),
                     expected=float(expected))


def _glide_part(w: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """The glide vector (I + W) w / 2 of a reflection, reduced over the coset's lattice translations: zero for a
    mirror."""
    best = None
    for l in itertools.product((-1, 0, 1), repeat=2):
        g = (np.eye(2) + w) @ (shift + np.array(l)) / 2
        if best is None or np.abs(g).sum() < np.abs(best).sum():
            best = g
    return best
