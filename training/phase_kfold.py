"""Runs of the phase classifier: one split for the demo, grouped k-fold x seeds x arms for the evaluation.

Each run is ``python -m training phase fit`` (the same LightningCLI and configs as a user's run) into its own
``run_dir``, then the test fold's predictions are written to ``run_dir/predictions.npz``: per test image its
store row, label, structure, peak counts and the softmax of every patch of its evaluation grid. A run whose
predictions exist is skipped, so an interrupted k-fold resumes where it stopped (an interrupted fit resumes
from its ``last.ckpt``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .phase_data import PatchBatches, PlaneGroupDataModule, read_store
from .phase_lightning import CONFIG_DIR, arm_config_args, run_phase_cli
from .phase_model import load_classifier, predict_patches

PREDICTIONS = "predictions.npz"


def fit_args(arm: str, store: str, run_dir: Path, fold: int, n_folds: int, seed: int, config_dir, accelerator: str,
             extra: list[str]) -> list[str]:
    return ["fit", *arm_config_args(arm, config_dir), "--data.store", str(store), "--run_dir", str(run_dir),
            "--data.test_fold", str(fold), "--data.n_folds", str(n_folds), "--data.seed", str(seed),
            "--seed_everything", str(seed), "--trainer.accelerator", accelerator, "--trainer.devices", "1",
            "--trainer.strategy", "auto", *extra]


def predict_fold(ckpt: str | Path, store: str, out: str | Path, seed: int = 0) -> Path:
    """Softmax of every evaluation patch of the checkpoint's test fold -> ``out`` (npz)."""
    model = load_classifier(ckpt)
    geo = model.hparams["geometry"]
    dm = PlaneGroupDataModule(store, model.hparams["arm"], geo["patch_size_px"], eval_grid=geo["eval_grid"],
                              n_folds=geo["n_folds"], test_fold=geo["test_fold"], split_seed=geo["split_seed"])
    _, _, test = dm.split_rows()
    data = read_store(store, test, need_maps=dm.arm == "symmetry")
    batches = PatchBatches(data, dm.arm, dm.patch, 256, train=False, eval_grid=dm.eval_grid)
    probs = torch.cat([predict_patches(model.model, x) for x, _ in batches]).numpy()
    probs = probs.reshape(len(test), dm.eval_grid ** 2, -1)
    np.savez_compressed(out, rows=test, label=data["label"], structure=data["structure"],
                        peak_counts=data["peak_counts"], patch_probs=probs.astype(np.float32),
                        arm=np.str_(dm.arm), seed=np.int64(seed), fold=np.int64(dm.test_fold),
                        n_folds=np.int64(dm.n_folds))
    return Path(out)


def run_one(arm: str, store: str, run_dir: Path, fold: int, n_folds: int, seed: int, config_dir, accelerator: str,
            extra: list[str]) -> Path:
    run_dir = Path(run_dir)
    pred = run_dir / PREDICTIONS
    if pred.is_file():
        print(f"== {arm} seed {seed} fold {fold}: done ({pred})", flush=True)
        return pred
    print(f"== {arm} seed {seed} fold {fold}/{n_folds}: training -> {run_dir}", flush=True)
    run_phase_cli(fit_args(arm, store, run_dir, fold, n_folds, seed, config_dir, accelerator, extra))
    return predict_fold(run_dir / "checkpoints" / "last.ckpt", store, pred, seed)


def run_demo(store: str, out: str | Path, arms=("image", "symmetry"), config_dir=CONFIG_DIR, accelerator: str = "cpu",
             extra: list[str] | None = None) -> Path:
    """Both arms on test fold 0 of the configs' folds, seed 0: ``out/<arm>/`` (checkpoints, logs, predictions)."""
    out = Path(out)
    n_folds = _config_n_folds(config_dir)
    for arm in arms:
        run_one(arm, store, out / arm, 0, n_folds, 0, config_dir, accelerator, list(extra or []))
    return out


def run_kfold(store: str, out: str | Path, arms=("image", "symmetry"), seeds=(0, 1, 2), n_folds: int = 3,
              config_dir=CONFIG_DIR, accelerator: str = "cpu", extra: list[str] | None = None) -> Path:
    """Every (seed, fold, arm): ``out/<arm>/seed<S>/fold<K>/``."""
    out = Path(out)
    for seed in seeds:
        for fold in range(n_folds):
            for arm in arms:
                run_one(arm, store, out / arm / f"seed{seed}" / f"fold{fold}", fold, n_folds, seed, config_dir,
                        accelerator, list(extra or []))
    return out


def _config_n_folds(config_dir) -> int:
    import yaml

    base = yaml.safe_load((Path(config_dir) / "base.yaml").read_text()) or {}
    return int(base.get("data", {}).get("n_folds", 3))
