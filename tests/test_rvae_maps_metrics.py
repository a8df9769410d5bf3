"""Periodic residual, anomaly score, circular agreement, label leak, defect localisation: exact properties."""
from __future__ import annotations

import numpy as np
import pytest

from rvae.maps import anomaly_score, circular_channels, periodic_average, periodic_residual
from rvae.metrics import (
    aligned_angle_agreement,
    best_correlation,
    circular_correlation,
    defect_localisation,
    label_predictability,
)


def lattice_map(ny=24, nx=30, period=(6, 5), channels=2, seed=0):
    cell = np.random.default_rng(seed).normal(size=(*period, channels))
    return np.tile(cell, (ny // period[0], nx // period[1], 1))


def test_periodic_residual_vanishes_on_a_periodic_map_and_keeps_a_defect():
    m = lattice_map()
    np.testing.assert_allclose(periodic_residual(m, (6, 5)), 0, atol=1e-12)
    np.testing.assert_allclose(periodic_average(m, (6, 5)), m)
    m[10, 12] += 3.0
    r = periodic_residual(m, (6, 5))
    assert r[10, 12, 0] == pytest.approx(3.0) and np.count_nonzero(np.abs(r) > 1e-9) == 2  # median ignores it
    with pytest.raises(ValueError, match="divide"):
        periodic_residual(m, (7, 5))


def test_anomaly_score_peaks_at_the_defect_and_ignores_constant_channels():
    rng = np.random.default_rng(1)
    m = lattice_map(channels=3) + 0.05 * rng.normal(size=(24, 30, 3))
    m[..., 2] = 1.0  # constant channel
    m[13, 7, :2] += 1.5
    score = anomaly_score(m, (6, 5))
    assert np.unravel_index(np.argmax(score), score.shape) == (13, 7)
    assert np.isfinite(score).all()


def test_circular_channels_handle_wraparound():
    a = np.array([np.pi - 0.01, -np.pi + 0.01])
    c = circular_channels(a)
    assert np.abs(c[0] - c[1]).max() < 0.03  # 0.02 rad apart, not 2π
    np.testing.assert_allclose(circular_channels(np.array([np.pi / 3]), period=3), [[-1.0, 0.0]], atol=1e-12)


def test_fisher_lee_correlation_signs_and_independence():
    rng = np.random.default_rng(0)
    a = rng.uniform(-np.pi, np.pi, 2000)
    assert circular_correlation(a, a + 2.0) == pytest.approx(1.0)
    assert circular_correlation(a, -a + 0.5) == pytest.approx(-1.0)
    assert abs(circular_correlation(a, rng.uniform(-np.pi, np.pi, 2000))) < 0.05


def test_aligned_agreement_is_invariant_to_offset_sign_and_fold():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 2 * np.pi / 3, 500)
    pred = -truth + 0.4 + (2 * np.pi / 3) * rng.integers(0, 3, 500)  # mirrored, offset, any of 3 symmetric copies
    r = aligned_angle_agreement(pred, truth, period=3)
    assert r["sign"] == -1 and r["mean_resultant_length"] == pytest.approx(1.0)
    assert r["median_abs_error_deg"] == pytest.approx(0.0, abs=1e-9) and r["circular_correlation"] == pytest.approx(1.0)
    noisy = aligned_angle_agreement(truth + rng.normal(0, np.radians(5), 500), truth, period=3)
    assert 2.0 < noisy["median_abs_error_deg"] < 6.0  # median |N(0, 5°)| ≈ 3.4°


def test_label_predictability_chance_and_separable():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    assert abs(label_predictability(rng.normal(size=(600, 2)), y) - 0.5) < 0.08
    assert label_predictability(np.c_[y + 0.1 * rng.normal(size=600), rng.normal(size=600)], y) > 0.97
    c = best_correlation(np.c_[rng.normal(size=600), 2 * y + 0.01 * rng.normal(size=600)], y.astype(float))
    assert c["column"] == 1 and c["abs_r"] > 0.99 and c["cv_r2_all_columns"] > 0.99


def test_defect_localisation_auc_and_distances():
    ny, nx, d = 20, 20, 0.5
    yy, xx = np.mgrid[0:ny, 0:nx] * d
    positions = np.c_[xx.ravel(), yy.ravel()]
    defects = np.array([[2.0, 2.0], [7.0, 6.25]])  # the second between two scan rows
    from kernels.geometry import periodic_delta

    dist = np.min([np.hypot(*periodic_delta(positions, q[None], (10.0, 10.0)).T) for q in defects], axis=0)
    perfect = -dist.reshape(ny, nx)
    r = defect_localisation(perfect, dist, 1.0, 3.0, positions, defects, (10.0, 10.0))
    assert r["roc_auc"] == pytest.approx(1.0) and r["strongest_distance_angstrom"] == 0.0
    assert r["per_defect_distance_angstrom"] == [0.0, 0.25]
    rng = np.random.default_rng(0)
    assert abs(defect_localisation(rng.random((ny, nx)), dist, 1.0, 3.0)["roc_auc"] - 0.5) < 0.15


def test_uncertain_angles_are_shrunk_by_their_mean_resultant_length():
    a = np.array([0.3, 0.3])
    c = circular_channels(a, period=2, angle_std=np.array([0.0, 10.0]))
    np.testing.assert_allclose(c[0], [np.cos(0.6), np.sin(0.6)])
    assert np.abs(c[1]).max() < 1e-10  # a uniform posterior says nothing


def test_smoothing_wraps_a_periodic_scan():
    from rvae.maps import smooth

    m = np.zeros((8, 8))
    m[0, 0] = 1.0
    s = smooth(m, 1.0)
    assert s.sum() == pytest.approx(1.0) and s[-1, -1] == pytest.approx(s[1, 1])
