"""Synthetic 1H-MX2 patches (Gaussian columns on a honeycomb) for tests, benchmarks and the normalisation study.

Not physics: column intensity is ``Z**exponent`` summed over the atoms in the column, blurred by a Gaussian
probe. It only has to give realistic geometry (centre + 3 nearest neighbours at 2/3 of the disk radius, the
patch spanning sqrt(3) a as in the store) and contrast ratios of the right order.
"""
from __future__ import annotations

import numpy as np

NN_DISTANCE = 2.0 / 3.0
"""Nearest-neighbour (M-X) distance in unit-disk coordinates: the patch spans sqrt(3) a = 3 M-X distances."""


def honeycomb_sites(rotation_rad: float = 0.0, radius: float = 1.7) -> tuple[np.ndarray, np.ndarray]:
    """Sites of a honeycomb around a centre site at the origin, in unit-disk coordinates (x right, y down).

    Returns ``(xy (K, 2), same_sublattice (K,) bool)``; row 0 is the centre, rows 1-3 its nearest neighbours.
    """
    d = NN_DISTANCE
    a1 = np.array([np.sqrt(3.0) * d, 0.0])
    a2 = np.array([np.sqrt(3.0) * d / 2.0, 1.5 * d])
    basis_b = np.array([0.0, d])  # the other sublattice, one M-X bond away
    pts, same = [], []
    for i in range(-4, 5):
        for j in range(-4, 5):
            r = i * a1 + j * a2
            pts += [r, r + basis_b]
            same += [True, False]
    pts, same = np.array(pts), np.array(same)
    dist = np.hypot(pts[:, 0], pts[:, 1])
    order = np.lexsort((np.arctan2(pts[:, 1], pts[:, 0]), np.round(dist, 9)))
    pts, same, dist = pts[order], same[order], dist[order]
    keep = dist <= radius
    pts, same = pts[keep], same[keep]
    c, s = np.cos(rotation_rad), np.sin(rotation_rad)
    return pts @ np.array([[c, s], [-s, c]]), same


def render_patch(patch_size: int, centre: float, neighbours, host_same: float, host_other: float,
                 rotation_rad: float = 0.0, sigma: float = 0.18, background: float = 0.0,
                 offset_px=(0.0, 0.0)) -> np.ndarray:
    """One noiseless ``(P, P)`` float64 patch: Gaussian columns with the given column intensities.

    ``neighbours``: the 3 nearest-neighbour column intensities; ``host_same``/``host_other``: every other
    column of the centre's / the other sublattice. ``sigma`` in unit-disk coordinates.
    """
    xy, same = honeycomb_sites(rotation_rad)
    amp = np.where(same, host_same, host_other).astype(np.float64)
    amp[0] = centre
    amp[1:4] = neighbours
    g = np.linspace(-1.0, 1.0, patch_size)
    step = 2.0 / (patch_size - 1)
    y, x = np.meshgrid(g - offset_px[0] * step, g - offset_px[1] * step, indexing="ij")
    out = np.full((patch_size, patch_size), background, dtype=np.float64)
    for (px, py), a in zip(xy, amp):
        out += a * np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2.0 * sigma ** 2))
    return out


def column_intensity(z_numbers, exponent: float = 1.7) -> float:
    """Incoherent Z-contrast column intensity: sum of Z**exponent over the atoms in the column (0 if empty)."""
    return float(sum(float(z) ** exponent for z in z_numbers))


def mx2_environment_patches(patch_size: int, z_metal: int, z_chalcogen: int, z_dopant: int, rng,
                            n_per_class: int, exponent: float = 1.7, dose: float | None = None,
                            gain: float = 1.0, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random-environment patches of the 5 classes for one synthetic "image" (one context case).

    Class ids follow the store: 0 X2, 1 VacX, 2 VacX2, 3 M, 4 D. Neighbours are drawn at random (metal
    neighbours M or D; chalcogen neighbours X2, VacX or VacX2), the lattice is rotated at random, and the
    centre is shifted by up to half a pixel. ``dose`` (counts per unit intensity) adds Poisson noise; ``gain``
    and ``offset`` mimic a detector's unknown scale and dark level.

    Returns ``(patches (5 n, P, P) float32, labels (5 n,) uint8, sublattice (5 n,) uint8 0 metal 1 chalcogen)``.
    """
    col = {"M": column_intensity([z_metal], exponent), "D": column_intensity([z_dopant], exponent),
           "X2": column_intensity([z_chalcogen] * 2, exponent), "VacX": column_intensity([z_chalcogen], exponent),
           "VacX2": 0.0}
    centres = ["X2", "VacX", "VacX2", "M", "D"]
    patches, labels, subl = [], [], []
    for label, name in enumerate(centres):
        metal_site = name in ("M", "D")
        for _ in range(n_per_class):
            if metal_site:
                nb = rng.choice(["X2", "VacX", "VacX2"], size=3, p=[0.6, 0.25, 0.15])
                same, other = col["M"], col["X2"]
            else:
                nb = rng.choice(["M", "D"], size=3, p=[0.6, 0.4])
                same, other = col["X2"], col["M"]
            p = render_patch(patch_size, col[name], [col[k] for k in nb], same, other,
                             rotation_rad=rng.uniform(0, 2 * np.pi), background=0.05 * col["M"],
                             offset_px=rng.uniform(-0.5, 0.5, size=2))
            if dose is not None:
                p = rng.poisson(p * dose / col["M"]).astype(np.float64) * col["M"] / dose
            patches.append(gain * p + offset)
            labels.append(label)
            subl.append(0 if metal_site else 1)
    return (np.asarray(patches, dtype=np.float32), np.asarray(labels, dtype=np.uint8),
            np.asarray(subl, dtype=np.uint8))
