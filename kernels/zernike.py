"""Real Zernike moments of square image patches, one kernel for NumPy (CPU) and CuPy (GPU).

Convention (the one place it is written down)
---------------------------------------------
Grid
    A patch is an odd ``P x P`` array with the atomic column on the centre pixel. Pixel centres sit on
    ``linspace(-1, 1, P)`` along both axes: column ``j`` has ``x = -1 + 2 j / (P - 1)``, row ``i`` has
    ``y = -1 + 2 i / (P - 1)``, i.e. **the y axis points down** (image row order, as stored). Polar
    coordinates are ``rho = sqrt(x**2 + y**2)`` and ``theta = atan2(y, x)``, so in this frame theta grows
    *clockwise* on screen. Only pixels with ``rho <= 1`` (the unit disk, centres on the rim included) count;
    each pixel has area ``dA = (2 / (P - 1))**2``.
Basis (Noll normalisation)
    ``Z_nm(rho, theta) = N_nm R_n^|m|(rho) * cos(m theta)`` for ``m >= 0`` and
    ``N_nm R_n^|m|(rho) * sin(|m| theta)`` for ``m < 0``, with ``N_nm = sqrt(2 (n + 1) / (1 + delta_m0))``
    and ``R`` the usual radial polynomial (``R_n^m(1) = 1``, so the sign is fixed: ``Z_n0(rho=1) > 0``).
    These are orthonormal under ``<f, g> = (1/pi) * integral over the disk of f g dA``.
Moments
    ``a_nm = (dA / pi) * sum_pixels f Z_nm``: the plain projection (no least squares), the Riemann sum of
    ``<f, Z_nm>``. A patch is then approximately ``sum a_nm Z_nm``.
Relation to the textbook complex moment
    ``A_nm = (n + 1)/pi * sum f V*_nm dA`` with ``V_nm = R_n^|m| exp(i m theta)`` (theta as above):
    ``A_n0 = sqrt(n + 1) * a_n0`` and, for ``m > 0``,
    ``A_nm = sqrt((n + 1) / 2) * (a_{n,m} - i a_{n,-m})``, hence ``|A_nm| = sqrt((n + 1)/2) * sqrt(a_{n,m}**2 + a_{n,-m}**2)``.
    In a y-up frame (theta -> -theta) only the imaginary part changes sign.
Rotation-invariant magnitudes
    ``zernike_magnitudes`` returns, for every ``m >= 0``, ``sqrt(a_{n,m}**2 + a_{n,-m}**2)`` (``|a_n0|`` for
    ``m = 0``), i.e. ``|A_nm|`` divided by ``sqrt(n + 1)`` (``m = 0``) or ``sqrt((n + 1)/2)`` (``m > 0``).
Contrast features
    The six signed ``a_n0`` for ``n = 0, 2, ..., 10`` (the paper's "m = 0, n <= 10"), in that order.

The same code runs on NumPy and CuPy: the namespace is taken from the input array (``cupy.get_array_module``
when CuPy imports), the basis is built once in float64 on the host and cached per (P, n_max, dtype, device),
and the hot path is one ``(N, P*P) @ (P*P, n_moments)`` matrix product per batch.
"""
from __future__ import annotations

import math

import numpy as np

try:  # CuPy is optional: GPU workers have it, the CPU install does not
    import cupy as _cupy
except Exception:  # pragma: no cover - depends on the machine
    _cupy = None

from contract.features import (
    ZERNIKE_ORDERS as CONTRAST_ORDERS,  # radial orders of the six m = 0 features
)
from contract.patches import check_patch_size

DEFAULT_N_MAX = 10


def array_module(array):
    """NumPy or CuPy, whichever owns ``array``."""
    if _cupy is not None:
        return _cupy.get_array_module(array)
    return np


def zernike_indices(n_max: int = DEFAULT_N_MAX) -> np.ndarray:
    """Index table ``(n_moments, 2)`` int of (n, m), ordered by n then m from -n to n in steps of 2."""
    if int(n_max) != n_max or n_max < 0:
        raise ValueError(f"n_max must be a non-negative integer, got {n_max!r}")
    return np.array([(n, m) for n in range(int(n_max) + 1) for m in range(-n, n + 1, 2)], dtype=np.int64)


def radial_polynomial(n: int, m: int, rho: np.ndarray) -> np.ndarray:
    """Zernike radial polynomial R_n^|m|(rho) in float64 (explicit factorial sum)."""
    m = abs(m)
    out = np.zeros_like(rho, dtype=np.float64)
    for k in range((n - m) // 2 + 1):
        c = (-1) ** k * math.factorial(n - k) / (
            math.factorial(k) * math.factorial((n + m) // 2 - k) * math.factorial((n - m) // 2 - k))
        out += c * rho ** (n - 2 * k)
    return out


def disk_grid(patch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rho, theta, inside) on the ``P x P`` pixel-centre grid, y down, float64/bool, each (P, P)."""
    check_patch_size(patch_size)
    c = np.linspace(-1.0, 1.0, patch_size)
    y, x = np.meshgrid(c, c, indexing="ij")  # row index -> y (down), column index -> x
    rho = np.hypot(x, y)
    return rho, np.arctan2(y, x), rho <= 1.0 + 1e-12


def zernike_basis_host(patch_size: int, n_max: int = DEFAULT_N_MAX) -> np.ndarray:
    """Projection matrix ``(P*P, n_moments)`` float64 on the host: ``(dA/pi) * Z_nm`` inside the disk, 0 outside."""
    rho, theta, inside = disk_grid(patch_size)
    d_area = (2.0 / (patch_size - 1)) ** 2
    cols = []
    for n, m in zernike_indices(n_max):
        norm = math.sqrt(2.0 * (n + 1) / (2.0 if m == 0 else 1.0))
        angular = np.cos(m * theta) if m >= 0 else np.sin(-m * theta)
        z = norm * radial_polynomial(int(n), int(m), rho) * angular
        cols.append(np.where(inside, z, 0.0).ravel() * (d_area / math.pi))
    return np.stack(cols, axis=1)


_DEVICE_CONSTANTS: dict = {}


def device_constant(key: tuple, build, like=None, dtype=np.float64):
    """A constant array built once by ``build()`` (a host float64 array) and cached per (key, dtype, device):
    a read-only NumPy array when ``like`` is None or a NumPy array, a CuPy array on the current device when
    ``like`` is a CuPy array. The one cache of the feature kernels (bases, masks)."""
    xp = np if like is None else array_module(like)
    device_id = -1 if xp is np else int(_cupy.cuda.runtime.getDevice())
    full_key = (key, np.dtype(dtype).name, device_id)
    arr = _DEVICE_CONSTANTS.get(full_key)
    if arr is None:
        host = np.ascontiguousarray(np.asarray(build()).astype(dtype))
        if xp is np:
            host.setflags(write=False)  # shared between calls: nobody may change it
            arr = host
        else:
            arr = xp.asarray(host)
        _DEVICE_CONSTANTS[full_key] = arr
    return arr


def zernike_basis(patch_size: int, n_max: int = DEFAULT_N_MAX, dtype=np.float32, like=None,
                  contrast_only: bool = False):
    """Cached projection matrix ``(P*P, n_moments)`` in ``dtype`` on the device of ``like`` (host if None).

    With ``contrast_only`` only the columns of ``contrast_columns(n_max)`` are kept: ``(P*P, 6)``.
    """
    check_patch_size(patch_size)

    def build():
        host = zernike_basis_host(patch_size, n_max)
        # the six m = 0 columns only: 11x fewer flops on the encoder's hot path
        return host[:, contrast_columns(n_max)] if contrast_only else host

    return device_constant(("zernike_basis", int(patch_size), int(n_max), bool(contrast_only)), build, like, dtype)


def zernike_moments(patches, n_max: int = DEFAULT_N_MAX, dtype=np.float32):
    """All real moments ``a_nm`` of a batch of patches.

    Parameters
    ----------
    patches : (N, P, P) array (NumPy or CuPy), already intensity-normalised (see ``kernels.normalise``).
    n_max : highest radial order.

    Returns
    -------
    (N, n_moments) array of ``dtype`` on the same device; columns follow ``zernike_indices(n_max)``.
    """
    xp = array_module(patches)
    patches = check_patches(patches)
    n, p, _ = patches.shape
    basis = zernike_basis(p, n_max, dtype=dtype, like=patches)
    flat = xp.ascontiguousarray(patches.reshape(n, p * p), dtype=basis.dtype)
    return flat @ basis  # the hot path: one GEMM per batch


def contrast_columns(n_max: int = DEFAULT_N_MAX) -> np.ndarray:
    """Column positions of (n, 0), n = 0, 2, ..., 10, inside ``zernike_indices(n_max)``."""
    if n_max < CONTRAST_ORDERS[-1]:
        raise ValueError(f"n_max must be >= {CONTRAST_ORDERS[-1]} for the contrast features, got {n_max}")
    table = [tuple(r) for r in zernike_indices(n_max).tolist()]
    return np.array([table.index((n, 0)) for n in CONTRAST_ORDERS], dtype=np.int64)


def contrast_features(patches, dtype=np.float32):
    """The six signed contrast features ``a_n0``, n = 0, 2, ..., 10: ``(N, P, P) -> (N, 6)``.

    Only the six m = 0 basis columns are projected (the same numbers as those ``zernike_moments`` columns).
    """
    xp = array_module(patches)
    patches = check_patches(patches)
    n, p, _ = patches.shape
    basis = zernike_basis(p, CONTRAST_ORDERS[-1], dtype=dtype, like=patches, contrast_only=True)
    flat = xp.ascontiguousarray(patches.reshape(n, p * p), dtype=basis.dtype)
    return flat @ basis


def zernike_magnitudes(moments, n_max: int = DEFAULT_N_MAX):
    """Rotation-invariant magnitudes for m >= 0: ``(N, n_moments) -> (N, n_pos)``.

    Column k is ``sqrt(a_{n,m}**2 + a_{n,-m}**2)`` for the k-th row of ``magnitude_indices(n_max)``.
    """
    xp = array_module(moments)
    pos, neg = _magnitude_pairs(n_max)
    if moments.ndim != 2 or moments.shape[1] != len(zernike_indices(n_max)):
        raise ValueError(f"moments must be (N, {len(zernike_indices(n_max))}) for n_max={n_max}, "
                         f"got shape {tuple(moments.shape)}")
    a = moments[:, xp.asarray(pos)]
    b = moments[:, xp.asarray(neg)]
    return xp.sqrt(a * a + b * b * xp.asarray(neg != pos, dtype=moments.dtype))


def magnitude_indices(n_max: int = DEFAULT_N_MAX) -> np.ndarray:
    """(n, m) table, m >= 0, of the columns of ``zernike_magnitudes``."""
    idx = zernike_indices(n_max)
    return idx[idx[:, 1] >= 0]


def _magnitude_pairs(n_max: int) -> tuple[np.ndarray, np.ndarray]:
    table = {tuple(r): i for i, r in enumerate(zernike_indices(n_max).tolist())}
    mags = magnitude_indices(n_max)
    pos = np.array([table[(n, m)] for n, m in mags.tolist()])
    neg = np.array([table[(n, -m)] for n, m in mags.tolist()])
    return pos, neg


def check_patches(patches):
    """``patches`` if it is an (N, P, P) batch with P odd >= 3, else ``ValueError``."""
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"patches must be (N, P, P), got shape {tuple(patches.shape)}")
    check_patch_size(patches.shape[1])
    return patches
