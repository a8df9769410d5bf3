"""Models scored against the experts' consensus (paper section 6, Fig. 6d-f and Table 1's κ and defect F1).

For every model prediction registered in the project (``labelling add --sites`` or ``labelling predict``) and
every image, ``inference.score.run_score`` scores the prediction against the consensus (``consensus.run_consensus``
written into ``OUT/consensus``). Per model and detector the table gives Cohen's κ averaged over the images (as
the paper reports it) and, pooled over the matched sites of all those images, κ and the defect F1 per defect
class (``kernels.metrics``: the same functions as training's evaluation).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from contract.classes import DEFECT_CLASSES, N_CLASSES
from contract.errors import InputError
from inference.score import run_score

from . import db
from .consensus import run_consensus
from .project import Project

UNKNOWN = "unknown"


def pooled_metrics(confusion: np.ndarray) -> dict:
    """κ, accuracy and defect F1 of a (5, 5) confusion matrix (rows true, columns predicted), through
    ``torchmetrics`` and ``kernels.metrics.defect_f1`` on the label pairs it counts."""
    # deferred: torch, torchmetrics and kernels.metrics take seconds to import; only the scoring needs them
    import torch
    from torchmetrics.functional.classification import multiclass_cohen_kappa

    from kernels.metrics import defect_f1

    cm = np.asarray(confusion, dtype=np.int64).reshape(N_CLASSES, N_CLASSES)
    true, pred = np.divmod(np.repeat(np.arange(N_CLASSES * N_CLASSES), cm.ravel()), N_CLASSES)
    if len(true) == 0:
        return {"n": 0, "accuracy": math.nan, "cohen_kappa": math.nan, "f1_defect": {k: math.nan for k in DEFECT_CLASSES}}
    t, p = torch.from_numpy(true), torch.from_numpy(pred)
    return {"n": int(len(true)), "accuracy": float((t == p).float().mean()),
            "cohen_kappa": float(multiclass_cohen_kappa(p, t, N_CLASSES)), "f1_defect": defect_f1(p, t)}


def score_predictions(project: Project, consensus_dir, tolerance_fraction: float = 0.3) -> tuple[list[dict], list[str]]:
    """One row per (model, image): ``inference score``'s numbers against the consensus, and notes on the
    pairs that could not be scored."""
    rows, notes = [], []
    with project.session() as con:
        preds = db.predictions(con)
    for r in preds:
        truth = Path(consensus_dir) / r.image_name
        if r.pixel_size_angstrom is None:
            notes.append(f"{r.model} on {r.image_name}: not scored, the image has no pixel size (re-add it with "
                         "--pixel-size-angstrom or --host)")
            continue
        score = run_score(project.root / r.dir, truth, tolerance_fraction)
        rows.append({"model": r.model, "image": r.image_name, "detector": r.detector or UNKNOWN,
                     "n_true": score["n_true"], "n_matched": score["n_matched"], "recall": score["recall"],
                     "cohen_kappa": score.get("cohen_kappa", math.nan),
                     "f1_defect": score.get("f1_defect", {k: math.nan for k in DEFECT_CLASSES}),
                     "confusion_matrix": score.get("confusion_matrix", np.zeros((N_CLASSES, N_CLASSES), int).tolist())})
    return rows, notes


def summarise(rows: list[dict]) -> list[dict]:
    """Per (model, detector): images, matched sites, κ mean over images, pooled κ, pooled defect F1."""
    out = []
    for model, det in sorted({(r["model"], r["detector"]) for r in rows}):
        sel = [r for r in rows if r["model"] == model and r["detector"] == det]
        kappas = [r["cohen_kappa"] for r in sel if not math.isnan(r["cohen_kappa"])]
        pooled = pooled_metrics(np.sum([r["confusion_matrix"] for r in sel], axis=0))
        out.append({"model": model, "detector": det, "n_images": len(sel), "n_sites": pooled["n"],
                    "recall": float(np.mean([r["recall"] for r in sel])),
                    "kappa_mean_over_images": float(np.mean(kappas)) if kappas else math.nan,
                    "kappa_pooled": pooled["cohen_kappa"], "accuracy_pooled": pooled["accuracy"],
                    **{f"f1_{k}": v for k, v in pooled["f1_defect"].items()}})
    return out


def format_table(summary: list[dict]) -> str:
    cols = ["model", "detector", "n_images", "n_sites", "kappa_mean_over_images", "kappa_pooled",
            *[f"f1_{k}" for k in DEFECT_CLASSES]]
    heads = ["model", "detector", "images", "sites", "κ (mean)", "κ (pooled)", *[f"F1 {k}" for k in DEFECT_CLASSES]]

    def cell(v):
        return "—" if isinstance(v, float) and math.isnan(v) else (f"{v:.3f}" if isinstance(v, float) else str(v))

    table = [heads] + [[cell(r[c]) for c in cols] for r in summary]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in table)


def _bar_labels(values) -> list[str]:
    return ["n/a" if v is None or math.isnan(v) else f"{v:.2f}" for v in values]


def plot(summary: list[dict], path: Path, agreement: dict | None = None) -> None:
    """κ per model and detector (left), defect F1 per class and model, one panel per detector (Fig. 6d-f)."""
    import matplotlib  # deferred: matplotlib takes a second or two to import; only the figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in summary})
    dets = sorted({r["detector"] for r in summary})
    fig, axes = plt.subplots(1, 1 + len(dets), figsize=(4.2 * (1 + len(dets)), 3.6), squeeze=False)
    ax = axes[0, 0]
    width = 0.8 / max(len(dets), 1)
    x = np.arange(len(models))
    for j, det in enumerate(dets):
        vals = [next((r["kappa_mean_over_images"] for r in summary if r["model"] == m and r["detector"] == det),
                     np.nan) for m in models]
        bars = ax.bar(x + (j - (len(dets) - 1) / 2) * width, np.nan_to_num(vals), width, label=det)
        ax.bar_label(bars, labels=_bar_labels(vals), fontsize=7)
    if agreement and not math.isnan(agreement.get("fleiss_kappa", math.nan)):
        ax.axhline(agreement["fleiss_kappa"], color="k", ls="--", lw=1, label="annotators (Fleiss κ)")
    ax.set_xticks(x, models, rotation=30, ha="right")
    ax.set_ylim(min(0, ax.get_ylim()[0]), 1)
    ax.set_ylabel("Cohen's κ vs consensus (mean over images)")
    ax.legend(fontsize=8)
    classes = list(DEFECT_CLASSES)
    cw = 0.8 / len(classes)
    for k, det in enumerate(dets):
        a = axes[0, k + 1]
        for j, cls in enumerate(classes):
            vals = [next((r[f"f1_{cls}"] for r in summary if r["model"] == m and r["detector"] == det), np.nan)
                    for m in models]
            bars = a.bar(x + (j - (len(classes) - 1) / 2) * cw, np.nan_to_num(vals), cw, label=cls.replace("_", " "))
            a.bar_label(bars, labels=_bar_labels(vals), fontsize=6)
        a.set_xticks(x, models, rotation=30, ha="right")
        a.set_ylim(0, 1)
        a.set_title(f"{det}: defect F1 (pooled over images; n/a: class absent)", fontsize=9)
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_report(project: Project, out_dir=None, min_votes: int = 3, rule: str = "plurality",
               tolerance_fraction: float = 0.3) -> dict:
    """Consensus into ``OUT/consensus``, every registered prediction scored against it; writes
    ``OUT/models.csv`` (one row per model and detector), ``OUT/scores.csv`` (per model and image),
    ``OUT/report.json`` and ``OUT/models.png``. Returns the paths, the table text and notes."""
    out = Path(out_dir) if out_dir else project.root / "report"
    with project.session() as con:
        n_preds = db.count_predictions(con)
    if n_preds == 0:
        raise InputError(f"{project.root}: no model predictions to score; add them with `python -m labelling "
                         "predict --project DIR --model CKPT` (or `add --sites CLASSIFY_DIR/sites.csv`)")
    consensus = run_consensus(project, out / "consensus", min_votes, rule)
    rows, notes = score_predictions(project, out / "consensus", tolerance_fraction)
    summary = summarise(rows)
    out.mkdir(parents=True, exist_ok=True)
    files = {"csv": str(out / "models.csv"), "scores": str(out / "scores.csv"), "json": str(out / "report.json"),
             "figure": str(out / "models.png")}
    with open(files["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(summary[0]) if summary else ["model"])
        w.writeheader()
        w.writerows(summary)
    with open(files["scores"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "image", "detector", "n_true", "n_matched", "recall", "cohen_kappa",
                    *[f"f1_{k}" for k in DEFECT_CLASSES]])
        for r in rows:
            w.writerow([r["model"], r["image"], r["detector"], r["n_true"], r["n_matched"], r["recall"],
                        r["cohen_kappa"], *[r["f1_defect"][k] for k in DEFECT_CLASSES]])
    unresolved = sum(i["status_counts"]["tie"] + i["status_counts"]["no_majority"] + i["status_counts"]["too_few_votes"]
                     for i in consensus["images"])
    if unresolved:
        notes.append(f"{unresolved} site(s) without consensus are left out of the reference (see "
                     f"{out / 'consensus'}/<image>/unresolved.csv)")
    if not rows:
        notes.append("nothing could be scored")
    plot(summary, Path(files["figure"]), consensus["overall"])
    report = {"models": summary, "scores": rows, "annotator_agreement": consensus["overall"],
              "min_votes": min_votes, "rule": rule, "tolerance_fraction": tolerance_fraction, "notes": notes}
    Path(files["json"]).write_text(json.dumps(report, indent=2, default=float))
    text = format_table(summary)
    o = consensus["overall"]
    text += (f"\nannotators: {', '.join(o['annotators'])}; Fleiss κ {o['fleiss_kappa']:.3f} over "
             f"{o['n_sites_fleiss']} sites")
    return {"files": files, "table_text": text, "notes": notes, "summary": summary}
