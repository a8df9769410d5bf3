"""LightningModules: the steps every classifier shares (`ClassifierSteps`) and the six defect classifiers (Adam)."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn

from .checkpoint import stamp_weights
from .models import ARCHITECTURES, N_CLASSES, build_model


class ClassifierSteps(pl.LightningModule):
    """The steps every classifier of this stage shares: cross-entropy on ``self.model``'s logits, micro accuracy
    (``train_acc``, and ``VAL_ACC`` on validation and test). Subclasses build ``self.model`` and call
    ``init_metrics``."""

    VAL_ACC = "val_acc"

    def init_metrics(self, n_classes: int) -> None:
        self.loss = nn.CrossEntropyLoss()
        self.train_acc = torchmetrics.classification.MulticlassAccuracy(n_classes, average="micro")
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(n_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        loss = self.loss(logits, y)
        self.train_acc(logits, y)
        # per step: this rank's loss (no collective per step); per epoch: the mean over all ranks
        self.log("train_loss_step", loss, on_step=True, on_epoch=False, batch_size=len(y))
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(y))
        self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        self.val_acc(logits, y)
        self.log("val_loss", self.loss(logits, y), sync_dist=True, batch_size=len(y))
        self.log(self.VAL_ACC, self.val_acc, batch_size=len(y))

    def test_step(self, batch, batch_idx):
        self.validation_step(batch, batch_idx)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every checkpoint carries the sha256 of its weights, checked when it is loaded."""
        stamp_weights(checkpoint)


class DefectClassifier(ClassifierSteps):
    """Five-class defect classifier (hyperparameters are plain values, so checkpoints load with
    ``torch.load(..., weights_only=True)``).

    Parameters
    ----------
    architecture : one of "mlp_nocontext", "mlp_simple", "mlp_deep", "attention".
    in_features : input dimension (6 for MLP-NoContext, 31 otherwise, 18 with ``data.context_encoding:
        physical``); must match the data's feature_set and context encoding.
    lr : Adam learning rate (paper: 1e-3).
    dropout : dropout probability (paper: 0.1).
    hidden : MLP block widths (default per architecture, see :mod:`training.models`).
    n_layers, d_ff : attention layers and feed-forward width.
    """

    def __init__(
        self,
        architecture: str = "attention",
        in_features: int = 31,
        n_classes: int = N_CLASSES,
        lr: float = 1e-3,
        dropout: float = 0.1,
        hidden: list[int] | None = None,
        n_layers: int = 3,
        d_ff: int = 128,
    ):
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"model.architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        if lr <= 0:
            raise ValueError(f"model.lr must be > 0, got {lr}")
        self.save_hyperparameters()
        self.model = build_model(architecture, in_features, n_classes, dropout, hidden, n_layers, d_ff)
        self.init_metrics(n_classes)

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        n = getattr(dm, "n_features", None)
        if n is not None and n != self.hparams.in_features:
            raise ValueError(
                f"model.in_features={self.hparams.in_features} but data.feature_set={dm.feature_set!r} with "
                f"data.context_encoding={getattr(dm, 'context_encoding', 'shells')!r} gives {n} features: set "
                f"model.in_features: {n} (configs/train/physical.yaml does, for the physical encoding)"
            )

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Every checkpoint carries ``inference_metadata`` of the trainer's datamodule (computed once per run) and
        the sha256 of its weights."""
        super().on_save_checkpoint(checkpoint)
        if getattr(self, "_inference_metadata", None) is None:
            trainer = self._trainer
            self._inference_metadata = inference_metadata(getattr(trainer, "datamodule", None) if trainer else None)
        if self._inference_metadata is not None:
            checkpoint[CHECKPOINT_META_KEY] = self._inference_metadata


CHECKPOINT_META_KEY = "stem_context"
"""Key of the checkpoint entry that carries what inference needs (``inference_metadata``)."""
CHECKPOINT_META_FORMAT = 1


def inference_metadata(datamodule) -> dict | None:
    """What ``python -m inference classify`` needs from a checkpoint, so that it never reopens the training
    store: the stored feature layout, the feature set the model reads, the patch size and normalisation of the
    patches, and the training cases (host, dopant, beam energy, detector) with their training-row counts.
    None when ``datamodule`` is not a feature datamodule."""
    import numpy as np

    from contract import store as schema
    from contract.context import Case
    from contract.features import FEATURE_NAMES, model_feature_columns
    from contract.physical_context import PHYSICAL_CONTEXT_VERSION

    if datamodule is None or not hasattr(datamodule, "split_rows"):
        return None
    index, train, _ = datamodule.split_rows()
    meta = index.meta
    encoding = getattr(datamodule, "context_encoding", "shells")
    counts = np.bincount(index.case[train], minlength=len(meta.cases))
    normalisation, site = None, {}
    try:
        attrs = schema.open_group(meta.path)[schema.FEATURES].attrs
        normalisation = attrs.get("normalisation")
        site = dict(attrs.get(schema.ATTR_SITE_SYMMETRY) or {})
    except Exception:  # a store without the attributes: inference uses the one rule there is
        pass
    # each case through the one rule (contract.context.Case.from_dict): same keys and values as written before
    cases = [{**Case.from_dict(c).as_dict(), "n_rows": int(n), **_case_brightness(site, k)}
             for k, (c, n) in enumerate(zip(meta.cases, counts)) if n > 0]
    return {"format": CHECKPOINT_META_FORMAT, "feature_names": list(meta.feature_names or FEATURE_NAMES),
            "feature_set": datamodule.feature_set, "context_encoding": encoding,
            "physical_context_version": PHYSICAL_CONTEXT_VERSION if encoding == "physical" else None,
            "feature_columns": model_feature_columns(datamodule.feature_set, encoding),
            "patch_size_px": meta.patch_size_px, "normalisation": normalisation, "training_cases": cases,
            "n_training_rows": int(len(train)), "store": str(meta.path), "store_config_hash": meta.config_hash,
            "site_symmetry_rule_version": site.get("rule_version")}


def _case_brightness(site: dict, k: int) -> dict:
    """Case k's brighter sublattice and the metal / chalcogen intensity ratio of its typical (intact) columns,
    from a store's ``features.attrs["site_symmetry"]``; {} where the store does not say."""
    try:
        table = site["table"][k]
    except (KeyError, IndexError, TypeError):
        return {}
    out = {"brighter_sublattice": "metal" if table[0][0] == 1 else "chalcogen"}
    try:
        m, x = site["mean_central_intensity_metal"][k], site["mean_central_intensity_chalcogen"][k]
        if m is not None and x:
            out["metal_to_chalcogen_intensity"] = float(m) / float(x)
    except (KeyError, IndexError, TypeError):
        pass
    return out
