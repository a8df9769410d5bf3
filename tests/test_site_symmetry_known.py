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


def test_probabilities_restricted_to_the_sites_sublattice():
    from contract.classes import CLASS_IDS, METAL
    from inference.site_classes import restrict_to_sublattice

    probs = np.array([[0.6, 0.1, 0.1, 0.1, 0.1],    # metal site, argmax X2: off its sublattice
                      [0.1, 0.1, 0.1, 0.6, 0.1],    # chalcogen site, argmax M: off
                      [0.7, 0.1, 0.1, 0.05, 0.05],  # chalcogen site, argmax X2: on
                      [1.0, 0.0, 0.0, 0.0, 0.0]])   # metal site whose M and D underflowed
    sub = np.array([METAL, 1 - METAL, 1 - METAL, METAL])
    out, off = restrict_to_sublattice(probs, sub)
    assert off.tolist() == [True, True, False, True]
    assert np.allclose(out.sum(axis=1), 1)
    m, d = CLASS_IDS["M"], CLASS_IDS["D"]
    assert np.allclose(out[0], [0, 0, 0, 0.5, 0.5]) and np.allclose(out[3], [0, 0, 0, 0.5, 0.5])
    assert np.allclose(out[1], [1 / 3, 1 / 3, 1 / 3, 0, 0]) and out[2].argmax() == CLASS_IDS["X2"]
    # undoped: D stays impossible, even on the underflowed row
    out, _ = restrict_to_sublattice(probs, sub, masked_classes=[d])
    assert out[3, m] == 1 and (out[:, d] == 0).all()
