"""Issue 21, findings 1 and 7: checkpoints are checked before they are used, by every loader (the defect classifier
of ``training.evaluate.read_checkpoint`` that inference uses, ``training.phase_model.load_classifier`` of
``inference phase``, ``rvae.encode.load_module``): NaN/infinite weights and weights that differ from the sha256
stored at save time are refused with exit 3 and one line naming the file; a checkpoint from before the hash loads
with a note; an unsafe pickle is called unsafe and torch's "retry with weights_only=False" is never relayed.

Checkpoints are real: the synthetic ``training fit`` runs of ``tests.inference_fixtures`` and ``torch.save`` of the
real modules' state (what ``Trainer.save_checkpoint`` writes, hashed by the same ``on_save_checkpoint``)."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from contract.errors import EXIT_BAD_INPUT, EXIT_CORRUPT_DATA, CorruptDataError, InputError
from inference.__main__ import main as inference_main
from rvae.encode import load_module
from rvae.module import RVAEModule
from training.checkpoint import WEIGHTS_SHA256_KEY, weights_sha256
from training.evaluate import read_checkpoint
from training.phase_model import PhaseClassifier
from training.phase_model import load_classifier as load_phase
from tests.test_inference_fuzz import CTX, assert_one_line_refusal, lattice_image, write_valid

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_torch_thread")]


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def _saved(module, path: Path, **extra) -> Path:
    """``module``'s checkpoint as Lightning writes it: state_dict, hyperparameters, and what its
    ``on_save_checkpoint`` adds (the weights' sha256)."""
    ckpt = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), **extra}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


def _nan_weights(ckpt: dict) -> dict:
    state = dict(ckpt["state_dict"])
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    return {**ckpt, "state_dict": state}  # a diverged run: its own hash is of the NaN weights


def _flipped_byte(ckpt: dict) -> dict:
    state = {k: v.clone() for k, v in ckpt["state_dict"].items()}
    key = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 4)
    raw = state[key].reshape(-1).view(torch.uint8)
    raw[5] ^= 0x10  # one bit of one float: still finite, silently different weights
    return {**ckpt, "state_dict": state}


def _rehash(ckpt: dict) -> dict:
    return {**ckpt, WEIGHTS_SHA256_KEY: weights_sha256(ckpt["state_dict"])}


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return write_valid(tmp_path_factory.mktemp("img") / "ok.npy", lattice_image())


def test_training_fit_writes_the_weights_sha256(synthetic_checkpoints):
    ck = torch.load(synthetic_checkpoints["mlp-simple"], weights_only=True)
    assert ck[WEIGHTS_SHA256_KEY] == weights_sha256(ck["state_dict"])
    read_checkpoint(synthetic_checkpoints["mlp-simple"])  # an intact file loads


@pytest.mark.parametrize("damage", ["nan weights", "flipped byte"])
def test_classify_refuses_damaged_weights_with_exit_3(damage, synthetic_checkpoints, image, tmp_path, capsys):
    ck = torch.load(synthetic_checkpoints["mlp-simple"], weights_only=True)
    bad = tmp_path / "bad.ckpt"
    torch.save(_rehash(_nan_weights(ck)) if damage == "nan weights" else _flipped_byte(ck), bad)
    out = tmp_path / "out"
    rc = inference_main(["classify", str(image), "--model", str(bad), *CTX, "--out", str(out)])
    line = assert_one_line_refusal(rc, capsys.readouterr().err, out, code=EXIT_CORRUPT_DATA)
    assert "bad.ckpt" in line and ("NaN" in line if damage == "nan weights" else "sha256" in line), line


def test_checkpoint_without_hash_loads_with_a_note(synthetic_checkpoints, tmp_path, capsys):
    ck = torch.load(synthetic_checkpoints["mlp-simple"], weights_only=True)
    ck.pop(WEIGHTS_SHA256_KEY)
    torch.save(ck, tmp_path / "old.ckpt")
    read_checkpoint(tmp_path / "old.ckpt")
    err = capsys.readouterr().err
    assert err.startswith("note: checkpoint old.ckpt stores no weights checksum"), err
    torch.save(_nan_weights(ck), tmp_path / "oldnan.ckpt")
    with pytest.raises(CorruptDataError, match="oldnan.ckpt.*NaN"):  # finiteness still checked
        read_checkpoint(tmp_path / "oldnan.ckpt")


def _rvae(tmp_path: Path) -> tuple[RVAEModule, dict]:
    module = RVAEModule(image_size=17, n_latent=2)
    return module, {"ZarrItemsDataModule": {"offset": 0.0, "scale": 1.0}}


@pytest.mark.parametrize("loader", ["rvae", "phase"])
def test_other_loaders_check_weights(loader, tmp_path, capsys):
    if loader == "rvae":
        module, extra = _rvae(tmp_path)
        load = load_module
    else:
        module, extra = PhaseClassifier(arm="image", widths=[4, 8]), {}
        load = load_phase
    good = _saved(module, tmp_path / "good.ckpt", **extra)
    ck = torch.load(good, weights_only=True)
    assert ck[WEIGHTS_SHA256_KEY] == weights_sha256(ck["state_dict"])
    load(good)
    assert "note:" not in capsys.readouterr().err
    torch.save(_rehash(_nan_weights(ck)), tmp_path / "nan.ckpt")
    with pytest.raises(CorruptDataError, match="nan.ckpt.*NaN"):
        load(tmp_path / "nan.ckpt")
    torch.save(_flipped_byte(ck), tmp_path / "flip.ckpt")
    with pytest.raises(CorruptDataError, match="flip.ckpt.*sha256"):
        load(tmp_path / "flip.ckpt")


def _unsafe_files(d: Path) -> dict[str, Path]:
    torch.save({"state_dict": Payload(), "hyper_parameters": {}}, d / "zip.ckpt")
    with open(d / "plain.ckpt", "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    with open(d / "data.ckpt", "wb") as f:
        pickle.dump({"state_dict": [1, 2, 3]}, f)
    (d / "text.ckpt").write_text("model: mlp\nweights: none\n")
    return {"zip": d / "zip.ckpt", "plain": d / "plain.ckpt", "data": d / "data.ckpt", "text": d / "text.ckpt"}


@pytest.mark.parametrize("loader", ["classifier", "rvae", "phase"])
def test_unsafe_pickles_are_called_unsafe_and_never_advised_to_load(loader, tmp_path, capsys):
    load = {"classifier": read_checkpoint, "rvae": load_module, "phase": load_phase}[loader]
    expect = {"zip": "refused as unsafe", "plain": "refused as unsafe", "data": "plain pickle", "text": "a text file"}
    for kind, path in _unsafe_files(tmp_path).items():
        with pytest.raises(InputError) as info:
            load(path)
        msg = str(info.value)
        assert expect[kind] in msg and path.name in msg, (kind, msg)
        assert "weights_only=False" not in msg and "not a PyTorch checkpoint (it does not" not in msg, msg
    assert "this must never run" not in capsys.readouterr().out


def test_phase_cli_text_checkpoint_is_exit_2(image, tmp_path, capsys):
    (tmp_path / "t.ckpt").write_text("hello\n")
    out = tmp_path / "out"
    rc = inference_main(["phase", str(image), "--model", str(tmp_path / "t.ckpt"), "--out", str(out)])
    line = assert_one_line_refusal(rc, capsys.readouterr().err, out, code=EXIT_BAD_INPUT)
    assert "text file" in line, line


def test_summary_json_is_valid_json_without_nan(synthetic_checkpoints, image, tmp_path):
    """Every JSON the project writes parses under the strict standard (no bare NaN)."""
    out = tmp_path / "out"
    rc = inference_main(["classify", str(image), "--model", str(synthetic_checkpoints["mlp-simple"]), *CTX,
                         "--out", str(out)])
    assert rc == 0
    json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c} in summary"))
    assert np.isfinite(json.loads((out / "summary.json").read_text())["uncertainty"]["mean_entropy_nats"])
