"""The model registry (inference/registry.py) and classify without --model: the card, the checksum checked on
load (exit 3), the registered model chosen by context, exit 4 with the build command, the build's config."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.__main__ import main
from contract.catalog import load_catalog
from contract.context import FrameContext
from inference.build import context_config, model_for_frame
from inference.registry import (
    SHIPPED_DIR,
    ModelCard,
    choose_model,
    list_models,
    register,
    sha256_file,
)
from simulate import config as dataset_config
from tests.inference_fixtures import render_specimen
from training.evaluate import read_checkpoint

MOS2_V_60_HAADF = {"host": "MoS2", "dopant": "V", "beam_energy_kev": 60, "detector": "HAADF"}


def _card_fields(ckpt: Path, **extra) -> dict:
    _, _, meta = read_checkpoint(ckpt)
    fields = {"model": "MLP-Simple", "cases": tuple(meta["training_cases"]), "patch_size_px": meta["patch_size_px"] or 33,
              "patch_geometry": {"patch_size_px": meta["patch_size_px"]}, "noise": {}, "multislice": {},
              "schedule": {}, "metrics": {"test_accuracy": 0.5, "cohen_kappa": 0.4}, "dataset": {"name": "synthetic"},
              "versions": {}}
    return {**fields, **extra}


@pytest.fixture
def models_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "models"
    monkeypatch.setenv("STEM_CONTEXT_MODELS", str(d))
    return d


@pytest.fixture
def frame(tmp_path) -> Path:
    image, *_ = render_specimen(40.0, 0.2, a_angstrom=3.16)
    path = tmp_path / "frame.npy"
    np.save(path, image.astype(np.float32))
    return path


def _argv(frame: Path, out: Path, ctx: dict, *extra: str) -> list[str]:
    return ["classify", str(frame), "--host", ctx["host"], "--dopant", ctx["dopant"], "--energy-kev",
            str(ctx["beam_energy_kev"]), "--detector", ctx["detector"], "--pixel-size-angstrom", "0.2", "--patch-size-px", "33",
            "--out", str(out), *extra]


def test_register_writes_a_card_and_a_slim_checkpoint_and_choose_picks_by_context(synthetic_checkpoints, models_dir):
    ckpt = synthetic_checkpoints["mlp-simple"]
    m = register(ckpt, _card_fields(ckpt), "synthetic")
    assert m.card_path == models_dir / "synthetic.json" and m.checkpoint_path.is_file()
    card = ModelCard.from_file(m.card_path)
    assert card.checkpoint_sha256 == sha256_file(m.checkpoint_path)
    assert card.checkpoint_size_bytes == m.checkpoint_path.stat().st_size < ckpt.stat().st_size  # no Adam state
    slim = torch.load(m.checkpoint_path, weights_only=True)
    assert "optimizer_states" not in slim
    model, _, meta = read_checkpoint(m.checkpoint_path)  # the slim copy loads through the one loader
    assert meta["training_cases"] == list(card.cases)
    assert [x.card.name for x in list_models([models_dir])] == ["synthetic"]
    assert choose_model(MOS2_V_60_HAADF, list_models([models_dir])).card.name == "synthetic"
    assert choose_model({**MOS2_V_60_HAADF, "dopant": "Cr"}, list_models([models_dir])) is None
    # a model with fewer cases (built for the context) is preferred to a broad one that also covers it
    one = tuple(c for c in card.cases if c["host"] == "MoS2" and c["beam_energy_kev"] == 60)
    register(ckpt, _card_fields(ckpt, cases=one, metrics={"test_accuracy": 0.1, "cohen_kappa": 0.0}), "MoS2+V-60keV")
    assert choose_model(MOS2_V_60_HAADF, list_models([models_dir])).card.name == "MoS2+V-60keV"
    assert choose_model({**MOS2_V_60_HAADF, "beam_energy_kev": 80}, list_models([models_dir])).card.name == "synthetic"


def test_classify_without_model_uses_the_registered_one(synthetic_checkpoints, models_dir, frame, tmp_path, capsys):
    ckpt = synthetic_checkpoints["mlp-simple"]
    register(ckpt, _card_fields(ckpt), "synthetic")
    out = tmp_path / "out"
    assert main(_argv(frame, out, MOS2_V_60_HAADF)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"] == str(models_dir / "synthetic.ckpt")
    assert summary["model_card"]["name"] == "synthetic"
    assert "model: synthetic (built, MLP-Simple" in capsys.readouterr().err


def test_changed_checkpoint_is_refused_with_exit_3(synthetic_checkpoints, models_dir, frame, tmp_path, capsys):
    ckpt = synthetic_checkpoints["mlp-simple"]
    m = register(ckpt, _card_fields(ckpt), "synthetic")
    data = bytearray(m.checkpoint_path.read_bytes())
    data[-100] ^= 0xFF
    m.checkpoint_path.write_bytes(bytes(data))
    assert main(_argv(frame, tmp_path / "out", MOS2_V_60_HAADF)) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: model synthetic: checkpoint") and "sha256" in err
    assert not (tmp_path / "out").exists()


def test_uncovered_context_exits_4_with_the_exact_build_command(synthetic_checkpoints, models_dir, frame, tmp_path,
                                                               capsys):
    ckpt = synthetic_checkpoints["mlp-simple"]
    register(ckpt, _card_fields(ckpt), "synthetic")
    ctx = {"host": "WSe2", "dopant": "Co", "beam_energy_kev": 100, "detector": "MAADF"}
    out = tmp_path / "out"
    assert main(_argv(frame, out, ctx)) == 4
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no registered model covers WSe2+Co 100 keV MAADF")
    assert err.endswith(f"python -m inference classify {frame} --host WSe2 --dopant Co --energy-kev 100 "
                        f"--detector MAADF --out {out} --build-model")
    assert main(_argv(frame, out, ctx, "--model", str(ckpt), "--build-model")) == 2  # one or the other


def test_build_config_is_one_context_with_overrides_recorded(tmp_path):
    ctx = {"host": "WSe2", "dopant": "V", "beam_energy_kev": 80, "detector": "HAADF"}
    raw = context_config(FrameContext.from_mapping(ctx, load_catalog()), {"noise": {"dose_e_per_angstrom2": [1000, 5000]}, "patches": {"patch_size_px": 25}})
    path = tmp_path / "c.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    cfg = dataset_config.load(path)
    assert cfg.combos == [["WSe2", "V"]] and cfg.imaging.beam_energies_kev == [80]
    assert len(cfg.environments) == 34 and sorted(cfg.imaging.detectors) == ["HAADF", "MAADF"]
    assert cfg.noise.dose_e_per_angstrom2 == (1000, 5000) and cfg.patches.patch_size_px == 25
    assert cfg.noise.read_noise_counts == (0.0, 3.0)  # untouched values stay the paper's


def test_shipped_models_match_their_cards():
    shipped = list_models([SHIPPED_DIR])
    if not shipped:
        pytest.skip(f"no model shipped in {SHIPPED_DIR} yet: `make starter-model` builds the starter model")
    for m in shipped:
        assert m.checkpoint_path.stat().st_size <= 5_000_000
        assert sha256_file(m.checkpoint_path) == m.card.checkpoint_sha256
        read_checkpoint(m.verified_checkpoint())
