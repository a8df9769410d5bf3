"""Noise model and patch extraction: pure kernels, exact properties."""
from __future__ import annotations

import numpy as np
import pytest

from kernels import noise

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


# --- display export (noise.display_export): off by default, deterministic, clips what it is told to ----------

DEFAULT_PATCHES_SHA256 = "c951372c4dcfa077919a051eaa00db3ef92531c1d1edaf342b1550a9ec8853a2"
"""sha256 of the five patches below made by the noise model before the display step existed (same RANGES)."""


def _patch_bytes(ranges) -> bytes:
    clean = np.random.default_rng(1).uniform(0.01, 0.1, (21, 21))
    out = b""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        draw = noise.draw_noise(rng, ranges)
        out += noise.noisy_patch(clean, draw, pixel_size_angstrom=0.3, centre_px=10, half_width_px=8,
                                 patch_size_px=17, rng=rng).tobytes()
    return out


def test_default_noise_keeps_its_bytes():
    import hashlib

    assert hashlib.sha256(_patch_bytes(RANGES)).hexdigest() == DEFAULT_PATCHES_SHA256
    assert hashlib.sha256(_patch_bytes({**RANGES, "display_export": None})).hexdigest() == DEFAULT_PATCHES_SHA256
    assert "display" not in noise.draw_noise(np.random.default_rng(0), RANGES).as_dict()


def test_display_draw_comes_after_the_other_draws():
    plain = noise.draw_noise(np.random.default_rng(5), RANGES)
    shown = noise.draw_noise(np.random.default_rng(5), {**RANGES, "display_export": noise.DISPLAY_EXPORT_RANGES})
    assert shown.display is not None and plain.display is None
    assert noise.NoiseDraw(*list(shown.as_dict().values())[:4], shown.centre_offset_px) == plain
    for key, (low, high) in noise.DISPLAY_EXPORT_RANGES.items():
        assert low <= getattr(shown.display, key) <= high


def test_display_export_patches_are_8bit_and_deterministic_from_the_seed():
    ranges = {**RANGES, "display_export": noise.DISPLAY_EXPORT_RANGES}
    clean = np.random.default_rng(1).uniform(0.01, 0.1, (21, 21))
    rng = np.random.default_rng(3)
    draw = noise.draw_noise(rng, ranges)
    grey = noise.noisy_counts(clean, draw, pixel_size_angstrom=0.3, rng=rng)
    assert np.array_equal(grey, np.round(grey)) and grey.min() == 0 and grey.max() == 255
    assert _patch_bytes(ranges) == _patch_bytes(ranges)
    assert _patch_bytes(ranges) != _patch_bytes(RANGES)


@pytest.mark.parametrize("black,white,gamma", [(0.17, 0.0, 1.0), (0.02, 0.01, 0.7), (0.0, 0.005, 1.4)])
def test_display_export_clips_the_fractions_it_draws(black, white, gamma):
    counts = np.random.default_rng(0).poisson(40.0, (300, 300)).astype(np.float64) + \
        np.random.default_rng(1).normal(0, 3, (300, 300))  # read noise: no ties at the levels
    grey = noise.display_export(counts, noise.DisplayDraw(black, white, gamma))
    assert abs((grey == 0).mean() - black) < 0.003 + 0.02 * black
    assert abs((grey == 255).mean() - white) < 0.002
    mid = (counts > np.quantile(counts, 0.4)) & (counts < np.quantile(counts, 0.6))
    # gamma bends the middle of the stretch: > 0.5 of the range for gamma < 1, below for gamma > 1
    expected = ((np.median(counts[mid]) - np.quantile(counts, black)) /
                (np.quantile(counts, 1 - white) - np.quantile(counts, black))) ** gamma * 255
    assert abs(np.median(grey[mid]) - expected) < 2


def test_display_export_config_is_validated_and_default_configs_keep_their_hash():
    from simulate.config import ConfigError, config_hash, load, load_yaml, resolve

    assert config_hash(load("configs/dataset/paper.yaml")) == \
        "725b92eff755b0aceb01853eb0d2bfe9d5ad7a60705dbd4cd2244fc556d2beed"  # hash before the display step existed
    raw = load_yaml("configs/dataset/tiny.yaml")
    ok = resolve({**raw, "noise": {**raw["noise"], "display_export": noise.DISPLAY_EXPORT_RANGES}})
    assert ok.noise.display_export.as_mapping() == {k: list(v) for k, v in noise.DISPLAY_EXPORT_RANGES.items()}
    for bad, message in [({"black_clip": [0, 0.1]}, "unknown key"),
                         ({**noise.DISPLAY_EXPORT_RANGES, "gamma": [0, 1]}, r"gamma\[0\]: must be > 0"),
                         ({**noise.DISPLAY_EXPORT_RANGES, "black_clip_fraction": [0.1, 0.6]}, "below 0.5"),
                         ({**noise.DISPLAY_EXPORT_RANGES, "white_clip_fraction": [0.01, 0.0]}, "below low"),
                         ([0, 1], "must be a mapping")]:
        with pytest.raises(ConfigError, match=message):
            resolve({**raw, "noise": {**raw["noise"], "display_export": bad}})
