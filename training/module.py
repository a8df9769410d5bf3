"""LightningModule: one of the six classifiers, cross-entropy, Adam."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
import torchmetrics
from torch import nn

from .models import ARCHITECTURES, N_CLASSES, build_model


class DefectClassifier(pl.LightningModule):
    """Five-class defect classifier (hyperparameters are plain values, so checkpoints load with
    ``torch.load(..., weights_only=True)``).

    Parameters
    ----------
    architecture : one of "mlp_nocontext", "mlp_simple", "mlp_deep", "attention".
    in_features : input dimension (6 for MLP-NoContext, 31 otherwise); must match the data's feature_set.
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
        self.loss = nn.CrossEntropyLoss()
        self.train_acc = torchmetrics.classification.MulticlassAccuracy(n_classes, average="micro")
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(n_classes, average="micro")

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        n = getattr(dm, "n_features", None)
        if n is not None and n != self.hparams.in_features:
            raise ValueError(
                f"model.in_features={self.hparams.in_features} but data.feature_set={dm.feature_set!r} gives "
                f"{n} features: set model.in_features: {n}"
            )

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
        self.log("val_acc", self.val_acc, batch_size=len(y))

    def test_step(self, batch, batch_idx):
        self.validation_step(batch, batch_idx)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
