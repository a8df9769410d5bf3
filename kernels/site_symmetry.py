"""Site-symmetry flags (paper section 3): which sublattice has the brighter *typical* column.

The flag says, per context, which of the two sublattices is the brighter one, judged by each sublattice's intact
columns: a metal site holding the host metal (class M) and a chalcogen site holding both chalcogen atoms (class
X2). It is a property of the material, beam energy and detector, not of how many defects an image or a store
happens to hold. (A mean over all patches is not: a class-balanced store has two thirds of its chalcogen-site
patches vacancies, so in MAADF, where an Se2 column outshines W, the store's mean called the metal brighter while
a micrograph, mostly intact columns, called the chalcogen brighter. Stores written before 2026-12-07 used that
mean: docs/store-and-contract.md, and tests/test_site_symmetry_fields.py.)

The same rule is measured two ways, because only a simulation knows each column's class:

* a store (``flags_from_sums`` via ``features.encode``): the mean central intensity of the noiseless (clean)
  patches whose central column is the intact class of its sublattice (``INTACT_CLASS``), so that the random dose
  of each noisy patch does not enter;
* a micrograph (``site_symmetry``): the median central intensity of each sublattice's columns. Intact columns are
  the majority on both sublattices of any frame worth classifying, so the median is an intact column's intensity
  (a robust estimate of the mode), whatever the defects do to the mean.

Both estimate the same quantity; the flag is ``[1, 0]`` on the brighter sublattice and ``[0, 1]`` on the other.
"""
from __future__ import annotations

import numpy as np

from contract.classes import CHALCOGEN, CLASS_IDS, METAL

INTACT_CLASS = {METAL: CLASS_IDS["M"], CHALCOGEN: CLASS_IDS["X2"]}
"""Class of the intact column of each sublattice (the 'typical column' that the flag compares)."""

RULE = ("per case, the sublattice whose intact columns (metal sites: class M; chalcogen sites: class X2) have the "
        "brighter mean central intensity (3x3 centre pixels of the store's noiseless clean patches) gets [1, 0], the "
        "other [0, 1]; "
        "a micrograph compares the median central intensity of each sublattice's columns")


def central_intensity(patches, radius_px: int = 1) -> np.ndarray:
    """Mean of the ``(2 r + 1)^2`` centre pixels of each patch: ``(N, P, P) -> (N,)`` float64 (host).

    The atom sits on the centre pixel; a 3 x 3 block averages out single-pixel noise without reaching the
    neighbours (2/3 of the half-width away).
    """
    p = patches.shape[-1]
    c = p // 2
    block = np.asarray(patches[:, c - radius_px:c + radius_px + 1, c - radius_px:c + radius_px + 1],
                       dtype=np.float64)
    return block.mean(axis=(1, 2))


def typical_intensities(central_intensities, sublattice_ids) -> np.ndarray:
    """Median central intensity of each sublattice's columns in one micrograph: ``(N,), (N,) -> (2,)`` float64,
    index 0 metal, 1 chalcogen (or the geometric sublattices 0/1 before the metal one is known); NaN for a
    sublattice without columns."""
    i = np.asarray(central_intensities, dtype=np.float64)
    s = np.asarray(sublattice_ids)
    return np.array([np.median(i[s == k]) if (s == k).any() else np.nan for k in (0, 1)])


def site_symmetry(central_intensities, sublattice_ids, group_ids=None) -> np.ndarray:
    """Site-symmetry one-hot of micrograph columns: ``(N,), (N,) -> (N, 2)`` float32.

    Within each group, the sublattice whose columns have the brighter *median* central intensity (its typical,
    intact column; module docstring) gets ``[1, 0]`` and the other ``[0, 1]``; a tie goes to the metal
    sublattice. A group holding only one sublattice cannot be compared and raises ``ValueError``.

    Parameters
    ----------
    central_intensities : (N,) float, e.g. ``central_intensity(patches)`` in detector counts.
    sublattice_ids : (N,) int, 0 metal site, 1 chalcogen site.
    group_ids : (N,) int or None (one group), e.g. the micrograph id.
    """
    i = np.asarray(central_intensities, dtype=np.float64)
    s = np.asarray(sublattice_ids)
    g = np.zeros(len(i), dtype=np.int64) if group_ids is None else np.asarray(group_ids)
    if i.ndim != 1 or s.shape != i.shape or g.shape != i.shape:
        raise ValueError(f"central_intensities, sublattice_ids and group_ids must be 1-D of one length, got "
                         f"{i.shape}, {s.shape}, {g.shape}")
    if not np.isin(s, (METAL, CHALCOGEN)).all():
        raise ValueError(f"sublattice_ids must be 0 (metal) or 1 (chalcogen), got values {np.unique(s)}")
    if not np.isfinite(i).all():
        raise ValueError(f"central_intensities[{int(np.flatnonzero(~np.isfinite(i))[0])}] is NaN or infinite")
    groups, inverse = np.unique(g, return_inverse=True)
    typical = np.stack([typical_intensities(i[inverse == k], s[inverse == k]) for k in range(len(groups))])
    return flags_from_typical(typical, groups)[inverse, s]


def flags_from_sums(sums, counts, groups=None) -> np.ndarray:
    """Per-group flag table ``(G, 2 sublattices, 2)`` float32 from per-(group, sublattice) sums and counts of the
    typical columns' central intensities (a store: its intact columns, ``INTACT_CLASS``).

    ``table[g, sublattice]`` is ``[1, 0]`` if that sublattice is the brighter one of group g, else ``[0, 1]``.
    Split out so that a store can be reduced shard by shard and flagged afterwards.
    """
    sums, counts = np.asarray(sums, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return flags_from_typical(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan), groups)


def flags_from_typical(typical, groups=None) -> np.ndarray:
    """Per-group flag table ``(G, 2, 2)`` float32 from the typical column intensity ``(G, 2)`` of each group's
    sublattices (NaN: no such column; ``ValueError`` naming the group)."""
    mean = np.asarray(typical, dtype=np.float64)
    missing = np.isnan(mean).any(axis=1)
    if missing.any():
        g = int(np.flatnonzero(missing)[0])
        name = g if groups is None else groups[g]
        raise ValueError(f"group {name} has patches of only one sublattice: site symmetry needs both")
    metal_brighter = mean[:, METAL] >= mean[:, CHALCOGEN]
    table = np.zeros((len(mean), 2, 2), dtype=np.float32)
    table[metal_brighter, METAL, 0] = 1
    table[metal_brighter, CHALCOGEN, 1] = 1
    table[~metal_brighter, METAL, 1] = 1
    table[~metal_brighter, CHALCOGEN, 0] = 1
    return table


def brighter_sublattice(table_row) -> str:
    """``"metal"`` or ``"chalcogen"``: the brighter sublattice of one case's ``(2, 2)`` flag table row."""
    return "metal" if float(np.asarray(table_row)[METAL, 0]) == 1 else "chalcogen"
