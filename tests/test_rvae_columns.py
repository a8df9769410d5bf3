"""Columns of ADF frames of any lattice, batched sub-pixel refinement, sub-images with border flags."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from rvae.columns import cut_subimages, find_columns, refine_positions
from rvae.synthetic import FieldSpec, two_grain_field


def render(positions_rc, shape, sigma_px, amplitude=1.0):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    img = np.zeros(shape)
    for r, c in positions_rc:
        img += amplitude * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma_px**2))
    return img


def test_square_lattice_columns_are_found_with_subpixel_accuracy():
    """Not a honeycomb: a rotated square lattice with noise; every interior column within 0.1 px."""
    rng = np.random.default_rng(0)
    t = np.radians(12)
    a = 9.3  # px
    ij = np.mgrid[-12:13, -12:13].reshape(2, -1).T
    pos = 64 + a * ij @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    pos = pos[(pos > 4).all(1) & (pos < 124).all(1)]
    img = rng.poisson(render(pos, (128, 128), 1.6) * 200 + 20).astype(float)
    found = find_columns(img, pixel_size_angstrom=0.2, min_distance_angstrom=1.0, smooth_sigma_angstrom=0.2)
    d, _ = cKDTree(pos).query(found)
    assert len(found) == len(pos) and np.percentile(d, 95) < 0.15


def test_refinement_beats_the_parabola_on_the_rendered_field():
    from inference.lattice import find_peaks

    spec = FieldSpec(size_px=192)
    image, truth = two_grain_field(spec, np.random.default_rng(3))
    true_rc = np.c_[truth["y_px"], truth["x_px"]]
    raw = find_columns(image, spec.pixel_size_angstrom, refine=False)
    refined = find_columns(image, spec.pixel_size_angstrom, refine=True)
    d_raw = cKDTree(true_rc).query(raw)[0]
    d_ref = cKDTree(true_rc).query(refined)[0]
    assert len(raw) == len(refined) > 150
    assert np.median(d_ref) < 0.85 * np.median(d_raw)
    peaks, _ = find_peaks(image, 1.2 / spec.pixel_size_angstrom, 0.2 / spec.pixel_size_angstrom)
    np.testing.assert_allclose(raw, peaks)  # refine=False is exactly the project's peak finder


def test_refine_positions_contract():
    img = render([(10.3, 11.6)], (24, 24), 1.5)
    out = refine_positions(img, np.array([[10.0, 12.0]]), sigma_px=1.5)
    np.testing.assert_allclose(out, [[10.3, 11.6]], atol=0.05)
    assert refine_positions(img, np.zeros((0, 2)), 1.0).shape == (0, 2)
    far = refine_positions(img, np.array([[2.0, 2.0]]), sigma_px=1.0, max_step_px=0.5)
    assert np.hypot(*(far[0] - 2.0)) <= 0.5 + 1e-9  # never wanders off to another column
    with pytest.raises(ValueError, match="sigma_px"):
        refine_positions(img, np.array([[10.0, 12.0]]), sigma_px=0)


def test_cut_subimages_centres_columns_and_flags_the_border():
    img = render([(20.0, 20.0), (3.0, 30.0)], (40, 40), 1.2)
    items, border = cut_subimages(img, np.array([[20.0, 20.0], [3.0, 30.0]]), window_angstrom=2.0,
                                  pixel_size_angstrom=0.2, size_px=11)
    assert items.shape == (2, 11, 11) and items.dtype == np.float32
    assert border.tolist() == [False, True]
    assert np.unravel_index(np.argmax(items[0]), (11, 11)) == (5, 5)
    with pytest.raises(ValueError, match="odd"):
        cut_subimages(img, np.array([[20.0, 20.0]]), 2.0, 0.2, 10)
