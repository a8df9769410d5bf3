"""The pixel-size rule of ``inference.calibration`` (pure), and the lattice measurement it leans on: a rendered
honeycomb at a known pixel size gives its lattice constant far inside ``PIXEL_SIZE_TOLERANCE``."""
from __future__ import annotations

import numpy as np
import pytest

from inference.calibration import PIXEL_SIZE_TOLERANCE, choose_pixel_size
from inference.classify import locate_sites
from tests.inference_fixtures import render_specimen

A_WSE2 = 3.282


def test_file_calibration_within_tolerance_is_used():
    a_px = 40.0  # true pixel size 3.282 / 40 = 0.08205 Å
    c = choose_pixel_size(a_px, A_WSE2, file_pixel_size_angstrom=0.0835, file_source="ImageJ scale", host="WSe2")
    assert c.source == "file" and c.pixel_size_angstrom == 0.0835 and c.warning is None
    assert c.deviation == pytest.approx(40 * 0.0835 / A_WSE2 - 1) and "ImageJ scale" in c.reason


@pytest.mark.parametrize("file_px", [0.078125, 0.0900])  # -4.8 % and +9.7 %
def test_file_calibration_off_is_replaced_by_the_lattice(file_px):
    c = choose_pixel_size(40.0, A_WSE2, file_pixel_size_angstrom=file_px, file_source="ImageJ scale", host="WSe2")
    assert c.source == "lattice" and c.pixel_size_angstrom == pytest.approx(A_WSE2 / 40)
    assert abs(c.deviation) > PIXEL_SIZE_TOLERANCE and c.file_pixel_size_angstrom == file_px
    assert "differs from the catalog" in c.warning and "derived from the lattice" in c.reason


def test_option_is_the_users_word_used_with_a_warning():
    c = choose_pixel_size(40.0, A_WSE2, option_pixel_size_angstrom=0.09, file_pixel_size_angstrom=0.08205)
    assert c.source == "option" and c.pixel_size_angstrom == 0.09
    assert "used as given" in c.warning and "differs from the catalog" in c.warning
    quiet = choose_pixel_size(40.0, A_WSE2, option_pixel_size_angstrom=0.0822)
    assert quiet.source == "option" and quiet.warning is None


def test_nothing_given_derives_it_from_the_lattice():
    c = choose_pixel_size(25.0, 3.16)
    assert c.source == "lattice" and c.pixel_size_angstrom == pytest.approx(0.1264) and c.deviation is None
    assert c.as_dict()["lattice_pixel_size_angstrom"] == pytest.approx(0.1264)
    with pytest.raises(ValueError):
        choose_pixel_size(0.0, 3.16)


@pytest.mark.parametrize("pixel, angle, a", [(0.08, 33, 3.282), (0.127, 5, 3.16), (0.2, 12, 3.55)])
def test_lattice_measurement_is_far_finer_than_the_tolerance(pixel, angle, a):
    """Rendered honeycombs with vacancies and Poisson noise: the lattice constant to < 0.3 % (measured 0.02-0.04 %),
    a tenth of the tolerance."""
    img, *_ = render_specimen(50, pixel, a_angstrom=a, angle_deg=angle, empty_fraction=0.05)
    img = np.random.default_rng(1).poisson(img * 50).astype(float)
    a_px = locate_sites(img).lattice_constant_px
    assert abs(a_px * pixel / a - 1) < 0.1 * PIXEL_SIZE_TOLERANCE
    assert choose_pixel_size(a_px, a, file_pixel_size_angstrom=pixel).source == "file"
