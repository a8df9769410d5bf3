"""Contract of the dense symmetry maps (kernels.symmetry) and the cell measurement (kernels.cell).

Parity with motif-learn 0.1.2 (the authors' library, a test-only dependency), the exact properties the maps
must have (90-degree rotations, mirrors, axis rotation by 2 phi, n-fold centres, offset and scale invariance),
bad input, NumPy vs CuPy vs torch, the dihedral augmentation, and the command line.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from contract.planegroups import SYMMETRY_MAP_NAMES
from kernels.cell import measure_cell, reduce_basis
from kernels.symmetry import (
    CONVENTIONS,
    MIRROR_ANGLES,
    dense_moments,
    dihedral_transform,
    kernel_px_for_cell,
    maps_from_moments,
    symmetry_kernels_host,
    symmetry_maps,
    symmetry_moment_table,
    valid_mask,
)

MOTIF_TOL = {np.float64: 1e-6, np.float32: 1e-4}


def lattice_image(size=(61, 67), a=9.0, phase=0.3, sigma=1.3, seed=0, offset=50.0, dose=40.0, hexagonal=True,
                  centre=None):
    """A noisy lattice with two species (no exact symmetry on the pixel grid), counts + offset, float64."""
    rng = np.random.default_rng(seed)
    h, w = size
    y, x = np.mgrid[:h, :w].astype(float)
    g = 2 * np.pi / 3 if hexagonal else np.pi / 2
    a1 = a * np.array([np.cos(phase), np.sin(phase)])
    a2 = a * np.array([np.cos(phase + g), np.sin(phase + g)])
    c0 = np.array([w / 2, h / 2]) if centre is None else np.asarray(centre, float)
    img = np.zeros((h, w))
    n = int(max(h, w) / a) + 3
    for i in range(-n, n + 1):
        for j in range(-n, n + 1):
            for frac, amp in (((0.0, 0.0), 1.0), ((1 / 3, 2 / 3), 0.55)) if hexagonal else (((0.0, 0.0), 1.0),):
                p = c0 + (i + frac[0]) * a1 + (j + frac[1]) * a2
                img += amp * np.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2) / (2 * sigma ** 2))
    if dose is None:
        return img + offset
    return rng.poisson(img * dose).astype(float) + offset


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("kernel_px", [11, 15, 21])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_motif_convention_matches_motif_learn(kernel_px, dtype):
    mtf = pytest.importorskip("mtflearn.features", reason="motif-learn is the test-only reference")
    img = lattice_image(seed=kernel_px)
    with pytest.warns(UserWarning) if 10 > kernel_px / 2 else _nothing():
        zm = mtf.ZPs(n_max=10, size=kernel_px).transform(img)
    rot = zm.rot_maps([2, 3, 4, 6])
    mirror = zm.mirror_map()
    maps = symmetry_maps(img.astype(dtype), kernel_px, 10, "motif", dtype)
    assert maps.dtype == dtype and maps.shape == (7, *img.shape)
    tol = MOTIF_TOL[dtype]
    np.testing.assert_allclose(maps[:4], rot, atol=tol, rtol=0)
    np.testing.assert_allclose(maps[4], mirror, atol=tol, rtol=0)


def test_motif_moments_are_motif_learns_moments():
    mtf = pytest.importorskip("mtflearn.features")
    img = lattice_image(seed=3)
    zm = mtf.ZPs(n_max=8, size=17).transform(img).unselect((0, 1))
    ours = dense_moments(img, 17, 8, "motif", np.float64)
    table = symmetry_moment_table(8)
    theirs = {(int(n), int(m)): zm.data[i] for i, (n, m) in enumerate(zip(zm.n, zm.m))}
    for row, (n, m) in enumerate(table.tolist()):
        np.testing.assert_allclose(ours[row], theirs[(n, m)], atol=1e-10)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------------------------------------- exact properties
def _near_tie(moments, n_max=10, margin=1e-7):
    """Pixels whose two best mirror angles are within ``margin`` (their argmax is genuinely ambiguous)."""
    table = symmetry_moment_table(n_max)
    a = moments.reshape(len(table), -1)
    norm = (a * a).sum(0)
    t = np.linspace(0, 2 * np.pi, 4 * MIRROR_ANGLES, endpoint=False)
    g = np.zeros((len(t), a.shape[1]))
    rows = {tuple(r): i for i, r in enumerate(table.tolist())}
    for (n, m), i in rows.items():
        if m >= 2:
            c = a[i] + 1j * a[rows[(n, -m)]]
            g += np.real((c * c)[None] * np.exp(-1j * m * t)[:, None])
    g /= norm
    top = np.sort(g, axis=0)
    # the best and the best value more than one grid step away
    best = g.argmax(0)
    far = np.abs(((np.arange(len(t))[:, None] - best[None]) + len(t) // 2) % len(t) - len(t) // 2) > 8
    second = np.where(far, g, -np.inf).max(0)
    return (top[-1] - second < margin).reshape(moments.shape[1:])


@pytest.mark.parametrize("convention", CONVENTIONS)
@pytest.mark.parametrize("turns", [1, 2, 3])
def test_rotating_the_image_by_90_degrees_rotates_the_maps(convention, turns):
    img = np.random.default_rng(turns).normal(size=(40, 46)) + 3.0
    k = 13
    maps = symmetry_maps(img, k, 10, convention, np.float64)
    rotated = symmetry_maps(np.rot90(img, turns), k, 10, convention, np.float64)
    _, expected = dihedral_transform(img, maps, turns)
    # everything but the axis channels exactly; the axis where the best angle is unique
    np.testing.assert_allclose(rotated[:5], expected[:5], atol=1e-10)
    tie = np.rot90(_near_tie(dense_moments(img, k, 10, convention, np.float64)), turns)
    assert tie.mean() < 0.01
    np.testing.assert_allclose(rotated[5:, ~tie], expected[5:, ~tie], atol=1e-8)
    # a quarter turn moves 2 alpha by 180 degrees: both axis channels change sign
    if turns % 2:
        np.testing.assert_allclose(np.rot90(maps[5:], turns, axes=(1, 2))[:, ~tie], -rotated[5:, ~tie], atol=1e-8)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_mirroring_the_image_flips_sin_2alpha(convention):
    img = np.random.default_rng(7).normal(size=(36, 41)) + 1.0
    maps = symmetry_maps(img, 11, 10, convention, np.float64)
    mirrored = symmetry_maps(img[:, ::-1], 11, 10, convention, np.float64)
    tie = _near_tie(dense_moments(img, 11, 10, convention, np.float64))[:, ::-1]
    np.testing.assert_allclose(mirrored[:5], maps[:5, :, ::-1], atol=1e-10)
    np.testing.assert_allclose(mirrored[5][~tie], -maps[5, :, ::-1][~tie], atol=1e-8)
    np.testing.assert_allclose(mirrored[6][~tie], maps[6, :, ::-1][~tie], atol=1e-8)


@pytest.mark.parametrize("phi_deg", [17.0, 45.0, 101.3])
def test_axis_channels_rotate_by_twice_the_rotation(phi_deg):
    """Rotating a neighbourhood by phi multiplies c_nm by exp(i m phi) (continuum rotation of the moments):
    the mirror strength stays, the axis angle 2 alpha moves by 2 phi, the rotation maps stay."""
    rng = np.random.default_rng(1)
    table = symmetry_moment_table(10)
    moments = rng.normal(size=(len(table), 50))
    rows = {tuple(r): i for i, r in enumerate(table.tolist())}
    phi = np.deg2rad(phi_deg)
    turned = moments.copy()
    for (n, m), i in rows.items():
        if m >= 2:  # theta -> theta - phi for a pattern turned by +phi: c -> c exp(i m phi)
            c = (moments[i] + 1j * moments[rows[(n, -m)]]) * np.exp(1j * m * phi)
            turned[i], turned[rows[(n, -m)]] = c.real, c.imag
    a, b = maps_from_moments(moments), maps_from_moments(turned)
    np.testing.assert_allclose(b[:5], a[:5], atol=1e-9)
    angle_a = np.arctan2(a[5], a[6])
    angle_b = np.arctan2(b[5], b[6])
    diff = np.angle(np.exp(1j * (angle_b - angle_a - 2 * phi)))
    np.testing.assert_allclose(diff, 0, atol=1e-7)  # Newton-converged to ~1e-8 rad


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_perfect_two_and_four_fold_centres_score_one(convention):
    f = np.random.default_rng(2).normal(size=(41, 41))
    f4 = f + np.rot90(f) + np.rot90(f, 2) + np.rot90(f, 3)
    f2 = f + np.rot90(f, 2)
    m4 = symmetry_maps(f4, 21, 10, convention, np.float64)[:, 20, 20]
    m2 = symmetry_maps(f2, 21, 10, convention, np.float64)[:, 20, 20]
    assert m4[SYMMETRY_MAP_NAMES.index("rot4")] == pytest.approx(1.0, abs=1e-12)
    assert m4[SYMMETRY_MAP_NAMES.index("rot2")] == pytest.approx(1.0, abs=1e-12)
    assert m2[SYMMETRY_MAP_NAMES.index("rot2")] == pytest.approx(1.0, abs=1e-12)
    assert m2[SYMMETRY_MAP_NAMES.index("rot4")] < 0.9  # a random 2-fold pattern is not 4-fold


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_moments_with_only_multiples_of_n_score_exactly_one(n):
    table = symmetry_moment_table(10)
    moments = np.random.default_rng(n).normal(size=(len(table), 20))
    moments[np.abs(table[:, 1]) % n != 0] = 0
    maps = maps_from_moments(moments)
    np.testing.assert_allclose(maps[SYMMETRY_MAP_NAMES.index(f"rot{n}")], 1.0, atol=1e-12)


def test_three_and_six_fold_lattice_centres_score_near_one_with_a_large_kernel():
    """On the square pixel grid a hexagonal lattice is 6-fold only up to sampling: with a kernel reaching past
    the first neighbours the zero-mean maps read >= 0.99 at an atom (motif-learn's kernels read lower)."""
    y, x = np.mgrid[:81, :81].astype(float)
    img = np.zeros((81, 81))
    a1, a2 = 12 * np.array([1.0, 0.0]), 12 * np.array([0.5, np.sqrt(3) / 2])
    for i in range(-10, 11):
        for j in range(-10, 11):
            p = np.array([40.0, 40.0]) + i * a1 + j * a2
            img += np.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2) / (2 * 1.5 ** 2))
    maps = symmetry_maps(img, 31, 10, "zero-mean", np.float64)[:, 40, 40]
    assert maps[SYMMETRY_MAP_NAMES.index("rot6")] > 0.99
    assert maps[SYMMETRY_MAP_NAMES.index("rot3")] > 0.99
    assert maps[SYMMETRY_MAP_NAMES.index("mirror")] > 0.999


def test_mirror_symmetric_pattern_gives_mirror_one_and_its_axis():
    f = np.random.default_rng(4).normal(size=(31, 31))
    sym = f + f[:, ::-1]  # mirror line: the vertical column through the centre (alpha = 90 deg)
    m = symmetry_maps(sym, 21, 10, "zero-mean", np.float64)[:, 15, 15]
    assert m[SYMMETRY_MAP_NAMES.index("mirror")] == pytest.approx(1.0, abs=1e-9)
    assert m[SYMMETRY_MAP_NAMES.index("sin2a")] == pytest.approx(0.0, abs=1e-6)
    assert m[SYMMETRY_MAP_NAMES.index("cos2a")] == pytest.approx(-1.0, abs=1e-9)
    horizontal = f + f[::-1, :]  # mirror line along x: alpha = 0
    m = symmetry_maps(horizontal, 21, 10, "zero-mean", np.float64)[:, 15, 15]
    assert m[SYMMETRY_MAP_NAMES.index("cos2a")] == pytest.approx(1.0, abs=1e-9)


def test_refined_mirror_is_at_least_the_grid_maximum():
    img = lattice_image(seed=5)
    fine = symmetry_maps(img, 15, 10, "zero-mean", np.float64)
    moments = dense_moments(img, 15, 10, "zero-mean", np.float64)
    grid = maps_from_moments(moments, refine_axis=False)
    assert np.all(fine[4] >= grid[4] - 1e-12)
    assert np.max(fine[4] - grid[4]) < 1e-3  # within the grid cell of the maximum


# ---------------------------------------------------------------------------------------------- invariances
@pytest.mark.parametrize("offset", [1.0, 1e3, 1e6])
def test_zero_mean_maps_ignore_a_constant_offset(offset):
    img = lattice_image(seed=1, offset=0.0)
    a = symmetry_maps(img, 15, 10, "zero-mean", np.float64)
    b = symmetry_maps(img + offset, 15, 10, "zero-mean", np.float64)
    np.testing.assert_allclose(b, a, atol=1e-8)


def test_zero_mean_float32_keeps_offset_invariance_for_float64_frames():
    img = lattice_image(seed=1, offset=0.0)
    a = symmetry_maps(img, 15, 10, "zero-mean", np.float32)
    b = symmetry_maps(img + 1e6, 15, 10, "zero-mean", np.float32)  # the mean is removed in float64 first
    assert np.abs(b - a).max() < 1e-4


def test_motif_kernels_leak_an_offset_into_the_maps():
    """The reason for the default: motif-learn's m = 4, 8 kernels do not sum to zero on the discrete disk."""
    img = lattice_image(seed=1, offset=0.0, dose=None)
    a = symmetry_maps(img, 15, 10, "motif", np.float64)
    b = symmetry_maps(img + 1.0, 15, 10, "motif", np.float64)
    inner = valid_mask(img.shape, 15)
    assert np.abs(b - a)[:4, inner].max() > 0.1
    sums = symmetry_kernels_host(15, 10, "motif").sum(axis=(1, 2))
    m = np.abs(symmetry_moment_table(10)[:, 1])
    assert np.all(np.abs(sums[m % 4 != 0]) < 1e-12) and np.abs(sums[m % 4 == 0]).max() > 1e-3
    assert np.abs(symmetry_kernels_host(15, 10, "zero-mean").sum(axis=(1, 2))).max() < 1e-12


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_maps_are_invariant_to_a_positive_scale(convention):
    img = lattice_image(seed=2)
    a = symmetry_maps(img, 15, 10, convention, np.float64)
    b = symmetry_maps(img * 37.5, 15, 10, convention, np.float64)
    np.testing.assert_allclose(b, a, atol=1e-9)


def test_flat_image_has_no_axis_and_no_nan():
    maps = symmetry_maps(np.full((20, 20), 5.0), 9, 6, "zero-mean", np.float64)
    assert np.isfinite(maps).all()
    np.testing.assert_allclose(maps[5:], 0.0)
    np.testing.assert_allclose(maps[0], -1.0)  # rot2 = -1/(2-1): nothing in the multiples of 2


# ---------------------------------------------------------------------------------------------- shapes, input, devices
def test_shapes_batch_and_ranges():
    img = lattice_image()
    single = symmetry_maps(img.astype(np.float32), 13)
    batch = symmetry_maps(np.stack([img, img[::-1]]).astype(np.float32), 13)
    assert single.shape == (7, *img.shape) and single.dtype == np.float32
    assert batch.shape == (2, 7, *img.shape)
    np.testing.assert_allclose(batch[0], single, atol=1e-6)
    for n, row in zip((2, 3, 4, 6), range(4)):
        assert single[row].min() >= -1 / (n - 1) - 1e-5 and single[row].max() <= 1 + 1e-5
    assert np.abs(single[4:]).max() <= 1 + 1e-5
    np.testing.assert_allclose(single[5] ** 2 + single[6] ** 2, 1.0, atol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (dict(kernel_px=12), "odd"), (dict(kernel_px=5), "odd integer >= 7"), (dict(n_max=5), "n_max"),
    (dict(kernel_px=7, n_max=8), "too high"), (dict(convention="motif-learn"), "convention"),
])
def test_bad_parameters_are_refused(bad, match):
    args = dict(kernel_px=13, n_max=10, convention="zero-mean") | bad
    with pytest.raises(ValueError, match=match):
        symmetry_maps(np.zeros((30, 30)), args["kernel_px"], args["n_max"], args["convention"])


@pytest.mark.parametrize("image, match", [
    (np.zeros(30), "shape"), (np.zeros((1, 30)), "shape"), (np.full((20, 20), np.nan), "NaN"),
])
def test_bad_images_are_refused(image, match):
    with pytest.raises(ValueError, match=match):
        symmetry_maps(image, 9, 6)


def test_torch_tensors_go_through_the_same_code():
    torch = pytest.importorskip("torch")
    img = lattice_image().astype(np.float32)
    out = symmetry_maps(torch.from_numpy(img), 13)
    assert isinstance(out, torch.Tensor) and out.shape == (7, *img.shape)
    np.testing.assert_allclose(out.numpy(), symmetry_maps(img, 13), atol=1e-6)


@pytest.mark.gpu
def test_cupy_matches_numpy():
    cp = pytest.importorskip("cupy")
    img = lattice_image()
    for dtype, tol in ((np.float64, 1e-9), (np.float32, 1e-4)):
        gpu = symmetry_maps(cp.asarray(img, dtype=dtype), 15, 10, "zero-mean", dtype)
        assert isinstance(gpu, cp.ndarray)
        np.testing.assert_allclose(gpu.get()[:5], symmetry_maps(img, 15, 10, "zero-mean", dtype)[:5], atol=tol)


@pytest.mark.gpu
def test_torch_cuda_tensor_stays_on_device():
    torch = pytest.importorskip("torch")
    img = torch.from_numpy(lattice_image().astype(np.float32)).cuda()
    out = symmetry_maps(img, 13)
    assert out.is_cuda and out.shape == (7, *img.shape)


@pytest.mark.parametrize("turns", range(4))
@pytest.mark.parametrize("flip", [False, True])
def test_dihedral_transform_gives_the_maps_of_the_transformed_image(turns, flip):
    img = lattice_image(size=(41, 41), seed=turns)
    maps = symmetry_maps(img, 13, 10, "zero-mean", np.float64)
    t_img, t_maps = dihedral_transform(img, maps, turns, flip)
    direct = symmetry_maps(np.ascontiguousarray(t_img), 13, 10, "zero-mean", np.float64)
    tie = _near_tie(dense_moments(np.ascontiguousarray(t_img), 13, 10, "zero-mean", np.float64))
    np.testing.assert_allclose(direct[:5], t_maps[:5], atol=1e-9)
    np.testing.assert_allclose(direct[5:, ~tie], t_maps[5:, ~tie], atol=1e-7)
    torch = pytest.importorskip("torch")
    ti, tm = dihedral_transform(torch.from_numpy(img.copy()), torch.from_numpy(maps.copy()), turns, flip)
    np.testing.assert_allclose(tm.numpy(), t_maps, atol=1e-12)
    np.testing.assert_allclose(ti.numpy(), t_img, atol=0)


def test_valid_mask_marks_full_neighbourhoods():
    m = valid_mask((20, 30), 9)
    assert m.sum() == (20 - 8) * (30 - 8) and m[4, 4] and not m[3, 4] and not m[4, 26]


# ---------------------------------------------------------------------------------------------- cell and kernel size
@pytest.mark.parametrize("hexagonal, a, phase", [(True, 9.0, 0.3), (True, 13.0, 1.1), (False, 10.0, 0.6)])
def test_measure_cell_finds_the_primitive_cell(hexagonal, a, phase):
    img = lattice_image(size=(96, 96), a=a, phase=phase, hexagonal=hexagonal, dose=20.0, seed=11)
    cell = measure_cell(img)
    true_area = a * a * (np.sqrt(3) / 2 if hexagonal else 1.0)
    assert cell.area_px2 == pytest.approx(true_area, rel=0.04)
    assert sorted(cell.lengths_px) == pytest.approx([a, a], rel=0.04)


def test_measure_cell_refuses_noise():
    with pytest.raises(ValueError):
        measure_cell(np.random.default_rng(0).normal(size=(64, 64)))


def test_reduce_basis_gives_shortest_vectors():
    basis = reduce_basis(np.array([10.0, 0.0]), np.array([37.0, 8.0]))
    assert np.linalg.norm(basis[0]) == pytest.approx(8.0, rel=1e-9) or np.linalg.norm(basis[1]) <= 10.0 + 1e-9
    assert abs(np.linalg.det(basis)) == pytest.approx(80.0)


def test_kernel_px_for_cell_is_odd_and_about_two_and_a_half_cells():
    assert kernel_px_for_cell(10.0) == 25
    assert kernel_px_for_cell(10.4) % 2 == 1
    assert kernel_px_for_cell(1.0) == 7
    assert kernel_px_for_cell(40.0, max_px=40) == 39
    with pytest.raises(ValueError):
        kernel_px_for_cell(float("nan"))


# ---------------------------------------------------------------------------------------------- command line
def test_symmetry_command_writes_maps_and_figure(tmp_path, repo_root):
    img = lattice_image(size=(64, 70), dose=30.0)
    np.save(tmp_path / "frame.npy", img.astype(np.float32))
    out = tmp_path / "maps" / "frame.npz"
    run = subprocess.run([sys.executable, "-m", "features", "symmetry", str(tmp_path / "frame.npy"), "--kernel-px",
                          "21", "--out", str(out), "--plot"], cwd=repo_root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["kernel_px"] == 21 and out.with_suffix(".png").is_file()
    z = np.load(out)
    for name in SYMMETRY_MAP_NAMES:
        assert z[name].shape == img.shape and z[name].dtype == np.float32
    np.testing.assert_allclose(z["rot3"], symmetry_maps(img.astype(np.float32), 21)[1], atol=1e-6)
    assert z["valid"].sum() == (64 - 20) * (70 - 20)
    # no kernel given: measured from the cell (a = 9 px hexagonal -> sqrt(area) 8.4 px -> 21 px)
    run = subprocess.run([sys.executable, "-m", "features", "symmetry", str(tmp_path / "frame.npy"), "--out",
                          str(tmp_path / "auto.npz")], cwd=repo_root, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["kernel_px"] == 21


@pytest.mark.parametrize("args, message", [
    (["--kernel-px", "20"], "odd"),
    (["--n-max", "4"], "n_max"),
    ([], "--out"),
])
def test_symmetry_command_bad_input_exits_2(tmp_path, repo_root, args, message):
    np.save(tmp_path / "f.npy", lattice_image(size=(40, 40)).astype(np.float32))
    out = [] if message == "--out" else ["--out", str(tmp_path / "m.npz")]
    run = subprocess.run([sys.executable, "-m", "features", "symmetry", str(tmp_path / "f.npy"), *args, *out],
                         cwd=repo_root, capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and run.stderr.count("\n") == 1
