"""``simulate.fullfield`` without abTEM's multislice: defect fractions, seeding, geometry, noise, CLI errors."""
from __future__ import annotations

import numpy as np
import pytest

from simulate.__main__ import main as simulate_main
from simulate.fullfield import build_field, noisy_image, parse_fractions

WSE2 = {"metal": "W", "chalcogen": "Se", "lattice_constant_angstrom": 3.282, "thickness_angstrom": 3.34}


def test_parse_fractions_values_and_errors():
    assert parse_fractions("D=0.1, VacX2=0.2") == {"VacX": 0.0, "VacX2": 0.2, "D": 0.1}
    for bad, msg in (("Q=0.1", "NAME=VALUE"), ("D=x", "not a number"), ("D=1.5", r"\[0, 1\]"),
                     ("VacX=0.6,VacX2=0.6", "must not exceed 1"), ("D0.1", "NAME=VALUE")):
        with pytest.raises(ValueError, match=msg):
            parse_fractions(bad)


def test_build_field_is_seeded_and_honours_fractions():
    fr = {"D": 0.2, "VacX": 0.1, "VacX2": 0.15}
    atoms, truth = build_field(WSE2, "Cr", 40.0, 23.0, fr, np.random.default_rng(7))
    atoms2, truth2 = build_field(WSE2, "Cr", 40.0, 23.0, fr, np.random.default_rng(7))
    assert np.array_equal(truth["label"], truth2["label"]) and np.allclose(atoms.positions, atoms2.positions)
    lab, sub = truth["label"], truth["sublattice"]
    assert set(lab[sub == "metal"]) <= {3, 4} and set(lab[sub == "chalcogen"]) <= {0, 1, 2}
    metal, chal = sub == "metal", sub == "chalcogen"
    assert abs((lab[metal] == 4).mean() - 0.2) < 0.07
    assert abs((lab[chal] == 2).mean() - 0.15) < 0.06 and abs((lab[chal] == 1).mean() - 0.1) < 0.06
    # atoms: one Cr per dopant column, no atom on a double vacancy, one Se on a single vacancy
    symbols = np.array(atoms.get_chemical_symbols())
    assert (symbols == "Cr").sum() == (lab == 4).sum()
    assert (symbols == "Se").sum() == 2 * (lab == 0).sum() + (lab == 1).sum()
    assert (atoms.positions[:, :2] >= 0).all() and (atoms.positions[:, :2] < 40).all()
    # rotated: the metal-metal nearest vector makes 23° (mod 60°) with x
    xy = np.c_[truth["x_angstrom"], truth["y_angstrom"]][metal]
    d = xy[:, None] - xy[None]
    dist = np.hypot(d[..., 0], d[..., 1])
    i, j = np.argwhere(np.isclose(dist, 3.282, atol=1e-3))[0]
    angle = np.degrees(np.arctan2(d[i, j, 1], d[i, j, 0])) % 60
    assert angle == pytest.approx(23.0, abs=1e-3)


def test_noisy_image_is_seeded_and_counts_scale_with_dose():
    clean = np.full((40, 40), 0.02)
    kw = dict(pixel_size_angstrom=0.4, probe_blur_sigma_angstrom=0.3, scan_jitter_px=0.3, read_noise_counts=1.0)
    a = noisy_image(clean, dose_e_per_angstrom2=1e5, rng=np.random.default_rng(1), **kw)
    b = noisy_image(clean, dose_e_per_angstrom2=1e5, rng=np.random.default_rng(1), **kw)
    assert np.array_equal(a, b) and a.dtype == np.float32
    assert a.mean() == pytest.approx(0.02 * 1e5 * 0.16, rel=0.02)  # dose x pixel area x fraction


def test_fullfield_cli_errors_name_the_field(tmp_path, capsys):
    args = ["fullfield", "--dopant", "Cr", "--energy-kev", "60", "--detector", "MAADF", "--out", str(tmp_path)]
    assert simulate_main(args + ["--host", "XY2"]) == 2
    assert "--host 'XY2' is not in the catalog" in capsys.readouterr().err
    assert simulate_main(args + ["--host", "WSe2", "--fractions", "D=2"]) == 2
    assert "--fractions" in capsys.readouterr().err
    assert simulate_main(["fullfield", "--host", "WSe2", "--dopant", "Cr", "--energy-kev", "60", "--detector", "BF",
                          "--out", str(tmp_path)]) == 2
    assert "--detector 'BF'" in capsys.readouterr().err
