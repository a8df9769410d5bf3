"""Training schedules: the paper's epochs on paper-scale stores, a step budget with early stopping on small ones."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from training.cli import SCHEDULE_FILE, run_cli
from training.schedule import PAPER_ATTN_400K_STEPS, ScheduleSettings, paper_steps, resolve_schedule
from training.submit import merged_config
from training.synthetic import write_synthetic_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIGS = ["attn-4k", "attn-200k", "attn-400k", "mlp-nocontext", "mlp-simple", "mlp-deep"]
PAPER_TRAIN_ROWS = round(0.8 * 54_825_600)  # paper.yaml: 96 x 34 x 3 x 2 x 2 800 patches, 80 % for training


def _config(repo_root, name):
    return merged_config([repo_root / "configs" / "train" / "base.yaml", repo_root / "configs" / "train" / f"{name}.yaml"])


def test_paper_scale_store_keeps_the_paper_schedule_for_all_six(repo_root):
    for name in CONFIGS:
        cfg = _config(repo_root, name)
        settings = ScheduleSettings(**cfg["schedule"])
        s = resolve_schedule(settings, PAPER_TRAIN_ROWS, cfg["data"]["batch_size"], cfg["trainer"]["max_epochs"])
        assert s.kind == "paper" and s.max_epochs == cfg["trainer"]["max_epochs"], (name, s)
        assert s.batch_size == cfg["data"]["batch_size"] and s.validation_fraction == 0 and s.patience_checks is None
    # the least-updated paper model makes ~1 070 steps: the small-store budget
    assert paper_steps(PAPER_TRAIN_ROWS, 409600, 10) == pytest.approx(PAPER_ATTN_400K_STEPS, rel=0.02)


def test_demo_scale_store_gets_the_step_budget_with_capped_batches(repo_root):
    n_train = 19200  # the demo store's 80 %
    for name in CONFIGS:
        cfg = _config(repo_root, name)
        s = resolve_schedule(ScheduleSettings(**cfg["schedule"]), n_train, cfg["data"]["batch_size"],
                             cfg["trainer"]["max_epochs"])
        assert s.kind == "steps" and s.max_epochs == -1, (name, s)
        assert s.max_steps == (1070 if name.startswith("attn") else 2140)  # the paper's 10 vs 20 epochs
        assert s.batch_size == min(cfg["data"]["batch_size"], n_train - 1920)  # capped at the rows it fits on
        assert s.validation_fraction == 0.1 and s.patience_checks >= 1
        assert "make" in s.reason and "< schedule.min_steps" in s.reason
    forced = resolve_schedule(ScheduleSettings(kind="paper"), n_train, 409600, 10)
    assert forced.kind == "paper" and forced.paper_steps == 10 and forced.batch_size == 409600


def test_schedule_settings_bad_input():
    for bad, message in (({"kind": "cosine"}, "schedule.kind"), ({"steps_per_10_epochs": 0}, "schedule.steps_per_10_epochs"),
                         ({"validation_fraction": 0.0}, "validation_fraction"), ({"min_delta": -1.0}, "min_delta"),
                         ({"patience_checks": 2.5}, "patience_checks")):
        with pytest.raises(ValueError, match=message):
            ScheduleSettings(**bad)
    with pytest.raises(ValueError, match="at least 2 training rows"):
        resolve_schedule(ScheduleSettings(), 1, 4096, 10)


def test_fit_on_a_small_store_runs_the_step_schedule_and_records_it(repo_root, tmp_path):
    """auto on 2 400 training rows: batch capped, validation carved from the training rows, early stop, record."""
    store = write_synthetic_store(tmp_path / "s.zarr", n_rows=3000)
    run_dir = tmp_path / "run"
    run_cli(["fit", "--config", str(repo_root / "configs" / "train" / "base.yaml"),
             "--config", str(repo_root / "configs" / "train" / "attn-400k.yaml"), "--data.store", store,
             "--run_dir", str(run_dir), "--trainer.accelerator", "cpu", "--trainer.strategy", "auto",
             "--trainer.devices", "1", "--schedule.steps_per_10_epochs", "120"])
    record = json.loads((run_dir / SCHEDULE_FILE).read_text())
    assert record["kind"] == "steps" and record["paper_steps"] == 10  # 1 batch of 409 600 x 10 epochs
    assert record["batch_size"] == 2400 - 240 and record["n_train_rows"] == 2400
    assert 0 < record["steps_done"] <= 120
    assert record["stopped_early"] == (record["steps_done"] < 120)
    saved = yaml.safe_load((run_dir / "csv" / "version_0" / "config.yaml").read_text())
    assert saved["data"]["batch_size"] == 2160 and saved["data"]["validation_fraction"] == 0.1
    assert saved["trainer"]["max_steps"] == 120 and saved["trainer"]["val_check_interval"] == 50
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == record["steps_done"]
    assert ckpt["datamodule_hyper_parameters"]["validation_fraction"] == 0.1  # evaluate rebuilds the same split


def test_validation_rows_come_from_the_training_rows_only(tmp_path):
    from training.data import FeatureDataModule

    store = write_synthetic_store(tmp_path / "s.zarr", n_rows=2000)
    dm = FeatureDataModule(store=store, validation_fraction=0.1)
    dm.setup("fit")
    _, train, test = dm.split_rows()
    fit, val = set(dm.train_rows.tolist()), set(dm.val_rows.tolist())
    assert len(val) == 160 and len(fit) == 1440 and not fit & val
    assert fit | val == set(train.tolist()) and not val & set(test.tolist())
    assert torch.equal(dm.test_dataloader().features, dm.test_x) and len(dm.val_dataloader().features) == 160
    again = FeatureDataModule(store=store, validation_fraction=0.1)
    again.setup("fit")
    assert set(again.val_rows.tolist()) == val  # seeded
    with pytest.raises(ValueError, match="validation_fraction"):
        FeatureDataModule(store=store, validation_fraction=0.6)
