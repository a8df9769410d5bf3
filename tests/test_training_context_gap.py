"""The paper's central result on a small real store with the default schedule: context makes the classifier.

A store is simulated here with real abTEM (WSe2 + Cr and MoS2 + Re at 60 keV, one environment per class, both
detectors, noisy patches), encoded into the 31 features, and MLP-Simple (all 31) and MLP-NoContext (the 6 Zernike
values) are trained with the configs' default ``schedule: auto`` (the step budget on a store this small) and
tested on the same held-out 20 %.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from training.cli import SCHEDULE_FILE, run_cli
from training.demo import model_config_args
from training.evaluate import evaluate

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, repo_root):
    from simulate.run import simulate

    work = tmp_path_factory.mktemp("context_gap")
    config = work / "small.yaml"
    config.write_text(
        f"base: {repo_root / 'configs' / 'dataset' / 'demo.yaml'}\n"
        "name: context-gap-test\n"
        "selection: {combos: [[WSe2, Cr], [MoS2, Re]]}\n"
        "environments: [0, 4, 8, 12, 23]   # X2, VacX, VacX2, M, D centres\n"
        "imaging: {beam_energies_kev: [60]}\n"
        "patches: {patch_size_px: 21, patches_per_image: 60}\n")
    store = work / "small.zarr"
    simulate(config, store, cluster="local", n_workers=2)
    subprocess.run([sys.executable, "-m", "features", "--store", str(store)], check=True, cwd=repo_root)
    return store


def test_mlp_simple_beats_mlp_nocontext_by_a_wide_margin_with_the_default_schedule(small_store, repo_root, tmp_path):
    accuracy, schedule = {}, {}
    for config in ("mlp-simple", "mlp-nocontext"):
        run_dir = tmp_path / config
        run_cli(["fit", *model_config_args(config, repo_root / "configs" / "train"), "--data.store", str(small_store),
                 "--run_dir", str(run_dir), "--trainer.accelerator", "cpu", "--trainer.strategy", "auto",
                 "--trainer.devices", "1"])
        schedule[config] = json.loads((run_dir / SCHEDULE_FILE).read_text())
        metrics = evaluate(run_dir / "checkpoints" / "last.ckpt", None, run_dir / "eval", umap_samples=0,
                           train_accuracy=False, device="cpu")
        accuracy[config] = metrics["test"]["accuracy"]
        assert metrics["test"]["n"] == 240
    assert all(s["kind"] == "steps" for s in schedule.values()), schedule  # 960 training rows: the step budget
    print(accuracy)
    assert accuracy["mlp-simple"] >= 0.9, accuracy
    assert accuracy["mlp-simple"] - accuracy["mlp-nocontext"] >= 0.15, accuracy
