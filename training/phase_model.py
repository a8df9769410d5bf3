"""The plane-group phase classifier: a small CNN with global pooling (any patch size) and its LightningModule.

Both arms use the same layers and the same budget; only the first convolution's input channels differ
(1 for the image arm, 8 for the symmetry arm): ``stages`` blocks of conv 3x3 -> batch norm -> ReLU -> 2x2 max
pool, then global average pooling, dropout and a linear layer to the 17 plane groups. Global pooling makes
the prediction independent of the patch size, so an image's prediction is the mean of the softmax over
many patches (``predict_image``).
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from contract.errors import InputError
from contract.planegroups import N_PLANE_GROUPS

from .checkpoint import check_weights, torch_load
from .module import ClassifierSteps
from .phase_data import ARMS


class PhaseCNN(nn.Module):
    """(B, C, P, P) -> (B, n_classes) logits, for any P >= 2**len(widths)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (16, 32, 64, 64), n_classes: int = N_PLANE_GROUPS,
                 dropout: float = 0.2):
        super().__init__()
        layers, c = [], in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(c, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class PhaseClassifier(ClassifierSteps):
    """17-class plane-group classifier of patches (hyperparameters are plain values: checkpoints load with
    ``weights_only=True``).

    Parameters
    ----------
    arm : "image" (1 input channel) or "symmetry" (image + 7 symmetry maps, 8 channels); must match data.arm.
    widths : output channels of the conv stages.
    lr : Adam learning rate.
    weight_decay : Adam weight decay.
    dropout : before the last layer.
    geometry : what inference needs to prepare an image like the training data (patch size, map settings,
        cell sizes of the training images); filled from the data module at fit time, kept in the checkpoint.
    """

    VAL_ACC = "val_patch_acc"  # accuracy per patch; an image's prediction averages its patches

    def __init__(self, arm: str = "symmetry", widths: list[int] | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-4, dropout: float = 0.2, geometry: dict | None = None):
        super().__init__()
        if arm not in ARMS:
            raise ValueError(f"model.arm must be one of {tuple(ARMS)}, got {arm!r}")
        if lr <= 0:
            raise ValueError(f"model.lr must be > 0, got {lr}")
        widths = list(widths or [16, 32, 64, 64])
        self.save_hyperparameters({"arm": arm, "widths": widths, "lr": lr, "weight_decay": weight_decay,
                                   "dropout": dropout, "geometry": geometry})
        self.in_channels = ARMS[arm]
        self.model = PhaseCNN(self.in_channels, tuple(widths), N_PLANE_GROUPS, dropout)
        self.init_metrics(N_PLANE_GROUPS)

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule if self.trainer is not None else None
        arm = getattr(dm, "arm", None)
        if arm is not None and arm != self.hparams.arm:
            raise ValueError(f"model.arm={self.hparams.arm!r} but data.arm={arm!r}: set both alike")
        if dm is not None and hasattr(dm, "geometry"):
            self.hparams["geometry"] = dm.geometry()

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        epochs = self.trainer.max_epochs if self.trainer is not None and self.trainer.max_epochs else 1
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))}


@torch.no_grad()
def predict_patches(model: nn.Module, patches: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax probabilities (n, 17) of (n, C, P, P) patches, in eval mode."""
    model.eval()
    out = [torch.softmax(model(patches[s:s + batch_size]), dim=1) for s in range(0, len(patches), batch_size)]
    return torch.cat(out) if out else torch.zeros((0, N_PLANE_GROUPS))


def load_classifier(path) -> PhaseClassifier:
    """A phase classifier from a Lightning checkpoint (CPU, ``weights_only``); ``InputError`` for a file that is not
    one, ``CorruptDataError`` (exit 3) for NaN/infinite weights or weights that differ from their stored sha256."""
    path = Path(path)
    ckpt = torch_load(path, "cpu", use="use a last.ckpt written by `python -m training phase fit`")
    hparams = (ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    known = set(inspect.signature(PhaseClassifier.__init__).parameters) - {"self"}
    if "arm" not in hparams or not isinstance(ckpt.get("state_dict"), dict):
        raise InputError(f"{path} is not a phase-classifier checkpoint (no model.arm hyperparameter)")
    check_weights(ckpt, path)
    try:
        module = PhaseClassifier(**{k: v for k, v in hparams.items() if k in known})
        module.load_state_dict(ckpt["state_dict"])
    except (ValueError, TypeError, RuntimeError) as err:  # another model's checkpoint
        raise InputError(f"{path} is not a phase-classifier checkpoint: {type(err).__name__}: "
                         f"{' '.join(str(err).split())[:160]}") from None
    return module.eval()
