"""Site-symmetry flags of a context the model was trained on come from its training case
(``inference.site_classes.known_flags``): exact values, one-hot rows, and independence from the frame."""
from __future__ import annotations

import numpy as np
import pytest

from inference.site_classes import known_flags


@pytest.mark.parametrize("metal", [0, 1])
def test_flags_mark_the_known_brighter_sublattice(metal):
    fitted = np.array([0, 1, 1, 0, 1])
    on_metal = fitted == metal
    for brighter, expect_metal_flag in (("metal", [1, 0]), ("chalcogen", [0, 1])):
        f = known_flags(fitted, metal, brighter)
        assert f.shape == (5, 2) and f.dtype == np.float32
        assert (f.sum(axis=1) == 1).all()
        assert (f[on_metal] == expect_metal_flag).all() and (f[~on_metal] == expect_metal_flag[::-1]).all()


def test_swapping_the_metal_sublattice_swaps_every_flag():
    fitted = np.array([0, 1, 0, 1])
    assert np.array_equal(known_flags(fitted, 0, "metal"), known_flags(fitted, 1, "metal")[:, ::-1])
