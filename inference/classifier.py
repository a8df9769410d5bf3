"""A trained checkpoint ready for inference (``load_classifier``) and its class probabilities for a feature
matrix (``predict_probabilities``). torch and ``training.evaluate`` are imported on first use, so that locating
sites or checking a context does not load them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contract.errors import InputError
from contract.features import feature_columns


@dataclass
class Classifier:
    """A checkpoint ready for inference: the model, the stored feature columns it reads, its patch size, and
    the training cases it knows (None for an old checkpoint that does not list them)."""

    model: object
    feature_columns: list
    feature_set: str
    patch_size_px: int | None
    training_cases: list | None
    path: str
    normalisation: str | None = None
    site_symmetry_rule_version: int | None = None
    context_encoding: str = "shells"
    """``shells`` (the paper's stored context) or ``physical`` (``contract.physical_context``, computed from the
    frame's context); checkpoints written before the choice existed are ``shells``."""


def load_classifier(ckpt) -> Classifier:
    """``training.evaluate.read_checkpoint`` (refuses unsafe or wrong files) plus what inference needs from
    the checkpoint's metadata (``training.module.inference_metadata``); an older checkpoint without it gives
    the feature set of its datamodule hyperparameters and no patch size or cases."""
    from training.evaluate import read_checkpoint  # deferred: torch; keeps inference.classify torch-free (locate_sites)

    model, data_hparams, meta = read_checkpoint(ckpt)
    if meta is None:
        fs = str(data_hparams.get("feature_set", "all"))
        try:
            cols = feature_columns(fs)
        except ValueError:
            raise InputError(f"checkpoint {Path(ckpt).name}: unknown feature set {fs!r}") from None
        return Classifier(model, cols, fs, None, None, str(ckpt))
    return Classifier(model, list(meta["feature_columns"]), str(meta["feature_set"]), meta.get("patch_size_px"),
                      list(meta.get("training_cases") or []), str(ckpt), meta.get("normalisation"),
                      meta.get("site_symmetry_rule_version"), str(meta.get("context_encoding", "shells")))


def predict_probabilities(model, features: np.ndarray, batch_size: int = 65536, masked_classes=()) -> np.ndarray:
    """(N, k) -> (N, 5) softmax probabilities (eval mode; the models are batch independent there).
    ``masked_classes``: class ids that cannot occur (D in an undoped sample): probability exactly 0, the rest
    renormalised (their logits set to -inf before the softmax, so no row can underflow to all zeros)."""
    import torch  # deferred: torch, as in load_classifier

    from training.evaluate import predict_logits  # deferred: torch, as in load_classifier

    logits = predict_logits(model, features, batch_size, "cpu")
    if len(masked_classes):
        logits[:, list(masked_classes)] = float("-inf")
    return torch.softmax(logits, dim=1).numpy()
