"""The paper's six classifiers as plain ``torch.nn`` modules (no I/O, no Lightning).

Every model maps a batch of feature vectors ``x`` of shape (n, in_features), float32, to pre-softmax logits
of shape (n, n_classes). The five classes are the central column's: 0 X2, 1 single X vacancy, 2 double X
vacancy, 3 metal M, 4 dopant D.

* MLP-NoContext, MLP-Simple: linear-ReLU-dropout blocks of widths 64, 32, 16, 8, then a linear head
  (MLP-NoContext sees only the 6 Zernike values, the others all 31 features).
* MLP-Deep: 12 linear-ReLU-dropout blocks, then a linear head (block widths are our choice; the paper's
  Fig. S12 is not in the text: :data:`MLP_DEEP_HIDDEN`).
* Attention: input batch norm, 3 layers of [feature-feature self-attention + residual + batch norm,
  position-wise feed-forward + residual + batch norm], dropout 0.1, linear head.

The feature-feature attention is d x d (d = feature dimension) and is computed from the whole batch
(``QᵀK`` sums over samples), so in training mode a sample's output depends on its batch, like batch norm.
As batch norm does, :class:`FeatureAttention` keeps a running estimate of the batch statistic during
training and uses it in eval mode, so that inference is batch independent.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from contract.classes import N_CLASSES

MLP_SIMPLE_HIDDEN = (64, 32, 16, 8)
# 12 blocks, narrowing like MLP-Simple; our choice (the paper gives only the block count).
MLP_DEEP_HIDDEN = (128, 128, 128, 64, 64, 64, 32, 32, 32, 16, 16, 8)
ARCHITECTURES = ("mlp_nocontext", "mlp_simple", "mlp_deep", "attention")


class MLP(nn.Module):
    """Linear-ReLU-dropout blocks of the given widths, then a linear head.

    Parameters
    ----------
    in_features : int
        Input feature dimension (6 for MLP-NoContext, 31 otherwise).
    hidden : sequence of int
        Width of each block.
    n_classes : int
        Number of output logits.
    dropout : float
        Dropout probability after each block's ReLU.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], n_classes: int = N_CLASSES, dropout: float = 0.1):
        super().__init__()
        _check_positive(in_features=in_features, n_classes=n_classes)
        if len(hidden) == 0 or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {list(hidden)}")
        _check_dropout(dropout)
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
            width = int(h)
        self.blocks = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)
        self.in_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in_features) -> (n, n_classes) logits."""
        _check_input(x, self.in_features)
        return self.head(self.blocks(x))


class FeatureAttention(nn.Module):
    """Feature-feature self-attention over the d feature columns of a batch.

    With Q, K, V = X W_q, X W_k, X W_v (each n x d) the attention map is
    ``A = softmax(S)``, ``S = QᵀK / (n √d)`` (d x d, rows = query features, softmax over key features),
    and the output is ``(V Aᵀ) W_o``: output feature i is the A[i]-weighted mix of the value features,
    which is the paper's ``V·softmax(QᵀK/√d)`` read with the softmax over keys.

    ``QᵀK`` is a sum over the n samples; we divide it by n (a mean), so that the scale of the scores does
    not grow with the batch size (at batch 409 600 the plain sum saturates the softmax).

    In training mode S comes from the batch and a running estimate ``running_scores`` is updated with
    ``momentum`` (exponential average, as :class:`torch.nn.BatchNorm1d`); in eval mode the running
    estimate is used, so each sample's output is independent of the rest of its batch.
    """

    def __init__(self, d_model: int, momentum: float = 0.1):
        super().__init__()
        _check_positive(d_model=d_model)
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.d_model = d_model
        self.momentum = momentum
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.register_buffer("running_scores", torch.zeros(d_model, d_model))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Batch attention scores ``QᵀK / (n √d)``, shape (d, d)."""
        q, k = self.query(x), self.key(x)
        return (q.transpose(0, 1) @ k) / (x.shape[0] * math.sqrt(self.d_model))

    def attention_map(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Attention map (d, d): from batch ``x`` in training mode (or when given), else the running one."""
        if x is not None:
            return torch.softmax(self.scores(x), dim=-1)
        return torch.softmax(self.running_scores, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, d)."""
        if self.training:
            s = self.scores(x)
            with torch.no_grad():
                if self.num_batches_tracked == 0:
                    self.running_scores.copy_(s.detach())  # start from the first batch, not from uniform
                else:
                    self.running_scores.lerp_(s.detach(), self.momentum)
                self.num_batches_tracked += 1
        else:
            s = self.running_scores
        attn = torch.softmax(s, dim=-1)
        return self.out(self.value(x) @ attn.transpose(0, 1))


class AttentionLayer(nn.Module):
    """Attention sub-layer and position-wise feed-forward sub-layer, each with residual and batch norm."""

    def __init__(self, d_model: int, d_ff: int, momentum: float = 0.1):
        super().__init__()
        _check_positive(d_ff=d_ff)
        self.attention = FeatureAttention(d_model, momentum=momentum)
        self.norm1 = nn.BatchNorm1d(d_model)
        self.feed_forward = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))
        self.norm2 = nn.BatchNorm1d(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attention(x))
        return self.norm2(x + self.feed_forward(x))


class AttentionClassifier(nn.Module):
    """Input batch norm, ``n_layers`` :class:`AttentionLayer`, dropout, linear head.

    Parameters
    ----------
    in_features : int
        Feature dimension d (31); kept through all layers.
    n_layers : int
        Number of attention layers (paper: 3).
    d_ff : int
        Hidden width of the position-wise feed-forward sub-layer (our choice: 4 d rounded, as in the
        Transformer; the paper does not give it).
    dropout : float
        Dropout after the last layer (paper: 0.1).
    momentum : float
        Update rate of the running attention estimate and of the batch norms.
    """

    def __init__(
        self,
        in_features: int,
        n_layers: int = 3,
        d_ff: int = 128,
        n_classes: int = N_CLASSES,
        dropout: float = 0.1,
        momentum: float = 0.1,
    ):
        super().__init__()
        _check_positive(in_features=in_features, n_layers=n_layers, n_classes=n_classes)
        _check_dropout(dropout)
        self.in_features = in_features
        self.input_norm = nn.BatchNorm1d(in_features)
        self.layers = nn.ModuleList([AttentionLayer(in_features, d_ff, momentum) for _ in range(n_layers)])
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(in_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, in_features) -> (n, n_classes) logits."""
        _check_input(x, self.in_features)
        x = self.input_norm(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.dropout(x))

    def attention_maps(self) -> torch.Tensor:
        """Running (inference) attention maps of all layers, (n_layers, d, d); rows query, columns key."""
        return torch.stack([layer.attention.attention_map() for layer in self.layers])


def build_model(
    architecture: str,
    in_features: int,
    n_classes: int = N_CLASSES,
    dropout: float = 0.1,
    hidden: Sequence[int] | None = None,
    n_layers: int = 3,
    d_ff: int = 128,
) -> nn.Module:
    """Build one of :data:`ARCHITECTURES` (``hidden`` overrides the MLP widths)."""
    if architecture == "mlp_nocontext" or architecture == "mlp_simple":
        return MLP(in_features, hidden or MLP_SIMPLE_HIDDEN, n_classes, dropout)
    if architecture == "mlp_deep":
        return MLP(in_features, hidden or MLP_DEEP_HIDDEN, n_classes, dropout)
    if architecture == "attention":
        return AttentionClassifier(in_features, n_layers, d_ff, n_classes, dropout)
    raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _check_dropout(p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")


def _check_input(x: torch.Tensor, in_features: int) -> None:
    if x.ndim != 2 or x.shape[1] != in_features:
        raise ValueError(f"features must have shape (n, {in_features}), got {tuple(x.shape)}")
