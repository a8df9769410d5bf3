"""The paper's evaluation metrics on predicted probabilities: pure tensor-in / dict-out (torchmetrics).

Classes and defect groupings: ``contract.classes``.
"""
from __future__ import annotations

import torch
from torchmetrics.functional.classification import (
    binary_f1_score,
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_cohen_kappa,
    multiclass_confusion_matrix,
)

from contract.classes import DEFECT_CLASSES, NON_DEFECT_CLASSES


def posterior_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of each row of ``probs`` (n, k), in nats, shape (n,). 0·log 0 is taken as 0."""
    _check_probs(probs)
    return -(probs * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))).sum(dim=1)


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict:
    """Reliability diagram data: per confidence bin (equal width on [0, 1]) the mean confidence, the
    accuracy and the count. ECE = sum(count/n * |accuracy - confidence|)."""
    _check_probs(probs, labels)
    confidence, pred = probs.max(dim=1)
    correct = (pred == labels).to(probs.dtype)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=probs.dtype, device=probs.device)
    # bins are (lo, hi], as torchmetrics' calibration error uses
    index = (torch.bucketize(confidence, edges[1:-1], right=False)).clamp(0, n_bins - 1)
    count = torch.bincount(index, minlength=n_bins).to(probs.dtype)
    conf_sum = torch.zeros(n_bins, dtype=probs.dtype, device=probs.device).index_add_(0, index, confidence)
    acc_sum = torch.zeros(n_bins, dtype=probs.dtype, device=probs.device).index_add_(0, index, correct)
    nonzero = count.clamp_min(1)
    return {
        "bin_edges": edges.tolist(),
        "confidence": (conf_sum / nonzero).tolist(),
        "accuracy": (acc_sum / nonzero).tolist(),
        "count": count.long().tolist(),
    }


def defect_f1(pred: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """F1 of the defect / non-defect recast, one value per defect class.

    For defect class c (single vacancy 1, double vacancy 2, dopant 4) the rows whose true class is c or a
    non-defect class (0, 3) are kept; the truth is "defect" for class c, and the prediction is "defect"
    when the predicted class is any defect class (1, 2, 4). A class absent from ``labels`` gives NaN.
    """
    defects = torch.tensor(list(DEFECT_CLASSES.values()), device=pred.device)
    non_defects = torch.tensor(NON_DEFECT_CLASSES, device=pred.device)
    out = {}
    for name, c in DEFECT_CLASSES.items():
        keep = (labels == c) | torch.isin(labels, non_defects)
        if not bool((labels[keep] == c).any()):
            out[name] = float("nan")
            continue
        truth = (labels[keep] == c).long()
        predicted = torch.isin(pred[keep], defects).long()
        out[name] = float(binary_f1_score(predicted, truth))
    return out


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict:
    """Accuracy, confusion matrix (rows true, columns predicted), mean posterior entropy (nats), ECE (L1,
    ``n_bins`` equal-width bins) with its reliability bins, unweighted Cohen's kappa and defect F1."""
    _check_probs(probs, labels)
    k = probs.shape[1]
    pred = probs.argmax(dim=1)
    return {
        "n": int(labels.numel()),
        "accuracy": float(multiclass_accuracy(pred, labels, k, average="micro")),
        "confusion_matrix": multiclass_confusion_matrix(pred, labels, k).tolist(),
        "mean_entropy_nats": float(posterior_entropy(probs).mean()),
        "max_entropy_nats": float(torch.log(torch.tensor(float(k)))),
        "ece": float(multiclass_calibration_error(probs, labels, k, n_bins=n_bins, norm="l1")),
        "reliability": reliability_bins(probs, labels, n_bins),
        "cohen_kappa": float(multiclass_cohen_kappa(pred, labels, k)),
        "f1_defect": defect_f1(pred, labels),
    }


def _check_probs(probs: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    if probs.ndim != 2:
        raise ValueError(f"probs must have shape (n, n_classes), got {tuple(probs.shape)}")
    if labels is not None and labels.shape != probs.shape[:1]:
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {tuple(labels.shape)}")
    if probs.numel() and not torch.allclose(probs.sum(dim=1), torch.ones_like(probs[:, 0]), atol=1e-4):
        raise ValueError("probs rows must sum to 1 (pass softmax outputs, not logits)")
