"""Once a frame's sublattices are assigned, each site's class probabilities are restricted to its sublattice's
classes (``inference.site_classes.restrict_to_sublattice``): exact values, renormalisation, masked classes."""
from __future__ import annotations

import numpy as np

from contract.classes import CLASS_IDS, METAL
from inference.site_classes import restrict_to_sublattice


def test_probabilities_restricted_to_the_sites_sublattice():
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
