"""Contrast physics on small real abTEM simulations (80 keV, 31 mrad, one static run per structure)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from simulate import config, multislice
from contract.environments import ENVIRONMENTS
from simulate.optics import gpts_reaching
from simulate.structures import build_environment

DETECTORS = {"HAADF": {"inner_mrad": 68.0, "outer_mrad": 280.0}, "MAADF": {"inner_mrad": 30.0, "outer_mrad": 120.0}}
REPEATS = (3, 2)


def _environment(centre: str, neighbours: tuple[str, str, str]):
    return next(e for e in ENVIRONMENTS if e.centre == centre and e.neighbours == neighbours)


def _column_intensities(host_name: str, env, energy_kev: float = 80) -> dict[str, dict[str, float]]:
    """Image intensity (fraction of the beam) at the centre, each neighbour and the hollow sites."""
    cfg = config.load_yaml("configs/dataset/paper.yaml")
    host = cfg["materials"]["hosts"][host_name]
    atoms = build_environment(host, "Cr", env, REPEATS, 2.0)
    extent = tuple(np.diag(atoms.cell)[:2])
    window = multislice.scan_window(host["lattice_constant_angstrom"], energy_kev, 31.0, margin_px=2)
    multislice.configure_abtem("cpu", "FFTW_ESTIMATE")
    images = multislice.simulate_images(
        atoms, atoms.info["centre_xy_angstrom"], beam_energy_kev=energy_kev,
        gpts=gpts_reaching(extent, energy_kev, 280.0), convergence_semiangle_mrad=31.0, detectors=DETECTORS,
        window=window)
    centre = np.array(atoms.info["centre_xy_angstrom"])

    def at(image, xy):  # bilinear read at a position in Å ([row, col] = [y, x])
        rc = window.centre_px + (np.asarray(xy) - centre)[::-1] / window.sampling_angstrom
        return float(ndimage.map_coordinates(image.astype(np.float64), rc[:, None], order=1)[0])

    out = {}
    for name, image in images.items():
        values = {"centre": at(image, centre)}
        for i, xy in enumerate(atoms.info["neighbour_xy_angstrom"]):
            values[f"n{i}:{env.neighbours[i]}"] = at(image, xy)
            values[f"hollow{i}"] = at(image, 2 * centre - np.asarray(xy))  # opposite a neighbour: a hollow site
        out[name] = values
    return out


@pytest.fixture(scope="module")
def wse2_vacancies():
    # a W column with one Se2, one single-Se and one empty chalcogen column around it
    env = _environment("M", ("X2", "VacX", "VacX2"))
    return _column_intensities("WSe2", env)


def test_w_brighter_than_se2_in_haadf(wse2_vacancies):
    haadf = wse2_vacancies["HAADF"]
    assert haadf["centre"] > haadf["n0:X2"], haadf


def test_single_se_dimmer_than_se2(wse2_vacancies):
    for det in ("HAADF", "MAADF"):
        v = wse2_vacancies[det]
        assert v["n1:VacX"] < 0.8 * v["n0:X2"], (det, v)


def test_empty_chalcogen_column_near_background(wse2_vacancies):
    for det in ("HAADF", "MAADF"):
        v = wse2_vacancies[det]
        background = np.mean([v["hollow0"], v["hollow1"], v["hollow2"]])
        # an empty column shows little more than the tails of its neighbours, like a hollow site
        assert v["n2:VacX2"] < 0.5 * v["n1:VacX"], (det, v)
        assert abs(v["n2:VacX2"] - background) < 0.25 * (v["n0:X2"] - background), (det, v)


def test_tase2_metal_chalcogen_contrast_reverses_between_detectors():
    v = _column_intensities("TaSe2", _environment("M", ("X2", "X2", "X2")))
    se2 = {det: np.mean([v[det][f"n{i}:X2"] for i in range(3)]) for det in v}
    haadf_ratio = v["HAADF"]["centre"] / se2["HAADF"]
    maadf_ratio = v["MAADF"]["centre"] / se2["MAADF"]
    assert haadf_ratio > 1.0 > maadf_ratio, (haadf_ratio, maadf_ratio)


def test_grid_too_coarse_is_an_error_not_a_truncation():
    cfg = config.load_yaml("configs/dataset/paper.yaml")
    host = cfg["materials"]["hosts"]["WSe2"]
    atoms = build_environment(host, "Cr", ENVIRONMENTS[12], REPEATS, 2.0)
    window = multislice.scan_window(host["lattice_constant_angstrom"], 80, 31.0, margin_px=2)
    with pytest.raises(ValueError, match="HAADF outer angle 280"):
        multislice.simulate_images(atoms, atoms.info["centre_xy_angstrom"], beam_energy_kev=80, gpts=128,
                                   convergence_semiangle_mrad=31.0, detectors=DETECTORS, window=window)


def test_scan_window_is_centred_and_at_nyquist_or_finer():
    from simulate.optics import nyquist_scan_sampling_angstrom

    for a in (3.16, 3.55):
        for energy in (60, 80, 100):
            w = multislice.scan_window(a, energy, 31.0, margin_px=2)
            assert w.sampling_angstrom <= nyquist_scan_sampling_angstrom(energy, 31.0) + 1e-12
            assert w.n_px % 2 == 1 and w.centre_px == (w.n_px - 1) // 2
            assert abs(w.patch_half_px * w.sampling_angstrom - 3**0.5 * a / 2) < 1e-9


@pytest.mark.slow
def test_frozen_phonons_average_and_raise_haadf_metal_contrast():
    """Thermal diffuse scattering (frozen phonons) adds high-angle intensity on heavy columns: the HAADF
    W/Se2 ratio must rise above the static one (measured 1.03 -> 1.23 with 6 configurations at 60 keV)."""
    cfg = config.load_yaml("configs/dataset/paper.yaml")
    host = cfg["materials"]["hosts"]["WSe2"]
    atoms = build_environment(host, "Cr", _environment("M", ("X2", "X2", "X2")), REPEATS, 2.0)
    extent = tuple(np.diag(atoms.cell)[:2])
    window = multislice.scan_window(host["lattice_constant_angstrom"], 60, 31.0, margin_px=2)
    multislice.configure_abtem("cpu", "FFTW_ESTIMATE")
    ratios = {}
    for configs in (0, 4):
        images = multislice.simulate_images(
            atoms, atoms.info["centre_xy_angstrom"], beam_energy_kev=60, gpts=gpts_reaching(extent, 60, 280.0),
            convergence_semiangle_mrad=31.0, detectors={"HAADF": DETECTORS["HAADF"]}, window=window,
            frozen_phonons=configs, frozen_phonon_sigma_angstrom=0.08, seed=3)
        image = images["HAADF"]
        assert image.shape == (window.n_px, window.n_px)
        c = window.centre_px
        yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
        ring = np.abs(np.hypot(yy - c, xx - c) * window.sampling_angstrom - host["lattice_constant_angstrom"] / 3**0.5) < 0.3
        ratios[configs] = image[c, c] / image[ring].max()
    assert ratios[4] > ratios[0] + 0.05 and ratios[4] > 1.1, ratios


@pytest.mark.gpu
def test_gpu_multislice_matches_cpu():
    """The CuPy path (multislice.device: gpu) gives the CPU images to float32 FFT accuracy."""
    cfg = config.load_yaml("configs/dataset/paper.yaml")
    host = cfg["materials"]["hosts"]["WSe2"]
    atoms = build_environment(host, "Cr", _environment("M", ("X2", "VacX", "VacX2")), REPEATS, 2.0)
    extent = tuple(np.diag(atoms.cell)[:2])
    window = multislice.scan_window(host["lattice_constant_angstrom"], 80, 31.0, margin_px=2)
    images = {}
    for device in ("cpu", "gpu"):
        multislice.configure_abtem(device, "FFTW_ESTIMATE")
        images[device] = multislice.simulate_images(
            atoms, atoms.info["centre_xy_angstrom"], beam_energy_kev=80, gpts=gpts_reaching(extent, 80, 280.0),
            convergence_semiangle_mrad=31.0, detectors=DETECTORS, window=window, device=device)
    multislice.configure_abtem("cpu", "FFTW_ESTIMATE")
    for det in DETECTORS:
        np.testing.assert_allclose(images["gpu"][det], images["cpu"][det], rtol=1e-3, atol=1e-6)
