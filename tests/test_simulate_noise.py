"""Noise model and patch extraction: pure kernels, exact properties."""
from __future__ import annotations

import numpy as np
import pytest

from simulate import noise

RANGES = {"probe_blur_sigma_angstrom": [0.2, 0.4], "dose_e_per_angstrom2": [1e4, 1e5], "read_noise_counts": [0, 2],
          "scan_jitter_px": [0, 0.5], "centre_offset_px": [0, 0.5]}


@pytest.mark.parametrize("dose", [1e3, 5e4])
def test_poisson_variance_matches_mean(dose):
    rng = np.random.default_rng(7)
    fraction, pixel = 0.05, 0.3
    counts = noise.shot_noise(np.full((256, 256), fraction), dose, pixel, rng)
    expected = dose * pixel**2 * fraction
    n = counts.size
    # mean within 5 standard errors; variance within 5 standard errors of the sample variance (Poisson)
    assert abs(counts.mean() - expected) < 5 * np.sqrt(expected / n)
    var_se = np.sqrt((2 * expected**2 + expected) / n)
    assert abs(counts.var(ddof=1) - expected) < 5 * var_se
    assert np.all(counts == np.round(counts)) and counts.min() >= 0


def test_dose_must_be_positive():
    with pytest.raises(ValueError, match="dose"):
        noise.shot_noise(np.ones((4, 4)), 0.0, 0.3, np.random.default_rng(0))


def _patch(seed, clean):
    rng = np.random.default_rng(seed)
    draw = noise.draw_noise(rng, RANGES)
    return noise.noisy_patch(clean, draw, pixel_size_angstrom=0.3, centre_px=10, half_width_px=8,
                             patch_size_px=17, rng=rng)


def test_same_seed_same_patch_other_seed_other_patch():
    clean = np.random.default_rng(1).uniform(0.01, 0.1, (21, 21))
    a, b, c = _patch(3, clean), _patch(3, clean), _patch(4, clean)
    assert a.dtype == np.float32 and a.shape == (17, 17)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_extract_patch_puts_centre_on_centre_pixel_and_spans_half_width():
    image = np.zeros((21, 21))
    image[10, 10] = 1.0
    patch = noise.extract_patch(image, (10, 10), 8, 17)  # native 17 px -> 17 px: identity
    assert patch[8, 8] == 1.0 and patch.sum() == 1.0
    ramp = np.tile(np.arange(21.0), (21, 1))  # value = column index
    up = noise.extract_patch(ramp, (10, 10), 8, 33)
    np.testing.assert_allclose(up[16], np.linspace(2, 18, 33), atol=1e-5)
    shifted = noise.extract_patch(ramp, (10, 10.25), 8, 33)
    np.testing.assert_allclose(shifted[16, 16], 10.25, atol=1e-5)


def test_extract_patch_rejects_even_size_and_overflow():
    with pytest.raises(ValueError, match="odd"):
        noise.extract_patch(np.zeros((21, 21)), (10, 10), 8, 16)
    with pytest.raises(ValueError, match="beyond"):
        noise.extract_patch(np.zeros((21, 21)), (10, 10), 11, 17)


def test_scan_jitter_shifts_rows():
    image = np.tile(np.arange(10.0), (3, 1))
    out = noise.scan_jitter(image, np.array([0.0, 1.0, -0.5]))
    np.testing.assert_allclose(out[0], image[0])
    np.testing.assert_allclose(out[1, :-1], image[1, 1:])
    np.testing.assert_allclose(out[2, 1:], image[2, 1:] - 0.5)


def test_blur_preserves_total_and_widens():
    image = np.zeros((31, 31))
    image[15, 15] = 1.0
    out = noise.probe_blur(image, 0.6, 0.3)  # sigma 2 px
    assert abs(out.sum() - 1.0) < 1e-9 and out[15, 15] < 0.1


def test_draws_stay_in_ranges():
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = noise.draw_noise(rng, RANGES)
        assert 0.2 <= d.probe_blur_sigma_angstrom <= 0.4 and 1e4 <= d.dose_e_per_angstrom2 <= 1e5
        assert np.hypot(*d.centre_offset_px) <= 0.5 + 1e-12
