"""The measured plane group (kernels.planegroup_deviation): every group's noiseless images score their own group,
exact symmetries give zero residual, the answer does not change when the image is turned or mirrored, metric and
pseudo-translation special cases, bad input."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from contract import planegroups as pg
from kernels.planegroup_deviation import classify_plane_group, lattice_isometries
from simulate.planegroups_render import draw_image, render_pattern

DEMO = Path(__file__).resolve().parents[1] / "configs" / "dataset" / "planegroups-demo.yaml"


def demo_config() -> dict:
    from simulate.planegroups import load_config

    return load_config(DEMO)


def lattice_image(basis, frac, heights, size=96, sigma=1.0, origin=(40.3, 37.7)) -> np.ndarray:
    """Gaussian atoms at fractional positions ``frac`` (n, 2) of every cell of ``basis`` (rows, px)."""
    basis = np.asarray(basis, float)
    n = int(np.ceil(2 * size / min(np.hypot(*basis.T)))) + 2
    cells = np.array([(i, j) for i in range(-n, n + 1) for j in range(-n, n + 1)], float)
    pos = ((cells[:, None, :] + np.asarray(frac, float)[None]) @ basis).reshape(-1, 2) + np.asarray(origin)
    h = np.tile(np.asarray(heights, float), len(cells))
    return render_pattern(size, pos, h, np.full(len(h), sigma), "gaussian", 2.0, 5)


@pytest.mark.parametrize("name", pg.PLANE_GROUPS)
def test_noiseless_images_of_every_group_score_their_own_group(name):
    cfg = demo_config()
    rng = np.random.default_rng(100 + pg.plane_group_id(name))
    for _ in range(2):
        r = draw_image(rng, name, cfg)
        got = classify_plane_group(r.clean, r.lattice_px)
        assert got.plane_group == r.symmetry.plane_group, (got.plane_group, got.runner_up, r.structure.description())


def test_an_exact_symmetry_has_zero_residual_and_the_group_is_complete():
    img = lattice_image([[12.0, 0.0], [0.0, 12.0]], [[0, 0], [0.5, 0], [0, 0.5]], [1.0, 0.5, 0.5])
    r = classify_plane_group(img)
    assert r.plane_group == "p4mm"
    assert len(r.operations) == 8
    assert max(op.residual for op in r.operations) < 1e-3
    assert {op.kind for op in r.operations} == {"identity", "rotation", "mirror"}
    assert r.deviation["p1"] == 0.0 and r.deviation["p4mm"] < 1e-3


def test_glides_are_told_from_mirrors():
    # p2gg: atoms at (x, y), (-x, -y), (1/2 - x, 1/2 + y), (1/2 + x, 1/2 - y) of a 14 x 10 px rectangle
    x, y = 0.15, 0.2
    frac = [[x, y], [-x, -y], [0.5 - x, 0.5 + y], [0.5 + x, 0.5 - y]]
    r = classify_plane_group(lattice_image([[14.0, 0.0], [0.0, 10.0]], frac, [1.0] * 4))
    assert r.plane_group == "p2gg"
    assert sorted(op.kind for op in r.operations) == ["glide", "glide", "identity", "rotation"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_turning_or_mirroring_the_image_keeps_the_group(seed):
    cfg = demo_config()
    rng = np.random.default_rng(seed)
    r = draw_image(rng, pg.PLANE_GROUPS[(5 * seed + 3) % 17], cfg)
    img = r.image.astype(np.float64)
    base = classify_plane_group(img)
    for turned in (np.rot90(img, 1), np.rot90(img, 2), np.rot90(img, 3), img.T, img[:, ::-1]):
        got = classify_plane_group(turned)
        assert got.plane_group == base.plane_group
        assert got.criterion[got.plane_group] == pytest.approx(base.criterion[base.plane_group], rel=1e-4, abs=1e-9)


def test_a_near_square_lattice_is_not_forced_square():
    # one atom per cell on a 12 x 12.6 px rectangle: fractional coordinates are 4-fold symmetric, the metric is not
    img = lattice_image([[12.0, 0.0], [0.0, 12.6]], [[0, 0]], [1.0])
    r = classify_plane_group(img)
    assert r.isometries == 4
    assert r.plane_group == "p2mm"
    square = lattice_image([[12.0, 0.0], [0.0, 12.0]], [[0, 0]], [1.0])
    assert classify_plane_group(square).plane_group == "p4mm"


def test_a_pseudo_translation_sub_cell_is_undone():
    # a 14 x 10 rectangle with a brighter atom at the corner and a dimmer one at the centre: p2mm, whose
    # centred sub-cell (half the area) the autocorrelation may take for the cell
    img = lattice_image([[14.0, 0.0], [0.0, 10.0]], [[0, 0], [0.5, 0.5]], [1.0, 0.75])
    r = classify_plane_group(img, basis_px=[[7.0, 5.0], [7.0, -5.0]])
    assert r.superlattice == 2
    assert abs(np.linalg.det(r.basis_px)) == pytest.approx(140.0, rel=0.01)
    assert r.plane_group == "p2mm"


@pytest.mark.parametrize("basis, order", [
    ([[10.0, 0.0], [3.0, 13.0]], 2),  # oblique
    ([[10.0, 0.0], [0.0, 16.0]], 4),  # rectangular
    ([[10.0, 0.0], [5.0, 11.0]], 4),  # rhombic primitive cell of a centred rectangular lattice (|b| = |b - a|)
    ([[10.0, 0.0], [0.0, 10.0]], 8),  # square
    ([[10.0, 0.0], [-5.0, 5.0 * np.sqrt(3)]], 12),  # hexagonal
])
def test_lattice_isometries_per_lattice_system(basis, order):
    isos = lattice_isometries(np.array(basis))
    assert len(isos) == order
    assert np.array_equal(isos[0], np.eye(2, dtype=int))


def test_result_shapes_and_ranges():
    img = lattice_image([[11.0, 0.0], [-5.5, 9.526]], [[0, 0], [1 / 3, 2 / 3]], [1.0, 0.6])
    r = classify_plane_group(img)
    assert r.plane_group in pg.PLANE_GROUPS and r.runner_up in pg.PLANE_GROUPS and r.runner_up != r.plane_group
    assert r.plane_group == "p3m1"
    assert r.basis_px.shape == (2, 2) and r.origin.shape == (2,)
    assert r.motif.ndim == 2 and r.motif.shape[0] == r.motif.shape[1] >= 48
    assert set(r.criterion) == set(r.deviation) and "p1" in r.criterion
    assert all(0.0 <= v <= 2.0 for v in r.deviation.values())
    assert r.noise >= 0 and r.n_coefficients > 10 and r.n_cells > 10


@pytest.mark.parametrize("image, message", [
    (np.zeros(50), "must be \\(H, W\\)"),
    (np.full((64, 64), np.nan), "NaN"),
    (np.random.default_rng(0).normal(size=(96, 96)), "lattice"),
])
def test_bad_input_raises_value_error(image, message):
    with pytest.raises(ValueError, match=message):
        classify_plane_group(image)


def test_a_cell_too_large_for_the_image_is_refused():
    img = lattice_image([[12.0, 0.0], [0.0, 12.0]], [[0, 0]], [1.0], size=40)
    with pytest.raises(ValueError, match="too large"):
        classify_plane_group(img, basis_px=[[30.0, 0.0], [0.0, 12.0]], refine=False)


def test_inference_phase_deviation_writes_summary_and_figure(tmp_path):
    import json
    import subprocess
    import sys

    img = lattice_image([[12.0, 0.0], [0.0, 12.0]], [[0, 0], [0.5, 0], [0, 0.5]], [1.0, 0.5, 0.5])
    np.save(tmp_path / "frame.npy", (200 * img).astype(np.float32))
    np.save(tmp_path / "flat.npy", np.random.default_rng(0).normal(100, 10, (96, 96)).astype(np.float32))
    repo = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-m", "inference", "phase", str(tmp_path / "frame.npy"), "--method",
                          "deviation", "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=repo)
    assert run.returncode == 0, run.stderr
    summary = json.loads((tmp_path / "out" / "frame" / "summary.json").read_text())
    assert summary["plane_group"] == "p4mm" and summary["runner_up"] != "p4mm"
    assert summary["criterion"] <= summary["runner_up_criterion"]  # same cell here
    assert len(summary["operations"]) == 8 and {"residual", "noise_expected_residual"} <= set(summary["operations"][0])
    assert summary["noise"] >= 0 and (tmp_path / "out" / "frame" / "cell_average.png").stat().st_size > 1000
    run = subprocess.run([sys.executable, "-m", "inference", "phase", str(tmp_path / "flat.npy"), "--method",
                          "deviation", "--out", str(tmp_path / "out2")], capture_output=True, text=True, cwd=repo)
    assert run.returncode == 2 and "no plane group measured" in run.stderr
    # the measured group is the default without a checkpoint; the CNN needs one
    run = subprocess.run([sys.executable, "-m", "inference", "phase", str(tmp_path / "frame.npy"), "--out",
                          str(tmp_path / "out3")], capture_output=True, text=True, cwd=repo)
    assert run.returncode == 0 and json.loads((tmp_path / "out3" / "frame" / "summary.json").read_text())[
        "plane_group"] == "p4mm"
    run = subprocess.run([sys.executable, "-m", "inference", "phase", str(tmp_path / "frame.npy"), "--method", "cnn",
                          "--out", str(tmp_path / "out4")], capture_output=True, text=True, cwd=repo)
    assert run.returncode == 2 and "--model" in run.stderr
