"""Site-symmetry flags (paper section 3): which sublattice has the brighter central columns.

Shared by simulation and micrographs: the caller supplies each patch's central intensity and sublattice
(from the environment table in simulation, from the lattice in a micrograph) and, optionally, a group id
(the context case in simulation, the image for a micrograph).
"""
from __future__ import annotations

import numpy as np

METAL, CHALCOGEN = 0, 1
SUBLATTICE_IDS = {"metal": METAL, "chalcogen": CHALCOGEN}


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


def site_symmetry(central_intensities, sublattice_ids, group_ids=None) -> np.ndarray:
    """Site-symmetry one-hot: ``(N,), (N,) -> (N, 2)`` float32.

    Within each group, the sublattice whose patches have the brighter mean central intensity gets
    ``[1, 0]`` and the other ``[0, 1]``; a tie goes to the metal sublattice. A group holding only one
    sublattice cannot be compared and raises ``ValueError``.

    Parameters
    ----------
    central_intensities : (N,) float, e.g. ``central_intensity(patches)`` in detector counts.
    sublattice_ids : (N,) int, 0 metal site, 1 chalcogen site.
    group_ids : (N,) int or None (one group), e.g. the context case or the micrograph id.
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
    sums = np.zeros((len(groups), 2))
    counts = np.zeros((len(groups), 2))
    np.add.at(sums, (inverse, s), i)
    np.add.at(counts, (inverse, s), 1)
    return flags_from_sums(sums, counts, groups)[inverse, s]


def flags_from_sums(sums, counts, groups=None) -> np.ndarray:
    """Per-group flag table ``(G, 2 sublattices, 2)`` float32 from per-(group, sublattice) sums and counts.

    ``table[g, sublattice]`` is ``[1, 0]`` if that sublattice is the brighter one of group g, else ``[0, 1]``.
    Split out so that a store can be reduced shard by shard and flagged afterwards.
    """
    sums, counts = np.asarray(sums, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    missing = (counts == 0).any(axis=1)
    if missing.any():
        g = int(np.flatnonzero(missing)[0])
        name = g if groups is None else groups[g]
        raise ValueError(f"group {name} has patches of only one sublattice: site symmetry needs both")
    mean = sums / counts
    metal_brighter = mean[:, METAL] >= mean[:, CHALCOGEN]
    table = np.zeros((len(mean), 2, 2), dtype=np.float32)
    table[metal_brighter, METAL, 0] = 1
    table[metal_brighter, CHALCOGEN, 1] = 1
    table[~metal_brighter, METAL, 1] = 1
    table[~metal_brighter, CHALCOGEN, 0] = 1
    return table
