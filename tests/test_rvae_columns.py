"""Columns of ADF frames of any lattice (the project's peak finder, in Å), sub-images with border flags."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from rvae.columns import cut_subimages, find_columns
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


def test_columns_of_the_rendered_field_are_the_peak_finders_in_angstrom():
    from kernels.lattice import find_peaks

    spec = FieldSpec(size_px=192)
    image, truth = two_grain_field(spec, np.random.default_rng(3))
    found = find_columns(image, spec.pixel_size_angstrom, min_distance_angstrom=1.2, smooth_sigma_angstrom=0.2)
    peaks, _ = find_peaks(image, 1.2 / spec.pixel_size_angstrom, 0.2 / spec.pixel_size_angstrom)
    np.testing.assert_array_equal(found, peaks)
    d = cKDTree(np.c_[truth["y_px"], truth["x_px"]]).query(found)[0]
    assert len(found) > 150 and np.median(d) < 0.2  # row jitter of 0.3 px included
    with pytest.raises(ValueError, match="pixel size"):
        find_columns(image, 0.0)


def test_cut_subimages_centres_columns_and_flags_the_border():
    img = render([(20.0, 20.0), (3.0, 30.0)], (40, 40), 1.2)
    items, border = cut_subimages(img, np.array([[20.0, 20.0], [3.0, 30.0]]), window_angstrom=2.0,
                                  pixel_size_angstrom=0.2, size_px=11)
    assert items.shape == (2, 11, 11) and items.dtype == np.float32
    assert border.tolist() == [False, True]
    assert np.unravel_index(np.argmax(items[0]), (11, 11)) == (5, 5)
    with pytest.raises(ValueError, match="odd"):
        cut_subimages(img, np.array([[20.0, 20.0]]), 2.0, 0.2, 10)
