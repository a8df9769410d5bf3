"""Contract of the context vector, the feature names and the site-symmetry flags."""
from __future__ import annotations

import numpy as np
import pytest

from contract.context import BEAM_ENERGIES_KEV, CONTEXT_SIZE
from contract.context import DETECTOR_NAMES as DETECTORS
from kernels.context import (
    beam_energy_one_hot,
    context_vector,
    detector_one_hot,
    feature_names,
    shell_fractions,
)
from kernels.site_symmetry import central_intensity, flags_from_sums, site_symmetry


# ------------------------------------------------------------------------------ shells
@pytest.mark.parametrize("symbol, shells", [
    ("W", (2, 8, 18, 32, 12, 2)),   # Z = 74; the paper's printed fifth value (0.108) is wrong
    ("Se", (2, 8, 18, 6, 0, 0)),    # Z = 34
    ("Mo", (2, 8, 18, 13, 1, 0)),   # Z = 42, 4d5 5s1: not naive filling
    ("S", (2, 8, 6, 0, 0, 0)),      # Z = 16
])
def test_shell_fractions_exact(symbol, shells):
    z = sum(shells)
    np.testing.assert_array_equal(np.asarray(shell_fractions(symbol)), np.asarray(shells) / z)


def test_tungsten_matches_corrected_paper_values():
    assert np.round(shell_fractions("W"), 3).tolist() == [0.027, 0.108, 0.243, 0.432, 0.162, 0.027]
    assert abs(sum(shell_fractions("W")) - 1.0) < 1e-12


def test_context_vector_layout():
    v = context_vector("W", "Se", "Mo", "MAADF", 100)
    assert v.shape == (CONTEXT_SIZE,) == (23,) and v.dtype == np.float32
    np.testing.assert_array_equal(v[0:6], np.float32(np.asarray(shell_fractions("W"))))
    np.testing.assert_array_equal(v[6:12], np.float32(np.asarray(shell_fractions("Se"))))
    np.testing.assert_array_equal(v[12:18], np.float32(np.asarray(shell_fractions("Mo"))))
    assert v[18:20].tolist() == [0, 1] and v[20:23].tolist() == [0, 0, 1]
    v = context_vector("Mo", "S", "W", "haadf", 60.0)  # detector case-insensitive, energy as float
    assert v[18:20].tolist() == [1, 0] and v[20:23].tolist() == [1, 0, 0]


def test_one_hots_are_one_hot():
    for i, d in enumerate(DETECTORS):
        assert detector_one_hot(d).tolist() == [float(j == i) for j in range(2)]
    for i, e in enumerate(BEAM_ENERGIES_KEV):
        assert beam_energy_one_hot(e).tolist() == [float(j == i) for j in range(3)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(detector="BF"), "unsupported detector 'BF'; supported detectors: HAADF, MAADF"),
    (dict(beam_energy_kev=200), r"unsupported beam_energy_kev 200; supported values \(keV\): 60, 80, 100"),
    (dict(beam_energy_kev="fast"), "unsupported beam_energy_kev 'fast'"),
    (dict(dopant="Xx"), "unknown element 'Xx'"),
    (dict(metal=""), "element symbol must be a non-empty string"),
])
def test_bad_context_inputs_raise_clear_errors(kwargs, match):
    args = dict(metal="W", chalcogen="Se", dopant="Cr", detector="HAADF", beam_energy_kev=80) | kwargs
    with pytest.raises(ValueError, match=match):
        context_vector(**args)


def test_feature_names():
    names = feature_names()
    assert len(names) == 31 == len(set(names))
    assert names[0] == "metal_shell_K_per_z" and names[17] == "dopant_shell_P_per_z"
    assert names[18:23] == ["detector_haadf", "detector_maadf", "beam_energy_60kev", "beam_energy_80kev",
                            "beam_energy_100kev"]
    assert names[23:29] == [f"zernike_n{n}_m0" for n in (0, 2, 4, 6, 8, 10)]
    assert names[29:] == ["site_brighter_sublattice", "site_dimmer_sublattice"]


# ------------------------------------------------------------------------------ site symmetry
def test_site_symmetry_brighter_sublattice_per_group():
    # group 0: metal brighter (HAADF-like); group 1: chalcogen brighter (MAADF reversal)
    intensity = np.array([10.0, 12.0, 5.0, 6.0, 3.0, 2.0, 9.0, 8.0])
    subl = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    group = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    out = site_symmetry(intensity, subl, group)
    assert out.shape == (8, 2) and out.dtype == np.float32
    assert out.tolist() == [[1, 0]] * 2 + [[0, 1]] * 2 + [[0, 1]] * 2 + [[1, 0]] * 2
    # without groups all patches are one group: metal mean 6.75 < chalcogen mean 7.0
    assert site_symmetry(intensity, subl).tolist() == [[0, 1]] * 2 + [[1, 0]] * 2 + [[0, 1]] * 2 + [[1, 0]] * 2


def test_site_symmetry_uses_means_not_sums():
    # three dim metal patches sum to more than one bright chalcogen patch, but their mean is lower
    out = site_symmetry([4.0, 4.0, 4.0, 10.0], [0, 0, 0, 1])
    assert out.tolist() == [[0, 1]] * 3 + [[1, 0]]


def test_site_symmetry_bad_inputs():
    with pytest.raises(ValueError, match="only one sublattice"):
        site_symmetry([1.0, 2.0], [0, 0])
    with pytest.raises(ValueError, match="0 \\(metal\\) or 1 \\(chalcogen\\)"):
        site_symmetry([1.0, 2.0], [0, 2])
    with pytest.raises(ValueError, match="one length"):
        site_symmetry([1.0, 2.0, 3.0], [0, 1])
    with pytest.raises(ValueError, match=r"central_intensities\[1\] is NaN"):
        site_symmetry([1.0, np.nan], [0, 1])


def test_flags_from_sums_matches_site_symmetry():
    table = flags_from_sums([[20.0, 11.0], [5.0, 17.0]], [[2, 2], [2, 2]])
    assert table.tolist() == [[[1, 0], [0, 1]], [[0, 1], [1, 0]]]


def test_central_intensity_reads_the_centre_block():
    p = np.zeros((2, 9, 9), dtype=np.float32)
    p[0, 3:6, 3:6] = 9.0
    p[1, 4, 4] = 9.0
    p[:, 0, :] = 100.0  # far from the centre: ignored
    np.testing.assert_allclose(central_intensity(p), [9.0, 1.0])
    np.testing.assert_allclose(central_intensity(p, radius_px=0), [9.0, 9.0])
