"""``simulate.fullfield`` without abTEM's multislice: defect fractions, seeding, geometry, noise, CLI errors."""
from __future__ import annotations

import numpy as np
import pytest

from kernels.noise import noisy_image
from simulate.__main__ import main as simulate_main
from simulate.fullfield import build_field, parse_fractions

WSE2 = {"metal": "W", "chalcogen": "Se", "lattice_constant_angstrom": 3.282, "thickness_angstrom": 3.34}


def test_parse_fractions_values_and_errors():
    assert parse_fractions("D=0.1, VacX2=0.2") == {"VacX": 0.0, "VacX2": 0.2, "D": 0.1}
    for bad, msg in (("Q=0.1", "NAME=VALUE"), ("D=x", "not a number"), ("D=1.5", r"\[0, 1\]"),
                     ("VacX=0.6,VacX2=0.6", "must not exceed 1"), ("D0.1", "NAME=VALUE")):
        with pytest.raises(ValueError, match=msg):
            parse_fractions(bad)


@pytest.mark.parametrize("dopant", ["Cr", "Ti", "Nb", "Fe"])
def test_two_letter_dopant_in_a_one_letter_host_keeps_its_symbol(dopant):
    """WS2 holds one-letter symbols: a fixed-width string array once cut "Cr" to "C" (carbon), "Nb" to "N" and
    "Fe" to "F" silently, and "Ti" to "T" (a crash)."""
    ws2 = {"metal": "W", "chalcogen": "S", "lattice_constant_angstrom": 3.153, "thickness_angstrom": 3.14}
    atoms, truth = build_field(ws2, dopant, 30.0, 23.0, {"D": 0.2, "VacX": 0.0, "VacX2": 0.0},
                               np.random.default_rng(3))
    symbols = set(atoms.get_chemical_symbols())
    assert symbols == {"W", "S", dopant} and (np.array(atoms.get_chemical_symbols()) == dopant).sum() == \
        (truth["label"] == 4).sum() > 0


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


def test_scan_distortion_geometry_is_exact_and_seeded():
    from simulate.fullfield import ScanDistortion, draw_geometry, scan_positions, specimen_to_scan_px

    dist = ScanDistortion(drift_shear=0.03, row_wobble_angstrom=0.12, row_wobble_period_angstrom=10.0, glitches=2,
                          glitch_shift_angstrom=0.36, glitch_height_angstrom=2.0, scan_skew_deg=2.0)
    geo = draw_geometry((40.0, 40.0), (250, 250), 0.12, dist, np.random.default_rng(4))
    assert geo == draw_geometry((40.0, 40.0), (250, 250), 0.12, dist, np.random.default_rng(4))
    assert len(geo.glitch_rows) == 2 and all(n == round(2.0 / 0.12) for _, n in geo.glitch_rows)
    y, x = scan_positions((250, 250), 0.12, dist, geo)
    assert y.min() >= 0 and x.min() >= 0 and y.max() <= 40 and x.max() <= 40  # the scan stays on the specimen
    r, c = specimen_to_scan_px(y, x, 0.12, dist, geo)  # the inverse is exact
    assert np.allclose(r, np.indices((250, 250))[0], atol=1e-9) and np.allclose(c, np.indices((250, 250))[1], atol=1e-9)
    # a glitch band is shifted by 3 px against its neighbours; elsewhere rows differ by the smooth drift only
    first, n = geo.glitch_rows[0]
    jump = (x[first, 0] - x[first - 1, 0]) / 0.12
    assert jump == pytest.approx(3.0, abs=0.2)


def test_scan_distortion_validation_and_identity():
    from simulate.fullfield import ScanDistortion, distort_scan

    for bad in (dict(hole_radius_angstrom=-1), dict(drift_shear=0.5), dict(glitches=-1), dict(scan_skew_deg=45),
                dict(row_wobble_period_angstrom=0), dict(pixel_miscalibration=0.7)):
        with pytest.raises(ValueError):
            ScanDistortion(**bad)
    assert ScanDistortion().is_identity and not ScanDistortion(dc_offset_counts=1.0).is_identity
    yy, xx = np.indices((64, 64)) / 64
    clean = 2 + np.cos(2 * np.pi * (2 * yy + 3 * xx))  # smooth and periodic: the cubic spline is exact to ~1e-3
    out, geo = distort_scan(clean, 0.2, (64, 64), 0.2, ScanDistortion(), np.random.default_rng(0))
    assert geo.origin_angstrom == pytest.approx((0.1, 0.1))  # centred: half a pixel of margin each side
    expect = 2 + np.cos(2 * np.pi * (2 * (yy + 0.5 / 64) + 3 * (xx + 0.5 / 64)))
    assert np.abs(out - expect).max() < 0.01


def test_fourier_upsample_is_exact_for_a_band_limited_image():
    from simulate.fullfield import fourier_upsample

    n = 32
    yy, xx = np.indices((n, n)) / n
    img = 2 + np.cos(2 * np.pi * (3 * yy + 2 * xx)) + 0.5 * np.sin(2 * np.pi * 5 * xx)
    up = fourier_upsample(img, 2.5)
    yy2, xx2 = np.indices(up.shape) / up.shape[0]
    assert up.shape == (80, 80)
    assert np.allclose(up, 2 + np.cos(2 * np.pi * (3 * yy2 + 2 * xx2)) + 0.5 * np.sin(2 * np.pi * 5 * xx2), atol=1e-9)


def test_fullfield_cli_rejects_bad_distortions(tmp_path, capsys):
    args = ["fullfield", "--host", "WSe2", "--dopant", "Cr", "--energy-kev", "60", "--detector", "MAADF",
            "--out", str(tmp_path)]
    assert simulate_main(args + ["--hole-radius-angstrom", "-2"]) == 2
    assert "--hole-radius-angstrom" in capsys.readouterr().err
    assert simulate_main(args + ["--pixel-miscalibration", "0.9"]) == 2
    assert "--pixel-miscalibration" in capsys.readouterr().err
