"""Dense Zernike symmetry maps of an image: rotation scores (2-, 3-, 4-, 6-fold), mirror strength and mirror axis.

One kernel family with the m = 0 contrast features (``kernels.zernike``: the same grid, radial polynomials,
Noll normalisation and ``device_constant`` cache); NumPy and CuPy through the same code (the namespace comes
from the input array), torch tensors through DLPack (``symmetry_maps`` accepts them and returns a tensor on
the same device).

Method (Dan et al., Chin. Phys. B 33, 086803 (2024); seed 000)
-----------------------------------------------------------------
Dense moments
    For every pixel, the real Zernike moments ``a_nm`` (n <= ``n_max``, |m| >= 2) of its odd ``k x k``
    neighbourhood (the unit disk of ``kernels.zernike``), by FFT correlation with the kernels. Pixels whose
    neighbourhood leaves the image see a padded image (``valid_mask`` marks the others).
Rotation maps
    ``E_nm = a_nm**2 / sum(a**2)`` over |m| >= 2 (|m| in {0, 1} dropped: they carry the mean and the gradient);
    ``P_n = sum of E_nm over |m| a multiple of n``; ``rot_n = (n P_n - 1) / (n - 1)``: 1 for a perfectly n-fold
    neighbourhood, about 0 for no preference, -1/(n-1) when nothing lies in the multiples of n.
Mirror map
    With the complex moments ``c_nm = a_{n,m} + i a_{n,-m}`` (m >= 2, normalised as above),
    ``g(t) = sum_nm |c_nm|**2 cos(2 phi_nm - m t)`` is 1 at t = 2 alpha for a neighbourhood mirror-symmetric
    about the line at angle alpha. ``mirror = max_t g(t)`` over 360 angles t in [0, 2 pi) (as motif-learn's
    ``mirror_map``), then, in the default convention, refined by Newton steps to the continuous maximum; the
    axis is stored as ``sin2a = sin t*``, ``cos2a = cos t*`` (alpha is a line direction, defined mod pi).
Angles
    ``theta = atan2(y, x)`` on the kernel grid with x along columns and **y down** (image row order), so
    alpha is measured from the +x (column) axis towards +y (down): clockwise on screen.

Conventions
-----------
``zero-mean`` (default)
    Each kernel has its disk mean removed, so a constant offset cannot leak into any moment (motif-learn's
    m = 4 and m = 8 kernels sum to non-zero values on a discrete disk: an offset of 1 moves its rotation maps by
    up to 1.1, and real frames carry offsets of 1e6 counts). The image mean is removed first (exact, and it
    keeps float32 accurate under large offsets) and the border is padded by reflection, so the maps are
    offset-invariant at every pixel. The mirror angle is refined to the continuous maximum.
``motif``
    motif-learn 0.1.2 exactly (``ZPs(n_max, k).transform(image)`` then ``rot_maps``/``mirror_map``): its disk
    mask ``sqrt(x**2 + y**2) <= 1``, kernels as they are, zero padding, the 360-angle grid maximum.

Both conventions are invariant to a positive scale of the image. Pixels whose moments are all zero (a flat
neighbourhood under zero-mean kernels) get ``rot_n = -1/(n-1)``, ``mirror = 0`` and no axis (``sin2a =
cos2a = 0``) instead of motif-learn's NaN.

Kernel size in physical terms
-----------------------------
The disk must reach past the first shell of lattice neighbours, or a lone atom fills it and the maps show
the square pixel grid (measured: a hexagonal lattice of a = 12 px gives rot6 = -0.2 at an atom with k = 15,
0.95 with k = 21 and 0.995 with k = 31). ``kernel_px_for_cell(cell_px)`` gives the odd size
``~ 2.5 x sqrt(primitive cell area)`` (a diameter of about two cells; a radius of 1.16 a for a hexagonal
lattice) from the measured cell (``kernels.cell.measure_cell``). ``n_max`` sets
the angular resolution: the rotation maps need ``n_max >= 6`` (m = 6), and ``n_max <= k - 1`` (a k-pixel disk
cannot resolve higher orders). The default ``n_max = 10`` also holds m = 8, 9, 10.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.fft import next_fast_len

from contract.planegroups import N_SYMMETRY_MAPS, ROTATION_FOLDS, SYMMETRY_MAP_NAMES

from .zernike import array_module, device_constant, disk_grid, zernike_basis_host, zernike_indices

CONVENTIONS = ("zero-mean", "motif")
DEFAULT_CONVENTION = "zero-mean"
DEFAULT_N_MAX = 10
MIRROR_ANGLES = 360
"""Grid of 2 alpha = t in [0, 2 pi) for the mirror maximum (motif-learn's ``mirror_map`` uses the same)."""
KERNEL_CELLS = 2.5
"""Default kernel side in units of sqrt(primitive cell area) (``kernel_px_for_cell``)."""
MIN_KERNEL_PX = 7
NEWTON_STEPS = 3  # from half a grid step (0.5 degree) to ~1e-10 rad
_PIXEL_CHUNK = 16384  # pixels per mirror-grid product: (360 x chunk) stays ~ 23 MB in float32

__all__ = ["CONVENTIONS", "SYMMETRY_MAP_NAMES", "check_kernel", "dense_moments", "dihedral_transform",
           "kernel_px_for_cell", "maps_from_moments", "symmetry_kernels_host", "symmetry_maps",
           "symmetry_moment_table", "valid_mask"]


# ------------------------------------------------------------------------------------------- kernels
def check_kernel(kernel_px, n_max: int = DEFAULT_N_MAX, convention: str = DEFAULT_CONVENTION) -> tuple[int, int]:
    """``(kernel_px, n_max)`` as ints if usable, else ``ValueError`` saying what to change."""
    if isinstance(kernel_px, bool) or int(kernel_px) != kernel_px or kernel_px < MIN_KERNEL_PX or kernel_px % 2 == 0:
        raise ValueError(f"kernel size must be an odd integer >= {MIN_KERNEL_PX} px (about 1-2 unit cells), "
                         f"got {kernel_px!r}")
    if isinstance(n_max, bool) or int(n_max) != n_max or n_max < max(ROTATION_FOLDS):
        raise ValueError(f"n_max must be an integer >= {max(ROTATION_FOLDS)} (the 6-fold map needs m = 6), "
                         f"got {n_max!r}")
    if n_max > kernel_px - 1:
        raise ValueError(f"n_max={n_max} is too high for a {kernel_px} px kernel: use n_max <= {kernel_px - 1} "
                         f"or a larger kernel")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    return int(kernel_px), int(n_max)


def symmetry_moment_table(n_max: int = DEFAULT_N_MAX) -> np.ndarray:
    """(n, m) rows of the moments the maps use (|m| >= 2): ``(K, 2)`` int, in pairs: first every (n, +m) by
    m then n, then the (n, -m) in the same order, so that row i and row i + K/2 are the real and imaginary
    parts of one complex moment (the maps slice them without copies)."""
    plus = [(n, m) for m in range(2, n_max + 1) for n in range(m, n_max + 1, 2)]
    return np.array(plus + [(n, -m) for n, m in plus], dtype=np.int64)


def symmetry_kernels_host(kernel_px: int, n_max: int = DEFAULT_N_MAX,
                          convention: str = DEFAULT_CONVENTION) -> np.ndarray:
    """The correlation kernels ``(K, k, k)`` float64 for ``symmetry_moment_table(n_max)``.

    ``zero-mean``: ``zernike_basis_host`` columns ((dA/pi) Z_nm on the disk) minus their disk mean.
    ``motif``: motif-learn's ``Z_nm / (pi k**2 / 4)`` on its mask ``sqrt(x**2 + y**2) <= 1``.
    """
    kernel_px, n_max = check_kernel(kernel_px, n_max, convention)
    position = {tuple(r): i for i, r in enumerate(zernike_indices(n_max).tolist())}
    cols = np.array([position[tuple(r)] for r in symmetry_moment_table(n_max).tolist()])
    basis = zernike_basis_host(kernel_px, n_max)[:, cols].T.reshape(len(cols), kernel_px, kernel_px)
    rho, _, inside = disk_grid(kernel_px)
    if convention == "motif":
        c = np.linspace(-1.0, 1.0, kernel_px)
        xv, yv = np.meshgrid(c, c)
        motif_inside = np.sqrt(xv ** 2 + yv ** 2) <= 1  # motif-learn's own test; drops rim pixels 1 ulp outside
        d_area = (2.0 / (kernel_px - 1)) ** 2
        scale = (math.pi / d_area) / (math.pi * kernel_px ** 2 / 4)  # (dA/pi) Z -> Z / (pi k^2 / 4)
        return basis * motif_inside * scale
    mean = basis[:, inside].mean(axis=1)
    return np.where(inside, basis - mean[:, None, None], 0.0)


def _fft_shape(shape: tuple[int, int], kernel_px: int) -> tuple[int, int]:
    return tuple(next_fast_len(s + kernel_px - 1, real=True) for s in shape)


def _kernel_spectra(kernel_px: int, n_max: int, convention: str, fft_shape: tuple[int, int], dtype, like):
    """conj(rfft2) of the kernels zero-padded to ``fft_shape``: ``(K, Hf, Wf // 2 + 1)``, cached per device."""
    def build():
        kernels = symmetry_kernels_host(kernel_px, n_max, convention)
        return np.conj(np.fft.rfft2(kernels, s=fft_shape))

    complex_dtype = np.complex64 if np.dtype(dtype) == np.float32 else np.complex128
    return device_constant(("symmetry_spectra", kernel_px, n_max, convention, tuple(fft_shape)), build, like,
                           complex_dtype)


# ------------------------------------------------------------------------------------------- moments
def dense_moments(image, kernel_px: int, n_max: int = DEFAULT_N_MAX, convention: str = DEFAULT_CONVENTION,
                  dtype=np.float32):
    """Zernike moments of every pixel's ``k x k`` neighbourhood.

    Parameters
    ----------
    image : (H, W) or (N, H, W) array (NumPy or CuPy), any real dtype, H, W >= 2.
    kernel_px : odd neighbourhood side k (px).
    n_max : highest radial order.
    convention : "zero-mean" (offset-invariant, reflected border) or "motif" (motif-learn 0.1.2, zero border).
    dtype : float32 or float64 of the computation and of the result.

    Returns
    -------
    (K, H, W) or (N, K, H, W) array of ``dtype`` on the input's device; rows follow
    ``symmetry_moment_table(n_max)`` (only |m| >= 2: what the maps use).
    """
    kernel_px, n_max = check_kernel(kernel_px, n_max, convention)
    xp = array_module(image)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    if image.ndim not in (2, 3) or min(image.shape[-2:]) < 2:
        raise ValueError(f"image must be (H, W) or (N, H, W) with H, W >= 2, got shape {tuple(image.shape)}")
    if not bool(xp.isfinite(image).all()):
        raise ValueError("image has NaN or infinite pixels")
    batch = image.ndim == 3
    stack = image if batch else image[None]
    h, w = stack.shape[-2:]
    half = (kernel_px - 1) // 2
    if convention == "zero-mean":
        # the mean is removed in float64 first: exact for zero-mean kernels, and float32 keeps its digits
        centred = stack.astype(np.float64) - stack.astype(np.float64).mean(axis=(-2, -1), keepdims=True)
        padded = xp.pad(centred.astype(dtype), ((0, 0), (half, half), (half, half)), mode="reflect")
    else:
        padded = xp.pad(stack.astype(dtype), ((0, 0), (half, half), (half, half)), mode="constant")
    fft_shape = _fft_shape((h, w), kernel_px)
    spectra = _kernel_spectra(kernel_px, n_max, convention, fft_shape, dtype, like=stack)
    out = xp.empty((stack.shape[0], spectra.shape[0], h, w), dtype=dtype)
    for i in range(stack.shape[0]):
        f = xp.fft.rfft2(padded[i], s=fft_shape)
        # circular correlation of the padded image: no wrap-around reaches rows/columns [0, h) x [0, w)
        corr = xp.fft.irfft2(f[None] * spectra, s=fft_shape)
        out[i] = corr[:, :h, :w]
    return out if batch else out[0]


def valid_mask(shape: tuple[int, int], kernel_px: int):
    """(H, W) bool NumPy mask: True where the whole ``k x k`` neighbourhood lies inside the image."""
    h, w = shape
    half = (int(kernel_px) - 1) // 2
    mask = np.zeros((h, w), dtype=bool)
    mask[half:h - half, half:w - half] = True
    return mask


# ---------------------------------------------------------------------------------------------- maps
def _pair_tables(n_max: int):
    """For the complex moments (pairs of ``symmetry_moment_table``): their m, the distinct m, the (5, pairs)
    matrix [ones; |m| multiple of 2, 3, 4, 6] and the (distinct m, pairs) grouping matrix."""
    table = symmetry_moment_table(n_max)
    ms = table[: len(table) // 2, 1]
    distinct = np.unique(ms)
    folds = np.vstack([np.ones(len(ms))] + [(ms % n == 0) for n in ROTATION_FOLDS]).astype(np.float64)
    group = (ms[None, :] == distinct[:, None]).astype(np.float64)
    return ms, distinct, folds, group


def _angle_grid(distinct_m: np.ndarray, n_angles: int = MIRROR_ANGLES) -> np.ndarray:
    """(n_angles, 2 len(distinct_m)) float64: [cos(m t) ..., sin(m t) ...] on t = 2 pi k / n_angles."""
    t = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    return np.hstack([np.cos(np.outer(t, distinct_m)), np.sin(np.outer(t, distinct_m))])


def maps_from_moments(moments, n_max: int = DEFAULT_N_MAX, refine_axis: bool = True):
    """The seven maps ``(7, ...)`` (``SYMMETRY_MAP_NAMES`` order) from moments ``(K, ...)``.

    ``moments`` rows follow ``symmetry_moment_table(n_max)``; any trailing shape (pixels, (H, W), patches).
    ``refine_axis``: Newton steps from the best of the 360 grid angles to the continuous maximum of g(t)
    (False: motif-learn's grid maximum). The result has the moments' dtype and device.
    """
    xp = array_module(moments)
    table = symmetry_moment_table(n_max)
    if moments.shape[0] != len(table):
        raise ValueError(f"moments must have {len(table)} rows for n_max={n_max} (|m| >= 2), "
                         f"got shape {tuple(moments.shape)}")
    dtype = moments.dtype
    tail = moments.shape[1:]
    a = moments.reshape(len(table), -1)
    half = len(table) // 2
    re, im = a[:half], a[half:]  # c = a_{n,m} + i a_{n,-m}, views
    ms, distinct, folds, group = _pair_tables(n_max)
    power = re * re + im * im  # |c|^2
    sums = xp.asarray(folds, dtype=dtype) @ power  # (5, pixels): total, then energy in multiples of 2, 3, 4, 6
    norm = sums[0]
    empty = norm <= 0
    inv = 1.0 / xp.where(empty, xp.ones_like(norm), norm)
    out = xp.empty((N_SYMMETRY_MAPS, a.shape[1]), dtype=dtype)
    for row, n in enumerate(ROTATION_FOLDS):
        out[row] = (n * sums[row + 1] * inv - 1) / (n - 1)
    # mirror: S_m = sum_n c_nm^2 / norm for each distinct m, then g(t) = sum_m Re S_m cos mt + Im S_m sin mt
    g_mat = xp.asarray(group, dtype=dtype)
    coef = xp.concatenate([g_mat @ (re * re - im * im), g_mat @ (2 * re * im)]) * inv  # (2M, pixels)
    grid = xp.asarray(_angle_grid(distinct, MIRROR_ANGLES), dtype=dtype)
    n_pix = a.shape[1]
    best = xp.empty(n_pix, dtype=dtype)
    arg = xp.empty(n_pix, dtype=xp.int64)
    coef_t = xp.ascontiguousarray(coef.T)
    for s in range(0, n_pix, _PIXEL_CHUNK):
        g = coef_t[s:s + _PIXEL_CHUNK] @ grid.T  # (pixels, angles): the arg-max runs along contiguous rows
        i = g.argmax(axis=1)
        arg[s:s + _PIXEL_CHUNK] = i
        best[s:s + _PIXEL_CHUNK] = xp.take_along_axis(g, i[:, None], axis=1)[:, 0]
    t = arg.astype(dtype) * dtype.type(2 * np.pi / MIRROR_ANGLES)
    if refine_axis:
        best, t = _newton_maximum(coef, distinct, t, xp, 0.5 * 2 * np.pi / MIRROR_ANGLES)
    out[4] = best
    has_axis = ~empty
    out[5] = xp.where(has_axis, xp.sin(t), 0)
    out[6] = xp.where(has_axis, xp.cos(t), 0)
    return out.reshape((N_SYMMETRY_MAPS, *tail))


def _newton_maximum(coef, distinct_m: np.ndarray, t, xp, max_step: float):
    """Refine the grid maximiser ``t`` of g(t) = sum_m R_m cos(m t) + I_m sin(m t); returns (g(t*), t*).

    Steps are clipped to ``max_step`` (half a grid step: stay at the grid's best maximum)."""
    n_m = len(distinct_m)
    re, im = coef[:n_m], coef[n_m:]
    m = xp.asarray(distinct_m, dtype=coef.dtype)[:, None]
    wanted = [int(v) for v in distinct_m]

    def harmonics(tt):
        # cos(k t), sin(k t) by the angle-addition recurrence from cos t, sin t: two trigonometric calls on
        # the pixels instead of two per harmonic
        c1, s1 = xp.cos(tt), xp.sin(tt)
        c, s = c1, s1
        cs, ss = [], []
        for k in range(1, wanted[-1] + 1):
            if k > 1:
                c, s = c * c1 - s * s1, s * c1 + c * s1
            if k in wanted:
                cs.append(c)
                ss.append(s)
        return xp.stack(cs), xp.stack(ss)

    ones = xp.ones((1, n_m), dtype=coef.dtype)
    mvec, m2vec = m.T, (m * m).T

    def terms(tt):
        c, s = harmonics(tt)
        u = re * c + im * s  # the harmonics of g
        v = im * c - re * s  # their derivatives / m
        return u, v

    for _ in range(NEWTON_STEPS):
        u, v = terms(t)
        d1 = (mvec @ v)[0]
        d2 = -(m2vec @ u)[0]
        step = xp.where(d2 < 0, -d1 / xp.where(d2 < 0, d2, -1), 0)
        t = t + xp.clip(step, -max_step, max_step)
    u, _ = terms(t)
    return (ones @ u)[0], xp.mod(t, 2 * np.pi)


def symmetry_maps(image, kernel_px: int, n_max: int = DEFAULT_N_MAX, convention: str = DEFAULT_CONVENTION,
                  dtype=np.float32):
    """The seven symmetry maps of an image: ``(H, W) -> (7, H, W)`` or ``(N, H, W) -> (N, 7, H, W)``.

    ``image``: NumPy or CuPy array, or a torch tensor (CPU or CUDA, through DLPack; a tensor comes back).
    Channels follow ``SYMMETRY_MAP_NAMES``: rot2, rot3, rot4, rot6, mirror, sin2a, cos2a (dimensionless).
    See the module docstring for the conventions and ``valid_mask`` for the pixels whose neighbourhood lies
    inside the image.
    """
    torch_in = _is_torch(image)
    if torch_in:
        import torch  # deferred: only torch inputs need it; kernels import without torch

        device = image.device
        image = _from_torch(image.detach())
    moments = dense_moments(image, kernel_px, n_max, convention, dtype)
    refine = convention == "zero-mean"
    if moments.ndim == 3:
        maps = maps_from_moments(moments, n_max, refine)
    else:  # (N, K, H, W) -> (N, 7, H, W)
        xp = array_module(moments)
        maps = xp.stack([maps_from_moments(mo, n_max, refine) for mo in moments])
    if torch_in:
        return torch.from_dlpack(maps).to(device) if maps.__class__.__module__.startswith("cupy") else \
            torch.from_numpy(np.ascontiguousarray(maps))
    return maps


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def _from_torch(tensor):
    if tensor.device.type == "cuda":
        import cupy  # deferred: optional GPU dependency, CUDA tensors only

        return cupy.from_dlpack(tensor.contiguous())
    return tensor.cpu().numpy()


# ----------------------------------------------------------------------------------- geometry helpers
def kernel_px_for_cell(cell_px: float, cells: float = KERNEL_CELLS, max_px: int | None = None) -> int:
    """Odd kernel side covering ``cells`` unit cells: ``cells x cell_px`` rounded to the nearest odd integer,
    at least ``MIN_KERNEL_PX`` (and at most ``max_px`` when given). ``cell_px``: the square root of the
    primitive cell area in pixels (``kernels.cell.measure_cell``)."""
    if not (np.isfinite(cell_px) and cell_px > 0):
        raise ValueError(f"cell size must be > 0 px, got {cell_px!r}")
    k = 2 * int(round((cells * cell_px - 1) / 2)) + 1
    k = max(MIN_KERNEL_PX, k)
    if max_px is not None:
        k = min(k, max_px if max_px % 2 else max_px - 1)
    return k


def dihedral_transform(image, maps, quarter_turns: int = 0, flip: bool = False):
    """Apply one of the 8 symmetries of the square grid to an image ``(..., H, W)`` and its maps
    ``(..., 7, H, W)`` consistently: the maps of the transformed image, exactly (the map channels move with the
    pixels; the axis angle alpha turns with the image, so 2 alpha changes by 180 degrees per quarter turn and
    changes sign under a flip).

    ``quarter_turns``: ``rot90`` steps in the (row, column) plane (NumPy/torch ``rot90`` direction);
    ``flip``: left-right mirror (columns reversed) after the turns. NumPy, CuPy or torch arrays.
    """
    k = int(quarter_turns) % 4
    if _is_torch(maps):
        import torch  # deferred: only torch inputs need it; kernels import without torch

        rot = lambda a: torch.rot90(a, k, dims=(-2, -1))  # noqa: E731
        lr = lambda a: torch.flip(a, dims=(-1,))  # noqa: E731
    else:
        xp = array_module(maps)
        rot = lambda a: xp.rot90(a, k, axes=(-2, -1))  # noqa: E731
        lr = lambda a: a[..., ::-1]  # noqa: E731
    image, maps = rot(image), rot(maps)
    sign_sin = sign_cos = 1 if k % 2 == 0 else -1  # alpha -> alpha -+ 90 deg: 2 alpha -> 2 alpha + 180 deg
    if flip:
        image, maps = lr(image), lr(maps)
        sign_sin = -sign_sin  # x -> -x: alpha -> pi - alpha: sin 2 alpha changes sign, cos 2 alpha stays
    scale = [1] * (N_SYMMETRY_MAPS - 2) + [sign_sin, sign_cos]
    if _is_torch(maps):
        import torch  # deferred: only torch inputs need it; kernels import without torch

        factor = torch.tensor(scale, dtype=maps.dtype, device=maps.device)
    else:
        factor = array_module(maps).asarray(scale, dtype=maps.dtype)
    return image, maps * factor.reshape((N_SYMMETRY_MAPS, 1, 1))
