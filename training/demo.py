"""Train and evaluate the paper's six models on one store, and print Table 1 in the paper's layout.

``python -m training demo --store data/demo.zarr --out runs/demo [--max-epochs N]``
``python -m training demo-table --runs runs/demo``
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from contract.classes import DEFECT_CLASSES
from contract.context import DETECTOR_NAMES

from .cli import run_cli
from .evaluate import evaluate

CONFIG_DIR = Path("configs/train")
"""base.yaml and the six model files (relative to the working directory: the repository root)."""
MODELS = {  # Table 1 row name -> config
    "MLP-NoContext": "mlp-nocontext",
    "MLP-Simple": "mlp-simple",
    "MLP-Deep": "mlp-deep",
    "attn-4k": "attn-4k",
    "attn-200k": "attn-200k",
    "attn-400k": "attn-400k",
}
# The paper's Table 1 (simulated data for accuracy; kappa and F1 on experimental WSe2) and section 5 entropies.
PAPER = {
    "MLP-NoContext": {"train": 73.2, "test": 73.2, "entropy": 0.628},
    "MLP-Simple": {"train": 98.6, "test": 98.6},
    "MLP-Deep": {"train": 98.6, "test": 98.6},
    "attn-4k": {"train": 98.7, "test": 98.7},
    "attn-200k": {"train": 98.5, "test": 98.5},
    "attn-400k": {"train": 98.4, "test": 98.4},
}
PAPER_CONTEXT_ENTROPY = 0.0375


def model_config_args(name: str, config_dir: str | Path = CONFIG_DIR) -> list[str]:
    """``--config base.yaml --config NAME.yaml`` for one of the six models."""
    config_dir = Path(config_dir)
    paths = [config_dir / "base.yaml", config_dir / f"{name}.yaml"]
    for path in paths:
        if not path.is_file():
            from contract.errors import InputError

            raise InputError(f"training config {path} not found (run from the repository root or pass --configs DIR)")
    return [a for path in paths for a in ("--config", str(path))]


def run_demo(store: str, out: str | Path, max_epochs: int | None = None, models: list[str] | None = None,
             umap_samples: int = 2000, accelerator: str = "cpu", batch_size: int | None = None,
             config_dir: str | Path = CONFIG_DIR) -> Path:
    """Fit each model (resuming a finished or interrupted run in ``out/<config>``) and evaluate it."""
    out = Path(out)
    for row, config in MODELS.items():
        if models and row not in models and config not in models:
            continue
        run_dir = out / config
        args = [
            "fit", *model_config_args(config, config_dir),
            "--data.store", str(store), "--run_dir", str(run_dir),
            "--trainer.accelerator", accelerator, "--trainer.strategy", "auto", "--trainer.devices", "1",
        ]
        if max_epochs is not None:
            args += ["--trainer.max_epochs", str(max_epochs)]
        if batch_size is not None:  # a small store has few steps per epoch at the paper's batch sizes
            args += ["--data.batch_size", str(batch_size)]
        print(f"== {row}: training ({config}) ==", flush=True)
        run_cli(args)
        print(f"== {row}: evaluating ==", flush=True)
        evaluate(run_dir / "checkpoints" / "last.ckpt", store, run_dir / "eval", umap_samples=umap_samples)
    return out


def _fmt(value, scale=1.0, digits=3, strip_zero=False):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value * scale:.{digits}f}"
    return text[1:] if strip_zero and text.startswith("0.") else text


def table(runs: str | Path) -> tuple[str, dict]:
    """Markdown table in the layout of the paper's Table 1 (plus entropy and ECE), from ``runs/*/eval``."""
    runs = Path(runs)
    head = ("| Model | Train Acc. (%) | Test Acc. (%) | κ HAADF | κ MAADF | F1 single vac. HAADF | MAADF "
            "| F1 double vac. HAADF | MAADF | F1 dopant HAADF | MAADF | entropy (nats) | ECE |")
    lines = [head, "|" + "---|" * 13]
    rows = {}
    for row, config in MODELS.items():
        path = runs / config / "eval" / "metrics.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text())
        t, det = m["test"], m["test"].get("by_detector", {})

        def by(d, key, sub=None):
            v = det.get(d, {}).get(key)
            return v.get(sub) if (sub and isinstance(v, dict)) else v

        cells = [
            _fmt(m.get("train", {}).get("accuracy"), 100, 1), _fmt(t["accuracy"], 100, 1),
            *[_fmt(by(d, "cohen_kappa"), digits=3, strip_zero=True) for d in DETECTOR_NAMES],
        ]
        for cls in DEFECT_CLASSES:
            cells += [_fmt(by(d, "f1_defect", cls), digits=3, strip_zero=True) for d in DETECTOR_NAMES]
        cells += [_fmt(t["mean_entropy_nats"], digits=4), _fmt(t["ece"], digits=4)]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
        rows[row] = {"train_accuracy": m.get("train", {}).get("accuracy"), "test": t["accuracy"],
                     "entropy_nats": t["mean_entropy_nats"], "ece": t["ece"],
                     "kappa": {d: by(d, "cohen_kappa") for d in DETECTOR_NAMES},
                     "f1_defect": {d: by(d, "f1_defect") for d in DETECTOR_NAMES},
                     "n_test": t["n"], "store": m["data"].get("store")}
    if not rows:
        raise FileNotFoundError(f"no */eval/metrics.json under {runs}: run `python -m training demo` first")
    lines += [
        "",
        "κ and F1 here are on the simulated test split, per detector (the paper's are on experimental WSe2 images).",
        "F1: defect/non-defect recast per defect class (rows of that class and of non-defect classes 0, 3).",
        "",
        "Paper (Table 1, section 5): " + ", ".join(f"{k} {v['test']}%" for k, v in PAPER.items())
        + f"; entropy MLP-NoContext {PAPER['MLP-NoContext']['entropy']} nats, context models "
        f"{PAPER_CONTEXT_ENTROPY} nats (mean).",
    ]
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training demo", description="train + evaluate the six models")
    p.add_argument("--store", required=True)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--max-epochs", type=int, default=None, help="override the configs' epochs (demo)")
    p.add_argument("--models", nargs="*", default=None, help="subset, e.g. MLP-Simple attn-4k")
    p.add_argument("--umap-samples", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=None, help="override the configs' batch sizes (demo)")
    p.add_argument("--accelerator", default="cpu")
    p.add_argument("--configs", default=str(CONFIG_DIR), help="directory of base.yaml and the model configs")
    a = p.parse_args(argv)
    run_demo(a.store, a.out, a.max_epochs, a.models, a.umap_samples, a.accelerator, a.batch_size, a.configs)
    table_main(["--runs", a.out])


def table_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training demo-table", description="Table 1 from a demo run")
    p.add_argument("--runs", default="runs/demo")
    a = p.parse_args(argv)
    text, rows = table(a.runs)
    print(text)
    (Path(a.runs) / "table1.md").write_text(text + "\n")
    (Path(a.runs) / "table1.json").write_text(json.dumps(rows, indent=1))
    print(f"\nwritten: {Path(a.runs) / 'table1.md'}, {Path(a.runs) / 'table1.json'}")
