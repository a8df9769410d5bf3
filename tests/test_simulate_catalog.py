"""Materials catalog, the 34 local environments and their structures (CIF round trip)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from ase.io import read

from simulate import config
from contract.environments import CLASS_NAMES, ENVIRONMENTS, canonical_rotation
from simulate.structures import build_environment, read_cif_header, write_cif

PAPER = "configs/dataset/paper.yaml"


@pytest.fixture(scope="module")
def paper(repo_root):
    return config.load(repo_root / PAPER)


def test_paper_catalog_gives_96_combos(paper):
    assert len(paper.combos) == 96
    assert len(paper.materials["hosts"]) == 13 and len(paper.materials["dopants"]) == 10
    for name in ("WSe2", "MoS2", "WTe2", "NbSe2", "TaSe2"):
        assert name in paper.materials["hosts"]
    for dopant in ("Ti", "V", "Cr", "Mn", "Co"):
        assert dopant in paper.materials["dopants"]
    # no combo keeps a dopant in the host metal's row; the excluded example of the paper is absent
    assert ["MoS2", "Nb"] not in paper.combos
    for host, dopant in paper.combos:
        assert not config.is_excluded(paper.materials["hosts"][host]["metal"], dopant)


def test_paper_has_576_cases(paper):
    from simulate.plan import make_plan

    plan = make_plan(paper)
    assert len(plan.cases) == 576
    assert plan.n_rows == 96 * 34 * 3 * 2 * 2800  # ~55 M patches


def test_host_added_in_yaml_only(repo_root, tmp_path):
    raw = config.load_yaml(repo_root / PAPER)
    raw["materials"]["hosts"]["HfS2"] = {"metal": "Hf", "chalcogen": "S", "lattice_constant_angstrom": 3.6,
                                         "thickness_angstrom": 2.9, "source": "test"}
    cfg = config.resolve(raw)
    assert len(cfg.combos) == 96 + 9  # Hf is row 6: Re is excluded
    assert ["HfS2", "Re"] not in cfg.combos


def test_34_environments_with_labels():
    assert len(ENVIRONMENTS) == 34
    counts = np.bincount([e.label for e in ENVIRONMENTS], minlength=5)
    assert counts.tolist() == [4, 4, 4, 11, 11]
    assert [e.id for e in ENVIRONMENTS] == list(range(34))
    for env in ENVIRONMENTS:
        assert env.class_name == CLASS_NAMES[env.label]
        assert env.sublattice == ("metal" if env.label >= 3 else "chalcogen")


def test_no_two_environments_equal_up_to_rotation():
    seen = set()
    for env in ENVIRONMENTS:
        order = ("M", "D") if env.sublattice == "chalcogen" else ("X2", "VacX", "VacX2")
        orbit = {env.neighbours[i:] + env.neighbours[:i] for i in range(3)}
        key = (env.centre, canonical_rotation(env.neighbours, order))
        assert key not in seen
        seen.add(key)
        assert all((env.centre, r) not in seen - {key} for r in orbit)
    # and every possible neighbour assignment is covered by exactly one environment
    for centre in CLASS_NAMES:
        symbols = ("M", "D") if centre in ("X2", "VacX", "VacX2") else ("X2", "VacX", "VacX2")
        for combo in itertools.product(symbols, repeat=3):
            matches = [e for e in ENVIRONMENTS if e.centre == centre
                       and canonical_rotation(combo, symbols) == e.neighbours]
            assert len(matches) == 1


@pytest.mark.parametrize("env_id", [0, 7, 11, 12, 20, 33])
def test_structure_matches_environment(paper, env_id):
    env = ENVIRONMENTS[env_id]
    host = paper.materials["hosts"]["WSe2"]
    atoms = build_environment(host, "Cr", env, (3, 2), 2.0)
    centre = np.array(atoms.info["centre_xy_angstrom"])
    np.testing.assert_allclose(centre, np.diag(atoms.cell)[:2] / 2)
    symbols = np.array(atoms.get_chemical_symbols())

    def column(xy):
        at = np.linalg.norm(atoms.positions[:, :2] - xy, axis=1) < 1e-3
        return sorted(symbols[at].tolist())

    expect = {"M": ["W"], "D": ["Cr"], "X2": ["Se", "Se"], "VacX": ["Se"], "VacX2": []}
    assert column(centre) == expect[env.centre]
    for xy, role in zip(atoms.info["neighbour_xy_angstrom"], env.neighbours):
        assert abs(np.linalg.norm(np.array(xy) - centre) - host["lattice_constant_angstrom"] / 3**0.5) < 1e-3
        assert column(np.array(xy)) == expect[role]
    # nothing else is touched: the rest of the supercell is pristine WSe2
    n_cells = 3 * 2 * 2  # 2 formula units per orthogonal cell
    n_dopants = (env.centre == "D") + env.neighbours.count("D")
    assert (symbols == "Cr").sum() == n_dopants
    assert (symbols == "W").sum() + n_dopants == n_cells


def test_cif_round_trip(paper, tmp_path):
    env = ENVIRONMENTS[20]
    atoms = build_environment(paper.materials["hosts"]["TaSe2"], "V", env, (3, 2), 2.0)
    path = write_cif(atoms, tmp_path / "env20.cif", host_name="TaSe2")
    back = read(path)
    assert back.get_chemical_formula() == atoms.get_chemical_formula()
    np.testing.assert_allclose(back.cell.array, atoms.cell.array, atol=1e-4)
    # same atoms, positions modulo the cell
    order_a = np.lexsort(atoms.positions.T.round(3))
    order_b = np.lexsort(back.positions.T.round(3))
    np.testing.assert_allclose(back.positions[order_b], atoms.positions[order_a], atol=1e-3)
    header = read_cif_header(path)
    assert header["environment_id"] == "20" and header["label"].startswith(str(env.label))


def test_structures_command_writes_all_cifs(repo_root, tmp_path):
    from simulate.__main__ import main

    assert main(["structures", "--config", str(repo_root / "configs/dataset/tiny.yaml"), "--out", str(tmp_path)]) == 0
    cifs = sorted(tmp_path.rglob("*.cif"))
    assert len(cifs) == 2 * 3
    assert {read_cif_header(p)["environment_id"] for p in cifs} == {"0", "12", "23"}
