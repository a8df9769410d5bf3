"""Supercells for the 4D-STEM kind (graphene, zincblende [001]) with vacancies and substitutional dopants, and
the per-probe-position truth: distance to the nearest defect, distance and direction to the nearest column.

Pure functions (ase in, arrays out). In-plane coordinates are (x, y) [Å] in the supercell, which is periodic
and orthogonal; the beam runs along +z and enters at the smallest z.

* ``graphene``: ``ase.build.graphene`` made orthogonal (a x √3·a, 4 atoms) and repeated ``repeats`` = [nx, ny]
  times; fold cell a x √3·a.
* ``zincblende``: the cubic cell of ``elements`` = [cation, anion] (e.g. GaAs) seen along [001], repeated
  ``repeats`` = [nx, ny, nz]; fold cell a x a (the rectangle that also repeats the atoms' depths).

A defect is placed at the column nearest a fractional in-plane position ``at`` = [fx, fy] of the supercell
(among the columns holding ``site_element`` when given), on the atom of that column nearest the entrance
surface (``depth: entrance``) or the exit (``depth: exit``): a vacancy removes it, a dopant replaces its element.
"""
from __future__ import annotations

import numpy as np

from kernels.geometry import periodic_delta

STRUCTURES = ("graphene", "zincblende")
COLUMN_TOLERANCE_ANGSTROM = 0.05  # atoms closer than this in (x, y) form one column


def pristine_supercell(spec: dict):
    """(ase.Atoms, fold cell (fx, fy) [Å]) of a scan spec, without defects, ``vacuum_angstrom`` above and below."""
    import ase.build
    from abtem import orthogonalize_cell

    a = float(spec["lattice_constant_angstrom"])
    vacuum = float(spec.get("vacuum_angstrom", 2.0))
    if spec["structure"] == "graphene":
        cell = orthogonalize_cell(ase.build.graphene(a=a, vacuum=vacuum))
        nx, ny = spec["repeats"]
        atoms = cell * (int(nx), int(ny), 1)
        fold = (float(cell.cell[0, 0]), float(cell.cell[1, 1]))
    elif spec["structure"] == "zincblende":
        cation, anion = spec["elements"]
        cell = ase.build.bulk(f"{cation}{anion}", "zincblende", a=a, cubic=True)
        nx, ny, nz = spec["repeats"]
        atoms = cell * (int(nx), int(ny), int(nz))
        atoms.center(vacuum=vacuum, axis=2)
        fold = (a, a)
    else:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {spec['structure']!r}")
    atoms.pbc = True
    atoms.wrap()
    return atoms, fold


def columns_of(atoms) -> tuple[np.ndarray, np.ndarray]:
    """(C, 2) in-plane column positions [Å] and (n_atoms,) column index of every atom."""
    xy = atoms.positions[:, :2]
    key = np.round(xy / COLUMN_TOLERANCE_ANGSTROM).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    centres = np.stack([xy[inverse == c].mean(axis=0) for c in range(len(first))])
    return centres, inverse.reshape(-1)


def apply_defects(atoms, spec: dict):
    """A copy of ``atoms`` with the spec's ``vacancies`` and ``dopants``; returns (atoms, defects) where
    ``defects`` is a list of {kind, element, was, x_angstrom, y_angstrom, z_angstrom}."""
    atoms = atoms.copy()
    extent = (float(atoms.cell[0, 0]), float(atoms.cell[1, 1]))
    centres, column = columns_of(atoms)
    defects, remove = [], []
    entries = [("vacancy", v) for v in spec.get("vacancies", [])] + [("dopant", d) for d in spec.get("dopants", [])]
    for kind, entry in entries:
        target = np.asarray(entry["at"], dtype=np.float64) * extent
        distance = np.hypot(*periodic_delta(target, centres, extent).T)
        if entry.get("site_element"):  # only columns holding that element (In on a Ga site, not an As one)
            holds = np.array([entry["site_element"] in atoms.symbols[np.flatnonzero(column == c)]
                              for c in range(len(centres))])
            if not holds.any():
                raise ValueError(f"no column holds {entry['site_element']!r}")
            distance[~holds] = np.inf
        c = int(np.argmin(distance))
        members = np.flatnonzero(column == c)
        if entry.get("site_element"):
            members = members[atoms.symbols[members] == entry["site_element"]]
        z = atoms.positions[members, 2]
        i = int(members[np.argmin(z) if entry.get("depth", "entrance") == "entrance" else np.argmax(z)])
        if i in remove or any(d["atom"] == i for d in defects):
            raise ValueError(f"two defects on one atom (column at {centres[c].round(2).tolist()} Å)")
        record = {"kind": kind, "was": atoms[i].symbol, "element": None if kind == "vacancy" else entry["element"],
                  "x_angstrom": float(atoms.positions[i, 0]), "y_angstrom": float(atoms.positions[i, 1]),
                  "z_angstrom": float(atoms.positions[i, 2]), "atom": i}
        if kind == "vacancy":
            remove.append(i)
        else:
            atoms[i].symbol = entry["element"]
        defects.append(record)
    if remove:
        del atoms[remove]
    for d in defects:
        del d["atom"]
    return atoms, defects


def build_scan_structure(spec: dict):
    """(atoms with defects, defects, fold cell [Å]) for one scan spec."""
    atoms, fold = pristine_supercell(spec)
    atoms, defects = apply_defects(atoms, spec)
    return atoms, defects, fold


def position_truth(positions: np.ndarray, atoms, defects: list[dict]) -> dict[str, np.ndarray]:
    """Per probe position (N, 2) (x, y) [Å]: ``defect_distance_angstrom`` (inf without defects),
    ``nearest_atom_distance_angstrom`` and ``nearest_atom_direction_rad`` (atan2(dy, dx) from the probe to the
    nearest column of ``atoms``), all with periodic minimum images."""
    extent = (float(atoms.cell[0, 0]), float(atoms.cell[1, 1]))
    p = np.asarray(positions, dtype=np.float64)
    centres, _ = columns_of(atoms)
    best_d = np.full(len(p), np.inf)
    best_v = np.zeros((len(p), 2))
    for c in centres:  # C small (hundreds): a loop keeps memory at O(N)
        v = periodic_delta(p, c[None, :], extent)
        d = np.hypot(v[:, 0], v[:, 1])
        closer = d < best_d
        best_d[closer], best_v[closer] = d[closer], v[closer]
    defect_d = np.full(len(p), np.inf)
    for d in defects:
        v = periodic_delta(p, np.array([[d["x_angstrom"], d["y_angstrom"]]]), extent)
        defect_d = np.minimum(defect_d, np.hypot(v[:, 0], v[:, 1]))
    return {"defect_distance_angstrom": defect_d.astype(np.float32),
            "nearest_atom_distance_angstrom": best_d.astype(np.float32),
            "nearest_atom_direction_rad": np.arctan2(best_v[:, 1], best_v[:, 0]).astype(np.float32)}
