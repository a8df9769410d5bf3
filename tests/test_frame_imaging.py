"""Frame imaging measured from the image (inference.frame_imaging): the blur, dose, format and signal-to-noise of
frames made by the project's own noise model (kernels.noise) from Gaussian-column lattices and from an abTEM
field, and the dataset-config overrides built from them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample

from inference.classify import Sites, locate_sites
from inference.frame_imaging import (
    INTRINSIC_COLUMN_SIGMA_PER_LAMBDA_OVER_ALPHA,
    frame_overrides,
    intrinsic_column_sigma_angstrom,
    matched_patch_size_px,
    measure_frame_imaging,
    reference_imaging,
)
from kernels import noise
from kernels.optics import wavelength_angstrom
from simulate.fullfield import CleanField

WSE2_A = 3.282  # Å, contract/catalog.yaml
CONVERGENCE_MRAD = 31.0
FIELDS = Path(__file__).parent / "fields"
"""Clean 16 x 16 Å WSe2 fields, intact, rotated 13° (wse2_<E>kev_<detector>_16A_clean.npz): made by
``simulate.fullfield.simulate_clean_field`` (host WSe2, fractions 0, seed 1, configs/dataset/paper.yaml; 2-5 min
each) and saved with ``CleanField.save``."""


def honeycomb_fractions(shape, pixel_angstrom, beam_energy_kev, *, amplitudes=(0.08, 0.064), background=0.002,
                        angle_rad=0.3):
    """A clean 1H-MX2 image in fractions of the beam: Gaussian columns of the unblurred simulated width at this
    energy (metal then chalcogen sublattice), lattice constant that of WSe2."""
    a = WSE2_A / pixel_angstrom
    sigma = intrinsic_column_sigma_angstrom(beam_energy_kev, CONVERGENCE_MRAD, "HAADF") / pixel_angstrom
    h, w = shape
    a1 = a * np.array([np.sin(angle_rad), np.cos(angle_rad)])
    a2 = a * np.array([np.sin(angle_rad + np.pi / 3), np.cos(angle_rad + np.pi / 3)])
    bond = (a1 + a2) / 3
    n = int(2 * max(h, w) / a) + 2
    i, j = np.meshgrid(np.arange(-n, n), np.arange(-n, n), indexing="ij")
    lattice = i.reshape(-1, 1) * a1 + j.reshape(-1, 1) * a2 + np.array([h / 2, w / 2])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.full(shape, background)
    reach = 5 * sigma
    for amplitude, centres in zip(amplitudes, (lattice, lattice + bond)):
        for y, x in centres:
            if -reach < y < h + reach and -reach < x < w + reach:
                r0, r1 = max(int(y - reach), 0), min(int(y + reach) + 2, h)
                c0, c1 = max(int(x - reach), 0), min(int(x + reach) + 2, w)
                image[r0:r1, c0:c1] += amplitude * np.exp(
                    -((yy[r0:r1, c0:c1] - y) ** 2 + (xx[r0:r1, c0:c1] - x) ** 2) / (2 * sigma**2))
    return image


def counts_frame(clean, pixel_angstrom, blur_angstrom, dose, seed=0, display=None, read_noise_counts=0.0):
    """The simulation's own noise model on a whole image: blur, Poisson, (display export)."""
    draw = noise.NoiseDraw(blur_angstrom, dose, read_noise_counts, 0.0, (0.0, 0.0), display)
    return noise.noisy_counts(clean, draw, pixel_size_angstrom=pixel_angstrom, rng=np.random.default_rng(seed))


def measure(image, **kwargs):
    return measure_frame_imaging(image, locate_sites(image), lattice_constant_angstrom=WSE2_A, beam_energy_kev=80,
                                 convergence_semiangle_mrad=CONVERGENCE_MRAD, detector="HAADF", **kwargs)


PIXEL = 0.14  # Å: a = 23.4 px, a typical atomic-resolution frame


@pytest.fixture(scope="module")
def clean_lattice():
    return honeycomb_fractions((224, 224), PIXEL, 80)


@pytest.mark.parametrize("blur,dose", [(0.15, 4e5), (0.35, 1e5)])
def test_blur_dose_and_raw_counts_recovered(clean_lattice, blur, dose):
    frame = counts_frame(clean_lattice, PIXEL, blur, dose)
    m = measure(frame, lattice_mean_fraction=float(clean_lattice.mean()))
    assert abs(m.lattice_constant_px - WSE2_A / PIXEL) < 0.02 * WSE2_A / PIXEL
    assert abs(m.pixel_size_angstrom - PIXEL) < 0.003
    assert abs(m.probe_blur_sigma_angstrom - blur) < 0.03
    assert m.integer_valued and m.poisson_like and m.raw_counts and not m.display_export
    assert 0.9 < m.noise_gain < 1.1  # one count per electron
    assert abs(m.dose_e_per_angstrom2 / dose - 1) < 0.1
    assert m.sublattice_levels[0] > m.sublattice_levels[1]  # the metal sublattice is the brighter here
    assert not any("dose" in s for s in m.not_estimated)


def test_offset_gain_and_non_poisson_noise(clean_lattice):
    frame = counts_frame(clean_lattice, PIXEL, 0.25, 2e5)
    electrons = frame[clean_lattice > 0].mean()
    with_offset = measure(frame + 10_000.5)  # a DC offset, as DigiScan frames carry
    assert not with_offset.integer_valued and with_offset.raw_counts
    assert abs(with_offset.zero_level - 10_000.5) < 0.1 * electrons
    assert abs(with_offset.electrons_per_pixel / electrons - 1) < 0.12
    scaled = measure(frame * 7.0)  # an analogue detector: 7 units per electron
    assert scaled.raw_counts and abs(scaled.noise_gain / 7 - 1) < 0.12 and scaled.zero_level == 0.0
    assert abs(scaled.electrons_per_pixel / electrons - 1) < 0.12
    # the blur does not depend on the units
    assert abs(scaled.probe_blur_sigma_angstrom - with_offset.probe_blur_sigma_angstrom) < 1e-3
    # additive noise of one size everywhere (no shot noise): not counts, no dose
    flat = clean_lattice * 2e4 + np.random.default_rng(2).normal(0, 20, clean_lattice.shape)
    gaussian = measure(flat, lattice_mean_fraction=float(clean_lattice.mean()))
    assert not gaussian.poisson_like and not gaussian.raw_counts and gaussian.dose_e_per_angstrom2 is None
    assert any("not raw counts" in s for s in gaussian.not_estimated)


def test_clipped_8bit_export_recognised_and_matched(clean_lattice):
    dose, blur = 3e4, 0.25
    counts = counts_frame(clean_lattice, PIXEL, blur, dose, seed=4, read_noise_counts=1.0)
    export = counts_frame(clean_lattice, PIXEL, blur, dose, seed=4, display=noise.DisplayDraw(0.17, 0.0, 1.0),
                          read_noise_counts=1.0)
    assert export.max() == 255
    raw, shown = measure(counts), measure(export.astype(np.uint8))
    assert shown.display_export and shown.eight_bit and not shown.raw_counts
    assert abs(shown.black_clip_fraction - 0.17) < 0.02 and shown.white_clip_fraction < 0.001
    assert shown.display_range_fraction == 1.0 and shown.grey_levels_used > 100 and raw.display_range_fraction == 0
    assert shown.dose_e_per_angstrom2 is None and any("display export" in s for s in shown.not_estimated)
    assert abs(shown.probe_blur_sigma_angstrom - blur) < 0.04
    # a linear stretch keeps the peak signal-to-noise (the noise is measured at the columns, not the clipped floor;
    # clipping at white would truncate the peaks: real exports clip 0-0.1 %)
    assert abs(shown.peak_snr / raw.peak_snr - 1) < 0.15
    # the overrides: dose from the SNR and a clean reference of the context, the display step around the clipping
    clean_blurred = noise.probe_blur(clean_lattice, blur, PIXEL)
    reference = measure(clean_blurred)
    overrides, unmatched = frame_overrides(shown, noise.DISPLAY_EXPORT_RANGES | {
        "probe_blur_sigma_angstrom": [0.15, 0.45], "dose_e_per_angstrom2": [2e4, 2e5], "read_noise_counts": [0, 3],
        "scan_jitter_px": [0, 0.5], "centre_offset_px": [0, 0.5]}, reference=reference)
    low, high = overrides["noise"]["dose_e_per_angstrom2"]
    assert low < dose < high and abs((low + high) / 2 / dose - 1) < 0.3
    black = overrides["noise"]["display_export"]["black_clip_fraction"]
    assert black[0] < 0.17 < black[1] and black[1] - black[0] < 0.15
    assert overrides["noise"]["display_export"]["gamma"] == noise.DISPLAY_EXPORT_RANGES["gamma"]
    assert sum("gamma" in s for s in unmatched) == 1
    assert not any(s.startswith("dose") for s in unmatched)  # settled through the signal-to-noise


def test_overrides_resolve_in_a_dataset_config(clean_lattice):
    from simulate.config import load_yaml, resolve

    frame = counts_frame(clean_lattice, PIXEL, 0.3, 1e5)
    m = measure(frame, lattice_mean_fraction=float(clean_lattice.mean()))
    raw = load_yaml("configs/dataset/tiny.yaml")
    overrides, _ = frame_overrides(m, raw["noise"])
    cfg = resolve({**raw, "noise": overrides["noise"], "patches": {**raw["patches"], **overrides["patches"]}})
    blur = cfg.noise.probe_blur_sigma_angstrom
    assert blur[0] < 0.3 < blur[1] and abs(sum(blur) / 2 - m.probe_blur_sigma_angstrom) < 1e-9
    assert list(cfg.noise.read_noise_counts) == raw["noise"]["read_noise_counts"]  # not measured: kept
    size = cfg.patches.patch_size_px
    assert size % 2 == 1 and abs((size - 1) / 3**0.5 - WSE2_A / PIXEL) <= 1.2  # pixels per lattice constant
    assert cfg.noise.display_export is None and "display_export" not in cfg.noise.as_mapping()


@pytest.mark.parametrize("energy", [60, 80, 100])
def test_wavelength_agrees_with_abtem(energy):
    from simulate.optics import wavelength_angstrom as abtem_wavelength

    assert wavelength_angstrom(energy) == pytest.approx(abtem_wavelength(energy), rel=1e-6)


def test_matched_patch_size_is_odd_and_at_least_9():
    assert matched_patch_size_px(18.5) == 33  # the paper's 33 px patches have 18.5 px per lattice constant
    assert matched_patch_size_px(24.0) == 43
    assert matched_patch_size_px(2.0) == 9


def test_what_is_not_given_is_said(clean_lattice):
    frame = counts_frame(clean_lattice, PIXEL, 0.3, 1e5)
    m = measure_frame_imaging(frame, locate_sites(frame))
    assert m.pixel_size_angstrom is None and m.probe_blur_sigma_angstrom is None and m.dose_e_per_angstrom2 is None
    assert m.column_sigma_px > 0 and m.raw_counts
    text = " ".join(m.not_estimated)
    assert "lattice constant" in text and "beam energy" in text and "dose" in text
    overrides, unmatched = frame_overrides(m, {"probe_blur_sigma_angstrom": [0.15, 0.45],
                                               "dose_e_per_angstrom2": [2e4, 2e5]})
    assert overrides["noise"]["probe_blur_sigma_angstrom"] == [0.15, 0.45]
    assert any(s.startswith("probe blur:") and "kept" in s for s in unmatched)
    assert any(s.startswith("dose: kept") for s in unmatched) and len(unmatched) == len(set(unmatched))


def test_too_few_columns_is_an_error():
    image = np.random.default_rng(0).poisson(5.0, (64, 64)).astype(float)
    sites = Sites(np.array([[20.0, 20.0], [30.0, 30.0]]), np.array([0, 1]), np.ones(2, bool), np.zeros(2, bool),
                  12.0, 12.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="too few columns"):
        measure_frame_imaging(image, sites)


def _truth_sites(field: CleanField, pixel_angstrom: float, shape) -> Sites:
    """The field's own column positions (the calibration is about the column width, not the site finder)."""
    pos = np.stack([field.truth["y_angstrom"], field.truth["x_angstrom"]], axis=1) / pixel_angstrom
    a_px = field.meta["lattice_constant_angstrom"] / pixel_angstrom
    border = np.any((pos < a_px) | (pos > np.array(shape) - 1 - a_px), axis=1)
    sublattice = (field.truth["sublattice"] == "chalcogen").astype(int)
    return Sites(pos, sublattice, np.ones(len(pos), bool), border, a_px, a_px, 0.0, 0.0)


@pytest.mark.parametrize("energy,detector", [(60, "HAADF"), (80, "HAADF"), (100, "HAADF"), (60, "MAADF")])
@pytest.mark.parametrize("blur", [0.0, 0.2, 0.4])
def test_blur_calibration_on_abtem_fields(energy, detector, blur):
    """The unblurred width of abTEM columns is INTRINSIC_COLUMN_SIGMA_PER_LAMBDA_OVER_ALPHA x λ/α, and a known
    blur (the noise model's own) is recovered from the column width."""
    field = CleanField.load(FIELDS / f"wse2_{energy}kev_{detector.lower()}_16A_clean.npz")
    n = int(round(field.clean.shape[0] * field.pixel_angstrom / 0.1))  # band-limited scan: Fourier upsampling is exact
    fine = resample(resample(field.clean.astype(np.float64), n, axis=0), n, axis=1)
    pixel = field.clean.shape[0] * field.pixel_angstrom / n
    image = noise.probe_blur(fine, blur, pixel)
    m = measure_frame_imaging(image, _truth_sites(field, pixel, image.shape), lattice_constant_angstrom=WSE2_A,
                              beam_energy_kev=energy, convergence_semiangle_mrad=CONVERGENCE_MRAD, detector=detector)
    if blur == 0.0:
        ratio = m.column_sigma_angstrom / (wavelength_angstrom(energy) / (CONVERGENCE_MRAD * 1e-3))
        assert abs(ratio / INTRINSIC_COLUMN_SIGMA_PER_LAMBDA_OVER_ALPHA[detector] - 1) < 0.05
        assert m.probe_blur_sigma_angstrom < 0.12
    else:
        assert abs(m.probe_blur_sigma_angstrom - blur) < 0.03
    # HAADF: W over Se2; MAADF at 60 keV: Se2 over W (docs/frame-matching.md, "Blur calibration")
    assert (m.sublattice_levels[0] > m.sublattice_levels[1]) == (detector == "HAADF")
    reference = reference_imaging(field, blur)  # the same measurement, as frame_overrides' reference takes it
    assert reference.column_sigma_angstrom == pytest.approx(m.column_sigma_angstrom, rel=1e-6)
    assert reference.lattice_mean_level == pytest.approx(field.clean.mean(), rel=0.01)  # resampling keeps the mean


def test_real_dm3_frame_counts_with_offset_and_two_dose_routes_agree():
    """The real DigiScan MoS2 frame (60 kV HAADF, integer counts on a DC offset of ~3e6): Poisson-like counts with
    an offset are found, and the dose from its counts and from its peak signal-to-noise (two independent routes,
    both through a clean abTEM MoS2 reference) agree."""
    from contract.catalog import load_catalog
    from contract.images import read_image
    from inference.frame_imaging import dose_from_snr
    from tests.inference_fixtures import real_micrograph_path

    frame = read_image(real_micrograph_path())
    a = load_catalog(None).hosts["MoS2"].lattice_constant_angstrom
    kwargs = dict(lattice_constant_angstrom=a, beam_energy_kev=60, convergence_semiangle_mrad=CONVERGENCE_MRAD,
                  detector="HAADF")
    sites = locate_sites(frame.image)
    first = measure_frame_imaging(frame.image, sites, **kwargs)
    reference = reference_imaging(CleanField.load(FIELDS / "mos2_60kev_haadf_16A_clean.npz"),
                                  first.probe_blur_sigma_angstrom)
    m = measure_frame_imaging(frame.image, sites, lattice_mean_fraction=reference.lattice_mean_level, **kwargs)
    assert m.integer_valued and m.poisson_like and m.raw_counts and not m.display_export
    assert 1e6 < m.zero_level < m.background_level  # the DC offset, below the darkest lattice signal
    assert 0.15 < m.probe_blur_sigma_angstrom < 0.6
    bright = int(np.argmax(reference.sublattice_levels))
    snr_dose = dose_from_snr(m.peak_snr, reference.sublattice_levels[bright], reference.background_level,
                             m.pixel_size_angstrom)
    assert 0.6 < snr_dose / m.dose_e_per_angstrom2 < 1.6
    overrides, _ = frame_overrides(m, {"probe_blur_sigma_angstrom": [0.15, 0.45], "dose_e_per_angstrom2": [2e4, 2e5]},
                                   reference=reference)
    low, high = overrides["noise"]["dose_e_per_angstrom2"]
    assert low < m.dose_e_per_angstrom2 < high and "display_export" not in overrides["noise"]


@pytest.mark.parametrize("name", ["wse2_80kev_haadf_16A_clean.npz", "mos2_60kev_haadf_16A_clean.npz"])
def test_blur_and_dose_recovered_on_abtem_fields_through_the_noise_model(name):
    """abTEM columns at 0.14 Å/px through the noise model (blur 0.3 Å, 3e4 e/Å²): the blur and, from the counts
    and the field's mean detected fraction, the dose come back. Only 18 columns: the tolerance is wider than on
    the large synthetic lattices."""
    field = CleanField.load(FIELDS / name)
    n = int(round(field.clean.shape[0] * field.pixel_angstrom / PIXEL))
    fine = resample(resample(field.clean.astype(np.float64), n, axis=0), n, axis=1)
    pixel = field.clean.shape[0] * field.pixel_angstrom / n
    frame = counts_frame(fine, pixel, 0.3, 3e4, seed=0)
    m = measure_frame_imaging(frame, _truth_sites(field, pixel, frame.shape),
                              lattice_constant_angstrom=field.meta["lattice_constant_angstrom"],
                              beam_energy_kev=field.meta["beam_energy_kev"],
                              convergence_semiangle_mrad=CONVERGENCE_MRAD, detector="HAADF",
                              lattice_mean_fraction=float(fine.mean()))
    assert abs(m.probe_blur_sigma_angstrom - 0.3) < 0.03
    assert m.raw_counts and abs(m.dose_e_per_angstrom2 / 3e4 - 1) < 0.25
