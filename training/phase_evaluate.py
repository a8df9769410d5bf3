"""The comparison of the two arms on unseen structures: table and figures from ``predictions.npz`` files.

For every (arm, seed) the test folds are pooled (each image is tested exactly once, by the model that never
saw its structure), and scored at two levels:

* image level: the mean softmax over the image's evaluation patches, arg-max -> accuracy, macro-F1 over the 17
  groups, confusion matrix, accuracy per dose bin (``peak_counts``);
* patch level: each patch on its own -> accuracy.

Across seeds: mean and standard deviation, and the paired difference symmetry - image (same folds, same seed).
Nothing in the test folds is filtered.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from contract.planegroups import N_PLANE_GROUPS, PLANE_GROUPS
from contract.jsonio import json_text

DOSE_BINS = (0.0, 10.0, 30.0, 100.0, np.inf)
"""Edges of the peak-count bins (mean counts at the brightest atom) for accuracy against dose."""


def load_runs(runs: str | Path) -> dict:
    """{(arm, seed): [npz dicts of its folds]} from every predictions.npz under ``runs``."""
    out: dict = {}
    for path in sorted(Path(runs).rglob("predictions.npz")):
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
        key = (str(d["arm"]), int(d["seed"]))
        out.setdefault(key, []).append(d)
    if not out:
        raise FileNotFoundError(f"no predictions.npz under {runs}: run `python -m training phase demo` or `kfold`")
    return out


def score(folds: list[dict]) -> dict:
    """Metrics of one (arm, seed) over its pooled test folds."""
    from sklearn.metrics import confusion_matrix, f1_score

    label = np.concatenate([f["label"] for f in folds])
    probs = np.concatenate([f["patch_probs"] for f in folds])  # (n, patches, 17)
    dose = np.concatenate([f["peak_counts"] for f in folds])
    image_pred = probs.mean(axis=1).argmax(axis=1)
    patch_pred = probs.argmax(axis=2)
    correct = image_pred == label
    by_dose = {}
    for lo, hi in zip(DOSE_BINS[:-1], DOSE_BINS[1:]):
        sel = (dose >= lo) & (dose < hi)
        by_dose[f"{lo:g}-{hi:g}"] = {"n": int(sel.sum()), "accuracy": float(correct[sel].mean()) if sel.any() else None}
    per_fold = {int(f["fold"]): float((f["patch_probs"].mean(axis=1).argmax(axis=1) == f["label"]).mean())
                for f in folds}
    return {
        "n_images": int(len(label)),
        "folds": sorted(per_fold),
        "n_folds": int(folds[0]["n_folds"]),
        "image_accuracy": float(correct.mean()),
        "patch_accuracy": float((patch_pred == label[:, None]).mean()),
        "macro_f1": float(f1_score(label, image_pred, labels=np.arange(N_PLANE_GROUPS), average="macro",
                                   zero_division=0)),
        "accuracy_by_fold": per_fold,
        "accuracy_by_dose": by_dose,
        "accuracy_by_group": {g: (float(correct[label == i].mean()) if (label == i).any() else None)
                              for i, g in enumerate(PLANE_GROUPS)},
        "confusion": confusion_matrix(label, image_pred, labels=np.arange(N_PLANE_GROUPS)).tolist(),
        "test_structures": int(len(np.unique(np.concatenate([f["structure"] for f in folds])))),
    }


def compare(runs: str | Path) -> dict:
    """Per arm: per-seed scores and mean/sd; the paired difference symmetry - image per seed."""
    by_key = {k: score(v) for k, v in load_runs(runs).items()}
    arms = sorted({a for a, _ in by_key})
    result = {"arms": {}, "runs": str(runs)}
    for arm in arms:
        seeds = sorted(s for a, s in by_key if a == arm)
        per_seed = {s: by_key[(arm, s)] for s in seeds}
        summary = {}
        for metric in ("image_accuracy", "patch_accuracy", "macro_f1"):
            vals = np.array([per_seed[s][metric] for s in seeds])
            summary[metric] = {"mean": float(vals.mean()), "sd": float(vals.std(ddof=1)) if len(vals) > 1 else None,
                               "per_seed": {str(s): float(v) for s, v in zip(seeds, vals)}}
        result["arms"][arm] = {"seeds": seeds, "summary": summary, "per_seed": {str(s): v for s, v in per_seed.items()}}
    if {"image", "symmetry"} <= set(arms):
        common = sorted(set(result["arms"]["image"]["seeds"]) & set(result["arms"]["symmetry"]["seeds"]))
        diff = np.array([by_key[("symmetry", s)]["image_accuracy"] - by_key[("image", s)]["image_accuracy"]
                         for s in common])
        result["difference_symmetry_minus_image"] = {
            "seeds": common, "per_seed": [float(d) for d in diff], "mean": float(diff.mean()) if len(diff) else None,
            "sd": float(diff.std(ddof=1)) if len(diff) > 1 else None}
    return result


def _pm(s: dict, scale: float = 100.0, digits: int = 1) -> str:
    if s["sd"] is None:
        return f"{s['mean'] * scale:.{digits}f}"
    return f"{s['mean'] * scale:.{digits}f} ± {s['sd'] * scale:.{digits}f}"


def table(result: dict) -> str:
    lines = ["| arm | channels | image acc. (%) | patch acc. (%) | macro-F1 | seeds | folds | test images |",
             "|---|---|---|---|---|---|---|---|"]
    for arm, r in result["arms"].items():
        first = r["per_seed"][str(r["seeds"][0])]
        lines.append(f"| {arm} | {1 if arm == 'image' else 8} | {_pm(r['summary']['image_accuracy'])} | "
                     f"{_pm(r['summary']['patch_accuracy'])} | {_pm(r['summary']['macro_f1'], 1.0, 3)} | "
                     f"{','.join(map(str, r['seeds']))} | {len(first['folds'])} of {first['n_folds']} | "
                     f"{first['n_images']} ({first['test_structures']} structures) |")
    d = result.get("difference_symmetry_minus_image")
    if d and d["mean"] is not None:
        sd = "" if d["sd"] is None else f" ± {d['sd'] * 100:.1f}"
        lines += ["", f"symmetry − image, image-level accuracy on unseen structures: {d['mean'] * 100:+.1f}{sd} points "
                  f"(per seed: {', '.join(f'{v * 100:+.1f}' for v in d['per_seed'])})."]
    lines += ["", "Accuracy by dose (peak counts at the brightest atom), image level, mean over seeds:", "",
              "| arm | " + " | ".join(next(iter(result["arms"].values()))["per_seed"][
                  str(next(iter(result["arms"].values()))["seeds"][0])]["accuracy_by_dose"]) + " |"]
    lines.append("|---|" + "---|" * (len(DOSE_BINS) - 1))
    for arm, r in result["arms"].items():
        cells = []
        for b in r["per_seed"][str(r["seeds"][0])]["accuracy_by_dose"]:
            vals = [r["per_seed"][str(s)]["accuracy_by_dose"][b]["accuracy"] for s in r["seeds"]]
            vals = [v for v in vals if v is not None]
            n = r["per_seed"][str(r["seeds"][0])]["accuracy_by_dose"][b]["n"]
            cells.append("–" if not vals else f"{np.mean(vals) * 100:.1f} (n={n})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "Paper (seed 000): 45.3 % without symmetry channels, 96 % with them, on its own 'unseen structures' "
              "(random draws, not grouped by structure)."]
    return "\n".join(lines)


def figures(result: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    arms = list(result["arms"])
    fig, axes = plt.subplots(1, len(arms), figsize=(7 * len(arms), 6.2), squeeze=False)
    for ax, arm in zip(axes[0], arms):
        r = result["arms"][arm]
        cm = np.sum([np.asarray(r["per_seed"][str(s)]["confusion"], float) for s in r["seeds"]], axis=0)
        rows = cm.sum(axis=1, keepdims=True)
        norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        ax.set_xticks(range(N_PLANE_GROUPS), PLANE_GROUPS, rotation=90)
        ax.set_yticks(range(N_PLANE_GROUPS), PLANE_GROUPS)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true (computed)")
        ax.set_title(f"{arm}: image-level, unseen structures, {_pm(r['summary']['image_accuracy'])} %")
    fig.tight_layout()
    paths.append(out / "confusion.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm in arms:
        r = result["arms"][arm]
        bins = list(r["per_seed"][str(r["seeds"][0])]["accuracy_by_dose"])
        vals = np.array([[np.nan if r["per_seed"][str(s)]["accuracy_by_dose"][b]["accuracy"] is None
                          else r["per_seed"][str(s)]["accuracy_by_dose"][b]["accuracy"] for b in bins]
                         for s in r["seeds"]], float)
        seen = np.isfinite(vals)
        mean = np.where(seen.any(0), np.nansum(vals, 0) / np.maximum(seen.sum(0), 1), np.nan)
        sd = np.array([np.std(v[np.isfinite(v)]) if np.isfinite(v).sum() > 1 else 0.0 for v in vals.T])
        ax.errorbar(range(len(bins)), mean * 100, yerr=sd * 100, marker="o", capsize=3, label=arm)
        ax.set_xticks(range(len(bins)), bins)
    ax.set_xlabel("peak counts at the brightest atom")
    ax.set_ylabel("image-level accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title("accuracy against dose, unseen structures")
    fig.tight_layout()
    paths.append(out / "accuracy_vs_dose.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def write_comparison(runs: str | Path, out: str | Path | None = None) -> tuple[str, dict]:
    """Write ``comparison.md``, ``comparison.json``, ``confusion.png`` and ``accuracy_vs_dose.png`` into
    ``out`` (default ``runs``); returns (markdown, result)."""
    out = Path(out or runs)
    out.mkdir(parents=True, exist_ok=True)
    result = compare(runs)
    text = table(result)
    (out / "comparison.md").write_text(text + "\n")
    (out / "comparison.json").write_text(json_text(result, indent=1))
    result["figures"] = [str(p) for p in figures(result, out)]
    return text, result
