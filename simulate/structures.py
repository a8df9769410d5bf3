"""Atomic models of the 34 local environments: an orthogonal 1H-MX2 supercell (ase) with the environment's
central column at the cell centre, its three nearest neighbour columns set as the environment says.

Conventions: x, y in the layer plane, z along c; a chalcogen column holds two atoms (top and bottom of the
layer); a single vacancy (VacX) removes the top one, a double vacancy (VacX2) both. Neighbours are placed
counter-clockwise (increasing atan2(dy, dx)) starting from the one with the smallest angle in [-π, π).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.build import mx2

from contract.context import is_undoped
from contract.environments import ENVIRONMENTS, Environment, environments_for_dopant

if TYPE_CHECKING:
    from .config import DatasetConfig

_XY_DECIMALS = 3  # columns are grouped by x, y rounded to 1 mÅ


def host_supercell(metal: str, chalcogen: str, lattice_constant_angstrom: float, thickness_angstrom: float,
                   repeats: tuple[int, int], vacuum_angstrom: float) -> Atoms:
    """Pristine orthogonal 1H-MX2 supercell of ``repeats`` a x √3·a cells (ase's 2H builder is one 1H layer)."""
    import abtem  # orthogonalize_cell gives the a x √3a cell without strain

    layer = mx2(f"{metal}{chalcogen}2", kind="2H", a=lattice_constant_angstrom, thickness=thickness_angstrom,
                vacuum=vacuum_angstrom)
    cell = abtem.orthogonalize_cell(layer)
    return cell * (repeats[0], repeats[1], 1)


def _columns(atoms: Atoms) -> dict[tuple[float, float], list[int]]:
    cols: dict[tuple[float, float], list[int]] = {}
    for i, (x, y) in enumerate(np.round(atoms.positions[:, :2], _XY_DECIMALS)):
        cols.setdefault((float(x), float(y)), []).append(i)
    return cols


def build_environment(host: dict, dopant: str, environment: Environment, repeats: tuple[int, int],
                      vacuum_angstrom: float) -> Atoms:
    """Supercell with ``environment`` at its centre (x, y) = cell diagonal / 2.

    ``host`` holds ``metal``, ``chalcogen``, ``lattice_constant_angstrom``, ``thickness_angstrom``. The returned
    atoms carry ``info`` with ``environment_id``, ``label``, ``centre_xy_angstrom``, ``host``-derived formula and
    ``dopant``.
    """
    a = host["lattice_constant_angstrom"]
    atoms = host_supercell(host["metal"], host["chalcogen"], a, host["thickness_angstrom"], repeats, vacuum_angstrom)
    metal = host["metal"]
    symbols = np.array(atoms.get_chemical_symbols())
    centre_xy = np.diag(atoms.cell)[:2] / 2
    on_metal_site = environment.sublattice == "metal"

    # Move the column of the right sublattice nearest to the cell centre onto the centre exactly.
    site_mask = (symbols == metal) if on_metal_site else (symbols != metal)
    candidates = atoms.positions[site_mask, :2]
    nearest = candidates[np.argmin(np.linalg.norm(candidates - centre_xy, axis=1))]
    atoms.translate(np.r_[centre_xy - nearest, 0.0])
    atoms.wrap()

    cols = _columns(atoms)
    key_of = {k: np.array(k) for k in cols}
    centre_key = min(cols, key=lambda k: np.linalg.norm(key_of[k] - centre_xy))
    # Nearest neighbours of the other sublattice sit at a/√3 from the centre.
    neighbour_keys = [k for k in cols
                      if abs(np.linalg.norm(key_of[k] - centre_xy) - a / 3**0.5) < 1e-2 * a]
    if len(neighbour_keys) != 3:
        raise RuntimeError(f"expected 3 nearest-neighbour columns, found {len(neighbour_keys)}")
    neighbour_keys.sort(key=lambda k: np.arctan2(*(key_of[k] - centre_xy)[::-1]))

    to_delete: list[int] = []

    def apply(column: list[int], role: str) -> None:
        if role == "D":
            if is_undoped(dopant):
                raise ValueError(f"environment {environment.id} has a dopant site: an undoped sample (dopant "
                                 f"{dopant!r}) has none of these")
            for i in column:
                atoms[i].symbol = dopant
        elif role == "VacX":
            to_delete.append(max(column, key=lambda i: atoms.positions[i, 2]))  # the top chalcogen
        elif role == "VacX2":
            to_delete.extend(column)
        # "M" and "X2" leave the column pristine

    apply(cols[centre_key], environment.centre)
    for key, role in zip(neighbour_keys, environment.neighbours):
        apply(cols[key], role)
    del atoms[sorted(to_delete)]
    atoms.info.update(
        environment_id=environment.id,
        label=environment.label,
        class_name=environment.class_name,
        centre=environment.centre,
        neighbours=",".join(environment.neighbours),
        dopant=dopant,
        centre_xy_angstrom=[float(v) for v in centre_xy],
        neighbour_xy_angstrom=[[float(v) for v in key_of[k]] for k in neighbour_keys],
    )
    return atoms


def write_cif(atoms: Atoms, path: str | Path, *, host_name: str) -> Path:
    """Write ``atoms`` as CIF with a comment header holding the environment id and label (CIF comments start
    with #, so ase and other readers ignore them)."""
    from ase.io import write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path, atoms, format="cif")
    info = atoms.info
    header = (
        f"# host: {host_name}\n# dopant: {info['dopant']}\n# environment_id: {info['environment_id']}\n"
        f"# label: {info['label']} ({info['class_name']})\n# centre: {info['centre']}\n"
        f"# neighbours: {info['neighbours']}\n"
        f"# centre_xy_angstrom: {info['centre_xy_angstrom'][0]:.4f} {info['centre_xy_angstrom'][1]:.4f}\n"
    )
    path.write_text(header + path.read_text())
    return path


def read_cif_header(path: str | Path) -> dict[str, str]:
    """The ``# key: value`` header that ``write_cif`` puts in front of the CIF."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if not line.startswith("# "):
            break
        key, _, value = line[2:].partition(": ")
        out[key] = value
    return out


def write_environment_cifs(resolved_config: DatasetConfig, out_dir: str | Path) -> list[Path]:
    """One CIF per (combo, environment) of a resolved config, under ``out_dir/<host>+<dopant>/env<id>.cif``."""
    ms = resolved_config.multislice
    hosts = resolved_config.materials["hosts"]
    paths = []
    for host_name, dopant in resolved_config.combos:
        for env_id in environments_for_dopant(dopant, resolved_config.environments):  # undoped: no D sites
            atoms = build_environment(hosts[host_name], dopant, ENVIRONMENTS[env_id],
                                      tuple(ms.supercell_repeats), ms.vacuum_angstrom)
            path = Path(out_dir) / f"{host_name}+{dopant}" / f"env{env_id:02d}_{ENVIRONMENTS[env_id].class_name}.cif"
            paths.append(write_cif(atoms, path, host_name=host_name))
    return paths
