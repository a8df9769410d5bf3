"""Intensity normalisation of patches before the Zernike projection: per-patch standardisation on the disk.

``standardise_patches`` maps every patch to zero mean and unit standard deviation over the pixels of its
unit disk (the pixels the Zernike moments see, ``rho <= 1`` on the grid of ``kernels.zernike``); the corners
are transformed the same way but do not enter any moment. It is applied identically to simulated patches
and to patches cut from a micrograph: absolute detector counts, gains and dark levels are not comparable
between microscopes, and a per-patch rule needs nothing else from the image.

Consequence: ``a_00`` (the disk mean) is 0 for every patch (exactly in the encoder's fused kernel, to float
rounding on the unfused path). The column is kept so that the 31-column layout matches the paper; the
absolute level it would carry is exactly what differs between microscopes.

Two entry points, one definition: ``standardise_patches`` (returns the standardised patches; float64
inside) and ``standardised_contrast_features`` (the encoder's fused hot path, tested equal to
``contrast_features(standardise_patches(.))`` and to a float64 evaluation within 1e-5).

Why this choice (measured with ``python bench/features.py --normalisation-study`` on synthetic 1H-MX2
lattices, ``features.synthetic``: 5 hosts x 4 dopants x 2 detectors, every "image" with a random gain 0.3-3,
dark offset and dose 20-200; a random forest on the six m = 0 features + case one-hot, trained and tested on
independently drawn images; 45 deg: relative change of the m = 0 vector between a patch rendered at phi and at
phi + 45 deg, 200 asymmetric patches):

=========================  ==============  =======================  ===============================
normalisation              test accuracy   test, 90 % pristine img  45 deg change median / 95% / max
=========================  ==============  =======================  ===============================
raw counts                 0.846           0.846                    0.6 % / 1.2 % / 1.4 %
patch / disk rms           0.889           0.889                    0.6 % / 1.2 % / 1.4 %
patch / mean               0.890           0.890
z-score over the square    0.952           0.952                    5.2 % / 11 % / 16 %
z-score over the disk      0.949           0.949                    1.7 % / 4.3 % / 5.5 %
per-image z-score          0.966           0.956
=========================  ==============  =======================  ===============================

Gain and offset must go (raw counts and scale-only rules lose 6-10 points). Per-image standardisation is
best when the test image has the simulation's balanced composition but loses most of that edge when the image
is mostly pristine lattice, as micrographs are: its statistics depend on what else is in the image. Of the
per-patch rules, the z-score over the square and over the disk classify equally well (one random-forest run;
the 0.3-point gap is within its noise), but statistics over the square include corners that a rotation
moves in and out, which triples the 45-degree change; on the disk the rule is rotation invariant up to
pixelisation.
"""
from __future__ import annotations

import numpy as np

from .zernike import (
    CONTRAST_ORDERS,
    array_module,
    check_patches,
    contrast_columns,
    contrast_features,
    device_constant,
    disk_grid,
    zernike_basis_host,
)


def check_finite(patches) -> None:
    """Raise ``ValueError`` naming the first patch index holding NaN or inf."""
    xp = array_module(patches)
    bad = ~xp.isfinite(patches.reshape(patches.shape[0], -1)).all(axis=1)
    if bool(bad.any()):
        idx = int(xp.flatnonzero(bad)[0])
        raise ValueError(f"patch {idx} contains NaN or infinite values "
                         f"({int(bad.sum())} bad patch(es) in this batch of {patches.shape[0]})")


def standardise_patches(patches, dtype=np.float32):
    """Per-patch standardisation on the unit disk: ``(f - mean_disk(f)) / std_disk(f)``.

    Parameters
    ----------
    patches : (N, P, P) array (NumPy or CuPy), detector counts, P odd.

    Returns
    -------
    (N, P, P) array of ``dtype`` on the same device; over the disk pixels each patch has mean 0 and
    standard deviation 1 (population std, ``ddof=0``).

    Raises ``ValueError`` for a wrong shape, an even P, NaN/inf (naming the patch index) or a patch that is
    constant on the disk (``std <= 1e-6 |mean|``: float32 cannot resolve less contrast than that).
    """
    xp = array_module(patches)
    check_patches(patches)
    check_finite(patches)
    n, p, _ = patches.shape
    # float64 inside: the mean must be removed before rounding to float32, or a large dark level leaks in
    flat = xp.ascontiguousarray(patches.reshape(n, p * p), dtype=xp.float64)
    mask = _disk_mask(p, xp, flat.dtype)
    mean = flat @ (mask / mask.sum())
    std = _disk_std(flat, mean, mask)
    return ((flat - mean[:, None]) / std[:, None]).astype(dtype).reshape(n, p, p)


def standardised_contrast_features(patches, dtype=np.float32):
    """``contrast_features(standardise_patches(patches))`` in one fused pass: ``(N, P, P) -> (N, 6)``.

    The encoder's hot path. Standardisation is affine per patch, so it commutes with the projection:
    ``a_n0(standardised) = (a_n0(f) - mean * sum(basis_n0)) / std``. One matrix product against the six
    basis columns plus a disk-mean column and an all-ones column (whose sum catches NaN/inf anywhere in the
    patch) replaces the standardised copy; the variance is then one blocked, centred pass (two-pass
    variance). Patches whose dark level dwarfs their contrast (disk mean > 10 x std), where the float32
    product would lose digits, are re-done by the unfused expression. Agrees with the definition evaluated
    in float64 to 1e-5 (tested with gains 1-1000 and offsets up to 5000).
    """
    xp = array_module(patches)
    check_patches(patches)
    n, p, _ = patches.shape
    flat = xp.ascontiguousarray(patches.reshape(n, p * p), dtype=dtype)
    aug, basis_sums = _augmented_basis(p, xp, flat.dtype)
    mask = _disk_mask(p, xp, flat.dtype)
    # CPU: blocks of rows that stay in cache, so the data are read from memory once for the product and the
    # variance together; GPU: one block (big kernels)
    block = BLOCK_ROWS if xp is np else max(n, 1)
    proj = xp.empty((n, aug.shape[1]), dtype=flat.dtype)  # raw a_n0 (6), disk mean, total sum
    sq = xp.empty(n, dtype=flat.dtype)
    buf = xp.empty((min(block, n), p * p), dtype=flat.dtype)
    for i in range(0, n, block):
        rows = flat[i:i + block]
        pr = proj[i:i + block]
        pr[...] = rows @ aug
        b = buf[:rows.shape[0]]
        xp.subtract(rows, pr[:, -2:-1], out=b)  # centred two-pass variance: no float32 cancellation
        b *= mask
        sq[i:i + block] = xp.einsum("ij,ij->i", b, b)
    if not bool(xp.isfinite(proj[:, -1]).all()):  # NaN/inf anywhere in a patch reach its total sum
        check_finite(patches)  # names the first bad patch
        bad = int(xp.flatnonzero(~xp.isfinite(proj[:, -1]))[0])
        raise ValueError(f"patch {bad} overflows float32 sums (values too large)")
    mean = proj[:, -2]
    std = _std_from_squares(sq, mean, float(mask.sum()))
    out = ((proj[:, :-2].astype(xp.float64) - mean.astype(xp.float64)[:, None] * basis_sums[None, :])
           / std.astype(xp.float64)[:, None]).astype(dtype)
    out[:, 0] = 0  # a_00 = (dA/pi) sum_disk (f - mean) / std is exactly 0; the product would leave rounding
    # The float32 product sees the dark level before it is removed: its error grows like 3e-7 * mean / std
    # (measured). Rows with mean > 10 std (error > ~3e-6) take the unfused path, which removes it first.
    offset_heavy = xp.abs(mean) > OFFSET_LIMIT * std
    if bool(offset_heavy.any()):
        rows = xp.flatnonzero(offset_heavy)
        out[rows] = contrast_features(standardise_patches(patches[rows], dtype=dtype), dtype=dtype)
    return out


OFFSET_LIMIT = 10.0
"""Patches with disk mean > OFFSET_LIMIT x disk std are encoded by the unfused path (see above)."""


BLOCK_ROWS = 512
"""Rows per block on the CPU (512 x P*P float32 = 2.2 MB for P = 33: stays in L2/L3 between the product
and the variance pass). Measured with one BLAS thread: 64-1024 rows all within 10 %; one unblocked product
over 8192 rows plus a separate pass was 25 % slower."""


def _disk_std(flat, mean, mask):
    """Population std over the disk pixels (centred two-pass), blocked over rows on the CPU."""
    xp = array_module(flat)
    n = flat.shape[0]
    block = BLOCK_ROWS if xp is np else max(n, 1)
    sq = xp.empty(n, dtype=flat.dtype)
    buf = xp.empty((min(block, n), flat.shape[1]), dtype=flat.dtype)
    for i in range(0, n, block):
        rows = flat[i:i + block]
        b = buf[:rows.shape[0]]
        xp.subtract(rows, mean[i:i + block, None], out=b)
        b *= mask
        sq[i:i + block] = xp.einsum("ij,ij->i", b, b)
    return _std_from_squares(sq, mean, float(mask.sum()))


def _std_from_squares(sq, mean, k: float):
    xp = array_module(sq)
    std = xp.sqrt(sq / k)
    flat_patch = std <= 1e-6 * xp.abs(mean)
    if bool(flat_patch.any()):
        raise ValueError(f"patch {int(xp.flatnonzero(flat_patch)[0])} is constant on the disk: "
                         "it cannot be standardised")
    return std


def _host_disk_mask(patch_size: int) -> np.ndarray:
    return disk_grid(patch_size)[2].ravel().astype(np.float64)


def _disk_mask(patch_size: int, xp, dtype):
    like = None if xp is np else xp.empty(0)
    return device_constant(("disk_mask", patch_size), lambda: _host_disk_mask(patch_size), like, dtype)


def _host_augmented(patch_size: int) -> np.ndarray:
    """The six m = 0 basis columns, a disk-mean column and an all-ones column, (P*P, 8) float64."""
    basis = zernike_basis_host(patch_size, CONTRAST_ORDERS[-1])[:, contrast_columns(CONTRAST_ORDERS[-1])]
    mask = _host_disk_mask(patch_size)
    return np.concatenate([basis, (mask / mask.sum())[:, None], np.ones((len(mask), 1))], axis=1)


def _augmented_basis(patch_size: int, xp, dtype):
    """(augmented basis in ``dtype``, float64 sums over the disk of the six basis columns) on ``xp``'s device."""
    like = None if xp is np else xp.empty(0)
    aug = device_constant(("augmented_basis", patch_size), lambda: _host_augmented(patch_size), like, dtype)
    sums = device_constant(("augmented_basis_sums", patch_size),
                           lambda: _host_augmented(patch_size)[:, :len(CONTRAST_ORDERS)].sum(axis=0), like, np.float64)
    return aug, sums
