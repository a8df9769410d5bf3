"""A real build (simulate -> features -> train -> evaluate -> register) of a cut-down context, then classify
without --model picks it. Slow: real abTEM, a real LocalCluster and a real fit."""
from __future__ import annotations

import json

import numpy as np
import pytest

from contract.catalog import load_catalog
from contract.context import FrameContext
from inference.__main__ import main
from inference.build import build_model
from inference.registry import choose_model, list_models
from tests.inference_fixtures import render_specimen


@pytest.mark.slow
def test_build_registers_a_model_that_classify_then_uses(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STEM_CONTEXT_MODELS", str(tmp_path / "models"))
    ctx = FrameContext.from_mapping({"host": "WSe2", "dopant": "Cr", "beam_energy_kev": 60, "detector": "HAADF"},
                                    load_catalog())
    # 2 environments (Se2 among W, and Cr among Se2: the site-symmetry flag needs both sublattices) and a small
    # patch: the pipeline, not the physics
    small = {"environments": [0, 23], "patches": {"patch_size_px": 17, "patches_per_image": 64}}
    # at most 150 optimizer steps: the default schedule's 1 070 took 660-1 270 s here, Lightning's per-step
    # overhead on a 256-row store; what it learns is not under test
    built = build_model(ctx, overrides=small, n_workers=2,
                        train_args=["--schedule.kind", "steps", "--schedule.steps_per_10_epochs", "150"])
    card = built.card
    assert card.matched_to_frame == small and card.name.startswith("WSe2+Cr-60keV-matched-")
    assert {(c["host"], c["dopant"], c["beam_energy_kev"], c["detector"]) for c in card.cases} == \
        {("WSe2", "Cr", 60, "HAADF"), ("WSe2", "Cr", 60, "MAADF")}
    assert 0 <= card.metrics["test_accuracy"] <= 1 and set(card.timings_s) >= {"simulate", "features", "train"}
    assert card.dataset["multislice_runs"] == 2 and card.patch_size_px == 17
    assert card.schedule["kind"] == "steps" and card.schedule["steps_done"] <= 150
    assert "build: [4/4]" in capsys.readouterr().err
    assert not (tmp_path / "models" / "work" / card.name / "WSe2+Cr-60keV.zarr").exists()  # store removed
    assert choose_model(ctx, list_models([tmp_path / "models"])).card.name == card.name
    image, *_ = render_specimen(40.0, 0.15, a_angstrom=3.28)
    frame = tmp_path / "frame.npy"
    np.save(frame, image.astype(np.float32))
    out = tmp_path / "out"
    assert main(["classify", str(frame), "--host", "WSe2", "--dopant", "Cr", "--energy-kev", "60", "--detector",
                 "MAADF", "--pixel-size-angstrom", "0.15", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["model_card"]["name"] == card.name
