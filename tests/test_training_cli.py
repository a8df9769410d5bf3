"""LightningCLI runs on a real zarr store: logs, resolved config, checkpoints, resume and 2-process DDP."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from training.cli import newest_checkpoint, run_cli
from training.synthetic import write_synthetic_store

N_ROWS = 3000  # 2400 train rows -> 19 batches of 128


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("train_cli") / "s.zarr", n_rows=N_ROWS)


def fit_args(repo_root: Path, config: str, store: str, run_dir: Path, *extra: str) -> list[str]:
    return [
        "fit", "--config", str(repo_root / "configs" / "train" / "base.yaml"),
        "--config", str(repo_root / "configs" / "train" / f"{config}.yaml"),
        "--data.store", store, "--run_dir", str(run_dir),
        "--trainer.accelerator", "cpu", "--trainer.strategy", "auto", "--trainer.devices", "1",
        "--data.batch_size", "128", "--schedule.kind", "paper", *extra,  # epochs, as the assertions count
    ]


def metrics_rows(run_dir: Path, version: int = 0) -> list[dict]:
    with open(run_dir / "csv" / f"version_{version}" / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_fit_writes_logs_config_and_loadable_checkpoints(repo_root, store, tmp_path):
    run_dir = tmp_path / "run"
    run_cli(fit_args(repo_root, "mlp-simple", store, run_dir, "--trainer.max_epochs", "6"))
    rows = metrics_rows(run_dir)
    val_acc = [float(r["val_acc"]) for r in rows if r.get("val_acc")]
    assert len(val_acc) == 6 and val_acc[-1] > 0.6 and val_acc[-1] > val_acc[0]  # it learns
    saved = yaml.safe_load((run_dir / "csv" / "version_0" / "config.yaml").read_text())
    assert saved["data"]["store"] == store and saved["model"]["architecture"] == "mlp_simple"
    assert saved["trainer"]["max_epochs"] == 6
    assert list((run_dir / "tensorboard" / "version_0").glob("events.out.tfevents.*"))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6 * 19 and ckpt["hyper_parameters"]["in_features"] == 31
    assert newest_checkpoint(run_dir) == str(run_dir / "checkpoints" / "last.ckpt")


def test_nocontext_config_reads_six_columns_and_mismatch_is_an_error(repo_root, store, tmp_path):
    run_dir = tmp_path / "nc"
    run_cli(fit_args(repo_root, "mlp-nocontext", store, run_dir, "--trainer.max_epochs", "1"))
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"]["model.blocks.0.weight"].shape == (64, 6)
    with pytest.raises(ValueError, match="model.in_features=31"):
        run_cli(fit_args(repo_root, "mlp-simple", store, tmp_path / "bad", "--data.feature_set", "zernike",
                         "--trainer.max_epochs", "1"))


def test_resume_mid_epoch_gives_the_same_steps_and_weights(repo_root, store, tmp_path):
    """Stopped at step 25 (inside epoch 2) and restarted: same optimizer steps and weights as one run."""
    common = ("--model.dropout", "0.0", "--trainer.max_epochs", "3", "--checkpoint_every_n_steps", "5")
    run_cli(fit_args(repo_root, "attn-4k", store, tmp_path / "whole", *common))
    run_cli(fit_args(repo_root, "attn-4k", store, tmp_path / "split", *common, "--trainer.max_steps", "25"))
    assert torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 25
    run_cli(fit_args(repo_root, "attn-4k", store, tmp_path / "split", *common))  # ckpt_path: last
    whole = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", weights_only=True)
    split = torch.load(tmp_path / "split" / "checkpoints" / "last.ckpt", weights_only=True)
    assert whole["global_step"] == split["global_step"] == 3 * 19
    for name, value in whole["state_dict"].items():
        torch.testing.assert_close(split["state_dict"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert metrics_rows(tmp_path / "split", 1)[0]["epoch"] == "1"  # the second run started inside epoch 1


def test_ddp_two_cpu_processes_train_on_different_shards(repo_root, store, tmp_path):
    run_dir = tmp_path / "ddp"
    args = fit_args(repo_root, "mlp-simple", store, run_dir, "--trainer.max_epochs", "2",
                    "--data.save_shard_indices", "true")
    args[args.index("--trainer.strategy") + 1] = "ddp"
    args[args.index("--trainer.devices") + 1] = "2"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-m", "training", *args], cwd=repo_root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = [np.load(run_dir / "shards" / f"train-rank{r}-of2.npy") for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 1200
    assert np.intersect1d(shards[0], shards[1]).size == 0  # each rank trains on its own rows
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 * 10  # 1200 rows per rank / 128 -> 10 steps per epoch
    assert "ddp" in proc.stderr.lower() or "distributed" in proc.stderr.lower()
