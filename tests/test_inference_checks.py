"""The class-order and site-symmetry checks of a classified frame (inference.checks): exact properties."""
from __future__ import annotations

import json

import numpy as np
import pytest

from inference.checks import class_order_check, describe_violations, expected_order, site_symmetry_check


def _frame(means: dict, n=20, noise=0.02, seed=0):
    rng = np.random.default_rng(seed)
    label = np.repeat([0, 1, 2, 3, 4], n)
    centre = np.array([means[c] for c in label]) * (1 + noise * rng.standard_normal(len(label)))
    return centre, label


def test_physical_order_passes_and_is_json():
    centre, label = _frame({0: 1.0, 1: 0.5, 2: 0.05, 3: 1.3, 4: 0.6})
    check = class_order_check(centre, label, metal="W", dopant="V", detector="HAADF")
    assert check["ok"] and len(check["checked"]) == 3
    json.dumps(check, allow_nan=False)


def test_single_vacancy_as_bright_as_x2_is_flagged():
    # a model calling intact columns single vacancies: 'VacX' as bright as X2
    centre, label = _frame({0: 1.0, 1: 1.0, 2: 0.05, 3: 1.3, 4: 0.6})
    check = class_order_check(centre, label, metal="W", dopant="V", detector="HAADF")
    assert not check["ok"] and [(v["brighter"], v["dimmer"]) for v in check["violations"]] == [("X2", "VacX")]
    assert "VacX not dimmer than X2" in describe_violations(check)


@pytest.mark.parametrize("dopant, detector, pair", [("V", "HAADF", ("M", "D")), ("Re", "HAADF", None),
                                                     ("V", "MAADF", None), ("none", "HAADF", None),
                                                     (None, "HAADF", None)])
def test_dopant_order_only_where_physics_fixes_it(dopant, detector, pair):
    pairs = [(b, d) for b, d, _ in expected_order("W", dopant, detector)]
    assert ("X2", "VacX") in pairs and ("VacX", "VacX2") in pairs
    assert (pair in pairs) if pair else len(pairs) == 2 + (dopant == "Re" and detector == "HAADF")
    if dopant == "Re":  # heavier than W (75 > 74): brighter
        assert ("D", "M") in pairs


def test_light_dopant_brighter_than_metal_in_haadf_is_flagged():
    centre, label = _frame({0: 1.0, 1: 0.5, 2: 0.05, 3: 1.3, 4: 1.5})
    check = class_order_check(centre, label, metal="W", dopant="V", detector="HAADF")
    assert [(v["brighter"], v["dimmer"]) for v in check["violations"]] == [("M", "D")]
    # in MAADF the same means are not judged on the metal sublattice
    assert class_order_check(centre, label, metal="W", dopant="V", detector="MAADF")["ok"]


def test_classes_with_few_sites_are_not_judged():
    centre, label = _frame({0: 1.0, 1: 1.2, 2: 0.05, 3: 1.3, 4: 0.6})
    keep = (label != 1) | (np.arange(len(label)) % 20 < 2)  # two VacX sites only
    check = class_order_check(centre[keep], label[keep], metal="W", dopant="V", detector="HAADF")
    assert check["ok"] and check["class_means"]["VacX"]["n"] == 2
    assert all(r["dimmer"] != "VacX" and r["brighter"] != "VacX" for r in check["checked"])


def test_site_symmetry_check():
    centre = np.array([1.0] * 10 + [1.3] * 10)
    sub = np.array([0] * 10 + [1] * 10)  # the chalcogen typical column brighter (MAADF-like)
    chk = site_symmetry_check(centre, sub, {"brighter_sublattice": "chalcogen", "metal_to_chalcogen_intensity": 0.8})
    assert chk["agree"] is True and chk["frame_metal_to_chalcogen_intensity"] == pytest.approx(1 / 1.3)
    assert site_symmetry_check(centre, sub, {"brighter_sublattice": "metal"})["agree"] is False
    assert site_symmetry_check(centre, sub, None)["agree"] is None


def test_contrast_above_background_against_the_model():
    from inference.checks import CONTRAST_SPREAD_LOG
    from inference.summary import report_warnings

    sub = np.array([0] * 50 + [1] * 50)
    rng = np.random.default_rng(3)
    # a raw-count frame on a DC offset of 3e6 (as the DigiScan MoS2 frame): metal 2.0x the chalcogen above it
    centre = 3e6 + np.where(sub == 0, 2000.0, 1000.0) + rng.normal(0, 20, 100)
    case = {"brighter_sublattice": "metal", "metal_to_chalcogen_intensity": 2.05}
    chk = site_symmetry_check(centre, sub, case, background=3e6)
    assert chk["frame_metal_to_chalcogen_intensity"] == pytest.approx(1.0, abs=0.01)  # the offset hides it
    assert chk["frame_metal_to_chalcogen_above_background"] == pytest.approx(2.0, rel=0.03)
    assert chk["contrast_within_simulated_spread"] is True
    assert not any(w.startswith("CONTRAST") for w in report_warnings({"site_symmetry_check": chk}))
    # a model whose case contrast is 1.38 (static 100 keV WSe2) on a frame at 2.0: beyond the simulated spread
    chk = site_symmetry_check(centre, sub, {**case, "metal_to_chalcogen_intensity": 1.38}, background=3e6)
    assert chk["log_contrast_gap"] == pytest.approx(np.log(2.0 / 1.38), abs=0.03)
    assert chk["log_contrast_gap"] > CONTRAST_SPREAD_LOG
    assert chk["contrast_within_simulated_spread"] is False
    assert any(w.startswith("CONTRAST") for w in report_warnings({"site_symmetry_check": chk}))
    # not compared without a background (MAADF), nor above the columns
    assert site_symmetry_check(centre, sub, case)["contrast_within_simulated_spread"] is None
    assert site_symmetry_check(centre, sub, case, background=4e6)["contrast_within_simulated_spread"] is None
