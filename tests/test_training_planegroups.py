"""The phase classifier on the tiny plane-group store: identical arms, real Lightning fits of both arms on a
grouped fold, predictions, the comparison table, and ``python -m inference phase`` on image files."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from contract import planegroups as pg
from training.phase_data import PatchBatches, PlaneGroupDataModule, crop_offsets, make_patches, read_store
from training.phase_model import PhaseClassifier, PhaseCNN

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "dataset" / "planegroups-tiny.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from cluster import open_client
    from features.symmetry_store import map_store
    from simulate.planegroups import simulate_planegroups

    out = tmp_path_factory.mktemp("pgtrain") / "tiny.zarr"
    with open_client("local", n_workers=2) as client:
        simulate_planegroups(TINY, out, client=client)
        map_store(out, client)
    return out


def test_arms_differ_only_in_the_first_convolution():
    image, symmetry = PhaseClassifier("image"), PhaseClassifier("symmetry")
    n_image = sum(p.numel() for p in image.parameters())
    n_sym = sum(p.numel() for p in symmetry.parameters())
    assert n_sym - n_image == 7 * 16 * 9  # 7 more input channels x 16 filters x 3 x 3
    names = [(n, tuple(p.shape)) for n, p in image.named_parameters()]
    assert [n for n, _ in names] == [n for n, _ in symmetry.named_parameters()]


@pytest.mark.parametrize("size", [16, 48, 77])
def test_cnn_accepts_any_patch_size(size):
    out = PhaseCNN(8)(torch.zeros(2, 8, size, size))
    assert out.shape == (2, 17)


def test_bad_model_and_data_options():
    with pytest.raises(ValueError, match="model.arm"):
        PhaseClassifier("pixels")
    with pytest.raises(ValueError, match="data.arm"):
        PlaneGroupDataModule(arm="both")
    with pytest.raises(ValueError, match="test_fold"):
        PlaneGroupDataModule(n_folds=3, test_fold=3)


def test_crop_offsets_stay_in_the_valid_region():
    rng = np.random.default_rng(0)
    off = crop_offsets(112, 48, 21, 500, False, rng)
    assert off.min() >= 10 and off.max() <= 112 - 10 - 48
    grid = crop_offsets(112, 48, 21, 9, True)
    assert len(grid) == 9 and grid.min() == 10 and grid.max() == 54
    centred = crop_offsets(64, 48, 41, 4, False, rng)  # no room: centred
    assert np.all(centred == 8)


def test_augmented_patches_are_the_maps_of_the_transformed_patch(store):
    """The symmetry arm's augmentation transforms image and maps together: the axis channels of a flipped or
    turned patch equal the (transformed) axis channels, never a plain image rotation of them."""
    data = read_store(str(store), np.arange(4))
    images = torch.as_tensor(data["images"])
    maps = torch.as_tensor(data["maps"])
    off = np.array([[8, 8]])
    plain = make_patches(images, maps, np.array([0]), off, 48)[0]
    for k, f in ((1, 0), (2, 1), (3, 0), (0, 1)):
        t = make_patches(images, maps, np.array([0]), off, 48, np.array([[k, f]]))[0]
        turned = torch.rot90(plain, k, dims=(-2, -1))
        turned = torch.flip(turned, dims=(-1,)) if f else turned
        torch.testing.assert_close(t[:6], turned[:6])
        sign_sin = (-1) ** k * (-1 if f else 1)
        torch.testing.assert_close(t[6], sign_sin * turned[6])
        torch.testing.assert_close(t[7], (-1) ** k * turned[7])
    x = make_patches(images, None, np.array([0, 1]), np.array([[0, 0], [5, 5]]), 48)
    assert x.shape == (2, 1, 48, 48)
    assert abs(float(x[0].mean())) < 1e-5 and abs(float(x[0].std()) - 1) < 1e-3


def test_training_batches_are_seeded_and_cover_every_image(store):
    data = read_store(str(store), np.arange(12))
    a = list(PatchBatches(data, "symmetry", 32, 8, True, patches_per_image=2, seed=3))
    b = list(PatchBatches(data, "symmetry", 32, 8, True, patches_per_image=2, seed=3))
    assert len(a) == 3 and all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert sorted(torch.cat([y for _, y in a]).tolist()) == sorted(np.repeat(data["label"], 2).tolist())
    ev = list(PatchBatches(data, "image", 32, 50, False, eval_grid=2))
    assert sum(len(y) for _, y in ev) == 12 * 4


def test_missing_maps_are_reported(tmp_path):
    from contract.store import StoreError
    from simulate.planegroups import simulate_planegroups

    out = tmp_path / "nomaps.zarr"
    simulate_planegroups(TINY, out, n_workers=1)
    with pytest.raises(StoreError, match="features symmetry"):
        read_store(str(out))


@pytest.mark.slow
def test_demo_fits_both_arms_predicts_and_writes_the_comparison(store, tmp_path, one_torch_thread):
    from training.phase_evaluate import write_comparison
    from training.phase_kfold import run_demo

    out = tmp_path / "runs"
    extra = ["--trainer.max_epochs", "2", "--data.patch_size_px", "32", "--data.patches_per_image", "2",
             "--trainer.check_val_every_n_epoch", "1"]
    run_demo(str(store), out, config_dir=REPO / "configs" / "train" / "planegroups", extra=extra)
    for arm in ("image", "symmetry"):
        assert (out / arm / "checkpoints" / "last.ckpt").is_file()
        z = np.load(out / arm / "predictions.npz")
        assert z["patch_probs"].shape[1:] == (9, 17)
        np.testing.assert_allclose(z["patch_probs"].sum(-1), 1.0, atol=1e-5)
    a, b = np.load(out / "image" / "predictions.npz"), np.load(out / "symmetry" / "predictions.npz")
    assert np.array_equal(a["rows"], b["rows"])  # both arms see the same unseen structures
    text, result = write_comparison(out)
    assert "| image | 1 |" in text and "| symmetry | 8 |" in text
    assert (out / "comparison.json").is_file() and (out / "confusion.png").is_file()
    assert set(result["arms"]) == {"image", "symmetry"}
    run = subprocess.run([sys.executable, "-m", "training", "evaluate", "--runs", str(out), "--out",
                          str(tmp_path / "cmp")], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "cmp" / "comparison.md").read_text().startswith("| arm |")
    # a rerun skips runs whose predictions exist
    run_demo(str(store), out, config_dir=REPO / "configs" / "train" / "planegroups", extra=extra)

    # inference on image files of any size, one folder per file
    import zarr

    g = zarr.open_group(str(store), mode="r")
    np.save(tmp_path / "frame.npy", g[pg.IMAGES][3])
    big = np.tile(g[pg.IMAGES][5], (2, 3))  # 128 x 192
    np.save(tmp_path / "big.npy", big)
    ckpt = out / "symmetry" / "checkpoints" / "last.ckpt"
    run = subprocess.run([sys.executable, "-m", "inference", "phase", str(tmp_path / "frame.npy"),
                          str(tmp_path / "big.npy"), "--model", str(ckpt), "--out", str(tmp_path / "phase")],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for name, shape in (("frame", (64, 64)), ("big", (128, 192))):
        s = json.loads((tmp_path / "phase" / name / "summary.json").read_text())
        assert s["plane_group"] in pg.PLANE_GROUPS
        assert sum(s["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
        assert (tmp_path / "phase" / name / "plane_group_map.png").is_file()
        assert np.load(tmp_path / "phase" / name / "plane_group_map.npy").shape == shape
    np.save(tmp_path / "small.npy", np.random.default_rng(0).normal(size=(20, 20)).astype(np.float32))
    run = subprocess.run([sys.executable, "-m", "inference", "phase", str(tmp_path / "small.npy"), "--model",
                          str(ckpt), "--out", str(tmp_path / "phase")], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and "smaller" in run.stderr
    run = subprocess.run([sys.executable, "-m", "inference", "phase", str(tmp_path / "frame.npy"), "--model",
                          str(tmp_path / "frame.npy"), "--out", str(tmp_path / "x")], cwd=REPO, capture_output=True,
                         text=True)
    assert run.returncode == 2 and "checkpoint" in run.stderr


def test_phase_fit_bad_input_exits_2(tmp_path):
    cfg = ["--config", str(REPO / "configs/train/planegroups/base.yaml"), "--config",
           str(REPO / "configs/train/planegroups/image.yaml")]
    run = subprocess.run([sys.executable, "-m", "training", "phase", "fit", *cfg, "--data.store",
                          str(tmp_path / "none.zarr"), "--run_dir", str(tmp_path / "run")], cwd=REPO,
                         capture_output=True, text=True)
    last = run.stderr.strip().splitlines()[-1]  # Lightning's own notes may come first
    assert run.returncode == 2 and last.startswith("error: store") and "does not exist" in last
    run = subprocess.run([sys.executable, "-m", "training", "phase", "fit", *cfg, "--data.patch_size", "3"],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert not (tmp_path / "run").exists()
