"""The plane group of a coloured 2-D point set, computed: spglib on the pattern embedded in 3-D, then the
in-plane operations classified into one of the 17 groups without reference to any cell choice.

Method
------
The points (one per atom, coloured by species) sit at z = 0 in a cell with a long c axis normal to the plane;
spglib finds every operation of that 3-D crystal within ``symprec`` (a Cartesian distance). The pattern's own
plane group is made of the operations that keep z: rotations R (2 x 2 part) with translations tau, in
Cartesian form. Pure translations (R = 1, tau not a lattice vector of the input cell) give the primitive
lattice. Then:

* rotation order n: the largest order among the proper rotations (1, 2, 3, 4 or 6);
* reflections: for each improper R with mirror-line direction u, the coset contains a true mirror iff
  ``tau . u`` is a multiple of the lattice's period d along u (otherwise every element is a glide);
* centring: along a mirror direction u, the lattice vectors parallel and perpendicular to u span the whole
  lattice (p) or an index-2 sublattice (c);
* n = 3: p31m if a shortest lattice vector lies on a mirror line, p3m1 if it is normal to one;
* n = 4: p4gm if some reflection coset holds only glides, else p4mm.

Orbits come from spglib's ``equivalent_atoms``; the site symmetry of an orbit is the number of operations
that fix one of its points (modulo the input lattice) and whether a reflection is among them.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from contract.planegroups import reduce_basis

SITE_SYMBOLS = {(1, False): "1", (2, False): "2", (2, True): "m", (4, True): "2mm", (3, False): "3",
                (6, True): "3m", (4, False): "4", (8, True): "4mm", (6, False): "6", (12, True): "6mm"}
"""(stabiliser order, contains a reflection) -> site-symmetry symbol."""
SPECIES_LETTERS = "ABCDEFGH"


@dataclass(frozen=True)
class PatternSymmetry:
    """The computed symmetry of a pattern.

    plane_group : full Hermann-Mauguin symbol.
    primitive_px : (2, 2) rows of a reduced primitive basis (Cartesian units of the input).
    orbits : per orbit: (points per primitive cell, site-symmetry symbol, species).
    """

    plane_group: str
    primitive: np.ndarray
    orbits: tuple[tuple[int, str, int], ...]

    def signature(self) -> str:
        """``group:size(site)species+...`` with orbits sorted and species relabelled A, B, ... canonically
        (the lexicographically smallest relabelling), so that equal structure types with permuted species or
        another origin give one string."""
        species = sorted({s for _, _, s in self.orbits})
        best = None
        for perm in itertools.permutations(range(len(species))):
            relabel = {s: SPECIES_LETTERS[p] for s, p in zip(species, perm)}
            parts = sorted(f"{n}({site}){relabel[s]}" for n, site, s in self.orbits)
            text = "+".join(parts)
            if best is None or text < best:
                best = text
        return f"{self.plane_group}:{best}"


def _spglib_ops(lattice: np.ndarray, frac: np.ndarray, species: np.ndarray, symprec: float):
    import spglib
    import spglib.error

    spglib.error.OLD_ERROR_HANDLING = False  # spglib >= 2.5: raise SpglibError instead of returning None
    a1, a2 = np.asarray(lattice, float)
    c = 3.0 * (np.linalg.norm(a1) + np.linalg.norm(a2)) + 7.31  # no accidental 3-D metric coincidences
    lat3 = np.array([[a1[0], a1[1], 0.0], [a2[0], a2[1], 0.0], [0.0, 0.0, c]])
    pos3 = np.column_stack([np.mod(frac, 1.0), np.zeros(len(frac))])
    try:
        sym = spglib.get_symmetry((lat3, pos3, np.asarray(species, int)), symprec=symprec)
    except spglib.error.SpglibError as err:
        raise RuntimeError(f"spglib found no symmetry: {err}") from None
    if sym is None:  # pragma: no cover - older spglib
        raise RuntimeError("spglib found no symmetry")
    keep = [i for i, r in enumerate(sym["rotations"])
            if r[2, 2] == 1 and r[0, 2] == 0 and r[1, 2] == 0 and r[2, 0] == 0 and r[2, 1] == 0
            and abs(sym["translations"][i][2] - round(sym["translations"][i][2])) < 1e-6]
    rots = np.array([sym["rotations"][i][:2, :2] for i in keep], dtype=float)
    trans = np.array([sym["translations"][i][:2] for i in keep], dtype=float)
    return rots, trans, np.asarray(sym["equivalent_atoms"])


def primitive_basis(lattice: np.ndarray, centrings_frac: np.ndarray) -> np.ndarray:
    """Reduced basis (2, 2) of the lattice spanned by ``lattice`` rows and the fractional pure translations.

    The pure translations form a group modulo the input lattice, so every short primitive vector is one of them
    plus a small integer vector: the candidates are t + (i, j), |i|, |j| <= 2 (linear in their number)."""
    lattice = np.asarray(lattice, float)
    area = abs(np.linalg.det(lattice)) / (1 + len(centrings_frac))
    shifts = np.array([[i, j] for i in range(-2, 3) for j in range(-2, 3)], float)
    trans = np.vstack([np.zeros((1, 2)), np.asarray(centrings_frac, float).reshape(-1, 2)])
    cands = ((trans[:, None, :] + shifts[None]).reshape(-1, 2)) @ lattice
    cands = cands[np.linalg.norm(cands, axis=1) > 1e-9 * np.linalg.norm(lattice[0])]
    cands = cands[np.argsort(np.einsum("ij,ij->i", cands, cands), kind="stable")]
    a = cands[0]
    for b in cands[1:]:
        cross = abs(a[0] * b[1] - a[1] * b[0])
        if cross > 1e-6 * area and abs(cross - area) < 1e-6 * area + 1e-9:
            return reduce_basis(a, b)
    raise RuntimeError("could not find a primitive basis")  # pragma: no cover - the lattice is 2-D


def _lattice_vectors(basis: np.ndarray, span: int = 4) -> np.ndarray:
    n = np.arange(-span, span + 1)
    i, j = np.meshgrid(n, n, indexing="ij")
    v = i.reshape(-1, 1) * basis[0] + j.reshape(-1, 1) * basis[1]
    return v[np.any(np.abs(v) > 0, axis=1)]


def classify_operations(lattice: np.ndarray, rots_frac: np.ndarray, trans_frac: np.ndarray,
                        tol: float = 0.0) -> tuple[str, np.ndarray]:
    """(plane-group symbol, reduced primitive basis) from in-plane operations in the basis of ``lattice`` rows.

    ``tol``: the distance tolerance the operations were found with (spglib's symprec): at a loose tolerance the
    operations are exact for an idealised lattice, so directions in ``lattice`` hold only to about ``tol``."""
    lattice = np.asarray(lattice, float)
    identity = np.all(np.abs(rots_frac - np.eye(2)) < 1e-9, axis=(1, 2))
    t_id = np.mod(trans_frac[identity], 1.0)
    centrings = [t for t in t_id if np.any(np.minimum(t, 1 - t) > 1e-6)]  # not a lattice vector of the input
    prim = primitive_basis(lattice, np.array(centrings).reshape(-1, 2))
    scale = float(np.sqrt(abs(np.linalg.det(prim))))
    tol = max(1e-6 * scale, 3.0 * tol)
    lat_t = lattice.T  # columns a1, a2: r = A^T f
    inv = np.linalg.inv(lat_t)
    cart = [(lat_t @ w @ inv, lat_t @ t) for w, t in zip(rots_frac, trans_frac)]
    proper = [r for r, _ in cart if np.linalg.det(r) > 0]
    angles = [abs(np.arctan2(r[1, 0], r[0, 0])) for r in proper]
    nonzero = [a for a in angles if a > 1e-6]
    n = int(round(2 * np.pi / min(nonzero))) if nonzero else 1
    reflections = [(r, t) for r, t in cart if np.linalg.det(r) < 0]
    if n not in (1, 2, 3, 4, 6):
        raise RuntimeError(f"rotation of order {n}: not a crystallographic plane group")
    if not reflections:
        return {1: "p1", 2: "p2", 3: "p3", 4: "p4", 6: "p6"}[n], prim
    vecs = _lattice_vectors(prim)
    cosets = {}
    for r, t in reflections:
        u = _mirror_direction(r)
        key = tuple(np.round(u, 6))  # _mirror_direction fixes the sign
        has_mirror = _has_mirror(u, t, vecs, scale)
        cosets[key] = cosets.get(key, False) or has_mirror
    mirror_dirs = [np.array(k) for k in cosets]
    if n == 1 or n == 2:
        centred = _is_centred(mirror_dirs[0], vecs, prim, tol)
        if n == 1:
            return ("cm" if centred else ("pm" if all(cosets.values()) else "pg")), prim
        if centred:
            return "c2mm", prim
        n_mirror = sum(cosets.values())
        return {2: "p2mm", 1: "p2mg", 0: "p2gg"}[n_mirror], prim
    if n == 3:
        shortest = prim[0] / np.linalg.norm(prim[0])
        on_line = any(abs(abs(float(shortest @ u)) - 1.0) < max(1e-3, (tol / scale) ** 2) for u in mirror_dirs)
        return ("p31m" if on_line else "p3m1"), prim
    if n == 4:
        return ("p4mm" if all(cosets.values()) else "p4gm"), prim
    return "p6mm", prim


def _mirror_direction(r: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eig(r)
    u = np.real(v[:, int(np.argmin(np.abs(w - 1.0)))])
    u = u / np.linalg.norm(u)
    return u if (u[0] > 1e-9 or (abs(u[0]) <= 1e-9 and u[1] > 0)) else -u


def _has_mirror(u: np.ndarray, t: np.ndarray, vecs: np.ndarray, scale: float) -> bool:
    """True if tau . u is a multiple of the lattice period along u (a lattice translation removes the glide)."""
    proj = vecs @ u
    steps = np.abs(proj[np.abs(proj) > 1e-6 * scale])
    d = steps.min()
    g = float(t @ u) / d
    return abs(g - round(g)) < 0.1


def _is_centred(u: np.ndarray, vecs: np.ndarray, prim: np.ndarray, tol: float) -> bool:
    perp = np.array([-u[1], u[0]])
    par = vecs[np.abs(vecs @ perp) < tol]
    nor = vecs[np.abs(vecs @ u) < tol]
    if len(par) == 0 or len(nor) == 0:
        raise RuntimeError("a mirror direction that is not a lattice direction")
    p = np.min(np.linalg.norm(par, axis=1))
    q = np.min(np.linalg.norm(nor, axis=1))
    index = p * q / abs(np.linalg.det(prim))
    return round(index) == 2


def to_primitive(lattice: np.ndarray, frac: np.ndarray, species: np.ndarray, symprec: float):
    """The pattern in its primitive cell: (reduced basis (2, 2), fractional positions, species), one atom per
    translation class. Symmetry operations that do not map the input cell's lattice onto itself (a 60-degree
    rotation of a rectangular a x sqrt(3) a cell) are integer matrices only in a primitive basis."""
    lattice = np.asarray(lattice, float)
    rots, trans, _ = _spglib_ops(lattice, frac, species, symprec)
    identity = np.all(np.abs(rots - np.eye(2)) < 1e-9, axis=(1, 2))
    centrings = [t for t in np.mod(trans[identity], 1.0) if np.any(np.minimum(t, 1 - t) > 1e-6)]
    prim = primitive_basis(lattice, np.array(centrings).reshape(-1, 2))
    cart = np.asarray(frac, float) @ lattice
    pf = np.mod(np.linalg.solve(prim.T, cart.T).T, 1.0)
    keep: list[int] = []
    for i in range(len(pf)):
        dup = False
        for j in keep:
            d = pf[i] - pf[j]
            d -= np.round(d)
            if species[i] == species[j] and np.linalg.norm(d @ prim) < 2 * symprec + 1e-9:
                dup = True
                break
        if not dup:
            keep.append(i)
    return prim, pf[keep], np.asarray(species)[keep]


def pattern_symmetry(lattice: np.ndarray, frac: np.ndarray, species: np.ndarray, symprec: float) -> PatternSymmetry:
    """Plane group, primitive basis and orbits of atoms at fractional ``frac`` (N, 2) of the cell with rows
    ``lattice`` (2, 2) (Cartesian), coloured by ``species`` (N,) int, at tolerance ``symprec`` (Cartesian).
    The search runs in the pattern's primitive cell (``to_primitive``), so no operation is missed because the
    input cell is a supercell of another shape."""
    species = np.asarray(species, int)
    prim_lat, frac, species = to_primitive(lattice, np.asarray(frac, float), species, symprec)
    rots, trans, equivalent = _spglib_ops(prim_lat, frac, species, symprec)
    group, prim = classify_operations(prim_lat, rots, trans, symprec)
    per_cell = abs(np.linalg.det(prim_lat)) / abs(np.linalg.det(prim))  # 1 unless the tolerance merged more
    orbits = []
    for rep in np.unique(equivalent):
        members = np.flatnonzero(equivalent == rep)
        stab, refl = 0, False
        for w, t in zip(rots, trans):
            p = w @ frac[rep] + t
            d = p - frac[rep]
            d = (d - np.round(d)) @ prim_lat
            if np.linalg.norm(d) < max(symprec, 1e-9) * 2:
                stab += 1
                refl |= np.linalg.det(w) < 0
        site = SITE_SYMBOLS.get((stab, bool(refl)), f"{stab}{'m' if refl else ''}")
        orbits.append((max(1, int(round(len(members) / per_cell))), site, int(species[rep])))
    return PatternSymmetry(group, prim, tuple(sorted(orbits)))
