"""``python -m training evaluate --ckpt CKPT --data.store STORE.zarr --out DIR``

Rebuilds the checkpoint's model and data split (same seed, split and feature set; the store may be
overridden), predicts the test rows (and the training rows for the training accuracy) and writes
``metrics.json`` and figures: confusion matrix, reliability diagram, UMAP of inputs and of pre-softmax
outputs, and for attention models the attention maps of each layer.
"""
from __future__ import annotations

import argparse
import inspect
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from contract.classes import CLASS_DESCRIPTIONS as CLASS_NAMES
from contract.cli import check_output_args
from contract.context import DETECTOR_NAMES
from contract.errors import InputError
from contract.features import FEATURE_NAMES, model_input_names
from contract.jsonio import json_text
from contract.physical_context import CONTEXT_ENCODINGS, PHYSICAL_CONTEXT_VERSION
from kernels.metrics import classification_metrics

from .checkpoint import check_weights, torch_load
from .data import FeatureDataModule
from .models import AttentionClassifier
from .module import CHECKPOINT_META_KEY, DefectClassifier


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[DefectClassifier, dict]:
    """(model in eval mode, datamodule hyperparameters) from a Lightning checkpoint, loaded weights_only;
    ``InputError`` with a one-line reason for anything else (``read_checkpoint``)."""
    module, data_hparams, _ = read_checkpoint(path, device)
    return module, data_hparams


def read_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[DefectClassifier, dict, dict | None]:
    """(model in eval mode, datamodule hyperparameters, the checkpoint's inference metadata or None).

    Loading is ``weights_only`` (no code from the file runs). Refused with ``InputError`` naming the file and
    the reason: not a file, not a PyTorch checkpoint, a pickled object, not a checkpoint of this project's
    classifier (another model kind), weights that do not fit the architecture, another feature layout;
    ``CorruptDataError`` (exit 3) for NaN/infinite weights or weights that differ from their stored sha256
    (``training.checkpoint.check_weights``)."""
    path = Path(path)
    name = path.name
    ckpt = torch_load(path, device, use="use a last.ckpt written by `python -m training fit`")
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        kind = type(ckpt).__name__ if not isinstance(ckpt, dict) else f"a dict with keys {sorted(ckpt)[:6]}"
        raise InputError(f"checkpoint {name}: not a Lightning checkpoint of this project's classifier ({kind}); "
                         "use a last.ckpt written by `python -m training fit`")
    check_weights(ckpt, path)
    hparams = {k: v for k, v in dict(ckpt["hyper_parameters"]).items() if not k.startswith("_")}
    known = set(inspect.signature(DefectClassifier.__init__).parameters) - {"self"}
    unknown = sorted(set(hparams) - known)
    if unknown:
        raise InputError(f"checkpoint {name}: a model of another kind (hyperparameters {unknown} are not this "
                         "project's DefectClassifier's)")
    try:
        module = DefectClassifier(**hparams)
        module.load_state_dict(ckpt["state_dict"])
    except (ValueError, TypeError, RuntimeError) as err:
        raise InputError(f"checkpoint {name}: its weights do not fit a {hparams.get('architecture')!r} "
                         f"classifier ({' '.join(str(err).split())[:160]})") from None
    data_hparams = {k: v for k, v in ckpt.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")}
    meta = ckpt.get(CHECKPOINT_META_KEY)
    if meta is not None:
        names = tuple(str(n) for n in meta.get("feature_names") or ())
        if names != FEATURE_NAMES:
            k = next((i for i, (a, b) in enumerate(zip(names, FEATURE_NAMES)) if a != b), min(len(names), len(FEATURE_NAMES)))
            raise InputError(f"checkpoint {name}: trained on another feature layout ({len(names)} stored features, "
                             f"column {k} is {names[k] if k < len(names) else None!r} where this version has "
                             f"{FEATURE_NAMES[k] if k < len(FEATURE_NAMES) else None!r}); retrain it on a store "
                             "encoded by this version")
        encoding = meta.get("context_encoding", "shells")
        if encoding not in CONTEXT_ENCODINGS:
            raise InputError(f"checkpoint {name}: unknown context encoding {encoding!r} (this version knows "
                             f"{', '.join(CONTEXT_ENCODINGS)})")
        if encoding == "physical" and meta.get("physical_context_version") != PHYSICAL_CONTEXT_VERSION:
            raise InputError(f"checkpoint {name}: trained on physical context version "
                             f"{meta.get('physical_context_version')}, this version computes "
                             f"{PHYSICAL_CONTEXT_VERSION}; retrain it")
        n_in = len(model_input_names(str(meta.get("feature_set", "all")), encoding))
        if n_in != hparams.get("in_features", n_in):
            raise InputError(f"checkpoint {name}: the model takes {hparams.get('in_features')} features but its "
                             f"feature set {meta.get('feature_set')!r} has {n_in}")
    return module.to(device).eval(), data_hparams, meta


@torch.no_grad()
def predict_logits(model: torch.nn.Module, features: np.ndarray, batch_size: int, device) -> torch.Tensor:
    """Pre-softmax outputs (n, 5) for features (n, k), in eval mode, batch by batch."""
    model.eval()
    x = torch.from_numpy(features)
    return torch.cat([model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def evaluate(
    ckpt: str | Path,
    store: str | None,
    out: str | Path,
    batch_size: int = 65536,
    umap_samples: int = 2000,
    train_accuracy: bool = True,
    device: str = "auto",
    seed: int = 0,
) -> dict:
    """Evaluate one checkpoint; returns the metrics written to ``out/metrics.json``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    module, data_hparams = load_checkpoint(ckpt, device)
    if store is not None:
        data_hparams["store"] = str(store)
    dm = FeatureDataModule(**data_hparams)
    index, train_rows, test_rows = dm.split_rows()
    x_test = dm.read_inputs(index, test_rows)
    y_test = torch.from_numpy(index.label[test_rows].astype(np.int64))
    logits = predict_logits(module.model, x_test, batch_size, device)
    probs = torch.softmax(logits, dim=1)
    metrics: dict = {"test": classification_metrics(probs, y_test)}
    metrics["test"]["by_detector"] = {}
    for det in DETECTOR_NAMES:
        mask = torch.from_numpy(index.row_detectors[test_rows] == det)
        if mask.any():
            metrics["test"]["by_detector"][det] = classification_metrics(probs[mask], y_test[mask])
    test_hosts = index.row_hosts[test_rows]
    if len(set(test_hosts.tolist())) > 1:  # a held-out dopant's hosts, or the random split's: each apart
        metrics["test"]["by_host"] = {}
        for host in sorted(set(test_hosts.tolist())):
            mask = torch.from_numpy(test_hosts == host)
            metrics["test"]["by_host"][host] = classification_metrics(probs[mask], y_test[mask])
    if train_accuracy:
        x_train = dm.read_inputs(index, train_rows)
        pred = predict_logits(module.model, x_train, batch_size, device).argmax(1)
        accuracy = float((pred.numpy() == index.label[train_rows]).mean())
        metrics["train"] = {"n": int(len(train_rows)), "accuracy": accuracy}
    metrics["checkpoint"] = str(ckpt)
    metrics["model"] = dict(module.hparams)
    metrics["data"] = data_hparams
    metrics["class_names"] = list(CLASS_NAMES)
    metrics["feature_names"] = model_input_names(dm.feature_set, dm.context_encoding)
    metrics["environment"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(module, metrics, x_test, logits, y_test.numpy(), out, umap_samples, seed)
    metrics["figures"] = figures
    (out / "metrics.json").write_text(json_text(metrics, indent=1))
    return metrics


def write_figures(module, metrics, x_test, logits, labels, out: Path, umap_samples: int, seed: int) -> list[str]:
    """Confusion matrix, reliability diagram, UMAPs and attention maps as PNG files in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    test = metrics["test"]
    cm = np.asarray(test["confusion_matrix"], dtype=float)
    fig, ax = plt.subplots(figsize=(5, 4.2))
    im = ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), vmin=0, vmax=1, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=7)
    ax.set(xticks=range(5), yticks=range(5), xlabel="predicted", ylabel="true",
           title=f"accuracy {test['accuracy']:.4f}")
    ax.set_xticklabels(CLASS_NAMES, rotation=30, ha="right", fontsize=7)
    ax.set_yticklabels(CLASS_NAMES, fontsize=7)
    fig.colorbar(im, ax=ax, label="fraction of true class")
    save(fig, "confusion_matrix.png")

    rel = test["reliability"]
    edges = np.asarray(rel["bin_edges"])
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    filled = np.asarray(rel["count"]) > 0
    ax.bar(edges[:-1][filled], np.asarray(rel["accuracy"])[filled], width=np.diff(edges)[filled], align="edge",
           edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=f"ECE {test['ece']:.4f}")
    ax.legend(loc="upper left", fontsize=8)
    save(fig, "reliability_diagram.png")

    if umap_samples > 0:
        import umap

        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(labels), min(umap_samples, len(labels)), replace=False))
        for name, data in (("umap_inputs.png", x_test[pick]), ("umap_logits.png", logits.numpy()[pick])):
            emb = umap.UMAP(n_components=2, random_state=seed, n_jobs=1).fit_transform(data)
            fig, ax = plt.subplots(figsize=(5, 4.5))
            for c, cname in enumerate(CLASS_NAMES):
                sel = labels[pick] == c
                ax.scatter(emb[sel, 0], emb[sel, 1], s=3, label=cname)
            ax.set(title=("UMAP of inputs" if "inputs" in name else "UMAP of pre-softmax outputs"),
                   xticks=[], yticks=[])
            ax.legend(markerscale=4, fontsize=7)
            save(fig, name)

    if isinstance(module.model, AttentionClassifier):
        maps = module.model.attention_maps().detach().cpu().numpy()
        names = metrics["feature_names"]
        fig, axes = plt.subplots(1, len(maps), figsize=(5.2 * len(maps), 5))
        for i, (ax, m) in enumerate(zip(np.atleast_1d(axes), maps)):
            im = ax.imshow(m, cmap="viridis")
            ax.set(title=f"layer {i + 1} (running attention)", xlabel="key feature", ylabel="query feature")
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=5)
            ax.set_yticks(range(len(names)), names, fontsize=5)
            fig.colorbar(im, ax=ax, fraction=0.046)
        save(fig, "attention_maps.png")
        np.save(out / "attention_maps.npy", maps)
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training evaluate", description=__doc__.split("\n\n")[1])
    p.add_argument("--ckpt", required=True, help="Lightning checkpoint (.ckpt)")
    p.add_argument("--data.store", "--store", dest="store", default=None, help="store (default: the checkpoint's)")
    p.add_argument("--out", required=True, help="output directory for metrics.json and figures")
    p.add_argument("--batch-size", type=int, default=65536)
    p.add_argument("--umap-samples", type=int, default=2000, help="test rows in the UMAPs (0: no UMAP)")
    p.add_argument("--no-train-accuracy", action="store_true", help="skip predicting the training rows")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    check_output_args(a)  # before the checkpoint and the store are read
    if not Path(a.ckpt).is_file():
        from contract.errors import InputError

        raise InputError(f"--ckpt {a.ckpt!r} does not exist (a run's checkpoints are in RUN_DIR/checkpoints/)")
    m = evaluate(a.ckpt, a.store, a.out, a.batch_size, a.umap_samples, not a.no_train_accuracy, a.device)
    t = m["test"]
    print(f"test accuracy {t['accuracy']:.4f}  entropy {t['mean_entropy_nats']:.4f} nats  ECE {t['ece']:.4f}  "
          f"kappa {t['cohen_kappa']:.4f}  -> {a.out}/metrics.json")
