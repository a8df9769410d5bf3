"""`inference classify --build-model --match-frame`: the dataset overrides measured on a real frame (the temul
MoS2 DigiScan .dm3, raw counts) are ones a dataset config accepts, and the CLI refuses --match-frame alone."""
from __future__ import annotations

from contract.yamlsafe import deep_merge
from inference.__main__ import main as inference_main
from inference.build import DATASET_BASE, context_config, frame_context, frame_dataset_overrides
from simulate.config import load_yaml, resolve


def test_real_frame_overrides_resolve(real_dm3, tmp_path):
    ctx = frame_context(real_dm3, {"host": "MoS2", "dopant": "V", "detector": "HAADF"})
    overrides, unmatched = frame_dataset_overrides(real_dm3, ctx)
    blur = overrides["noise"]["probe_blur_sigma_angstrom"]
    assert 0.1 < blur[0] < blur[1] < 0.8  # measured 0.35 A on this frame (docs/frame-matching.md)
    assert overrides["patches"]["patch_size_px"] % 2 == 1
    assert "display_export" not in overrides["noise"]  # raw counts, not an 8-bit export
    cfg = context_config(ctx, overrides)
    cfg.pop("base")
    resolve(deep_merge(load_yaml(DATASET_BASE), cfg))  # the merged mapping passes the whole validation
    assert all(isinstance(u, str) for u in unmatched)


def test_match_frame_needs_build_model(real_dm3, tmp_path, capsys):
    rc = inference_main(["classify", str(real_dm3), "--host", "MoS2", "--dopant", "V", "--match-frame",
                         "--out", str(tmp_path / "o")])
    assert rc == 2 and "--build-model" in capsys.readouterr().err


def test_frozen_phonons_needs_build_model_and_resolves(real_dm3, tmp_path, capsys):
    rc = inference_main(["classify", str(real_dm3), "--host", "MoS2", "--dopant", "V", "--frozen-phonons", "4",
                         "--out", str(tmp_path / "o")])
    assert rc == 2 and "--build-model" in capsys.readouterr().err
    rc = inference_main(["classify", str(real_dm3), "--host", "MoS2", "--dopant", "V", "--frozen-phonons", "-1",
                         "--build-model", "--out", str(tmp_path / "o")])
    assert rc == 2 and ">= 0" in capsys.readouterr().err
    # the override the CLI adds is one the dataset config accepts, and it reaches the multislice settings
    ctx = frame_context(real_dm3, {"host": "MoS2", "dopant": "V", "detector": "HAADF"})
    cfg = context_config(ctx, {"multislice": {"frozen_phonons": 4}})
    cfg.pop("base")
    assert resolve(deep_merge(load_yaml(DATASET_BASE), cfg)).multislice.frozen_phonons == 4
