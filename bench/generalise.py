"""How far the context carries: leave-one-host-out training and testing on a store of many hosts.

    python -m simulate run --config configs/dataset/hosts.yaml --out data/hosts.zarr --resume   # ~1 h on 2 cores
    python -m features encode --store data/hosts.zarr
    nice -n 10 python bench/generalise.py --store data/hosts.zarr [--models MLP-NoContext MLP-Simple attn-4k]

For every host of the store and every model: train on all other hosts (``data.split: by_host``, the configs'
default schedule) and test on the held-out host; for reference, the same models on a random 80/20 split of all
hosts (hosts seen in training). Per host and model: test accuracy, Cohen's kappa and the confusion matrix, written
to ``bench/results/generalise-<date>.json`` with a bar chart ``generalise-<date>.png``. Runs live under ``--out``;
a finished (host, model) run is reused, so an interrupted benchmark resumes where it stopped.

The baseline is the same model on seen hosts (random split), in the same run; the physical limit is the
classes' separability on a seen host, which the random-split accuracy estimates.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import print_table, versions, write_result  # noqa: E402

MODELS = {"MLP-NoContext": "mlp-nocontext", "MLP-Simple": "mlp-simple", "MLP-Deep": "mlp-deep",
          "attn-4k": "attn-4k", "attn-200k": "attn-200k", "attn-400k": "attn-400k"}
SEEN = "seen (random 80/20)"


def summarise(run_dir: Path, record: dict) -> dict:
    """Test accuracy, kappa, per-class recall and the schedule of one finished run."""
    m = json.loads((run_dir / "eval" / "metrics.json").read_text())
    cm = np.asarray(m["test"]["confusion_matrix"])
    recall = (np.diag(cm) / np.maximum(cm.sum(1), 1)).round(4).tolist()
    return {"accuracy": m["test"]["accuracy"], "cohen_kappa": m["test"]["cohen_kappa"], "n_test": m["test"]["n"],
            "mean_entropy_nats": m["test"]["mean_entropy_nats"], "confusion_matrix": cm.tolist(),
            "recall_per_class": recall,
            "kappa_by_detector": {d: v["cohen_kappa"] for d, v in m["test"]["by_detector"].items()},
            "schedule": record["schedule"], "fit_and_evaluate_seconds": record["wall_seconds"],
            "cpu_seconds": record["cpu_seconds"]}


def nearest_training_host(store: str, index) -> dict[str, dict]:
    """Per host: the other host whose material context (the shell-occupancy columns of M, X and D) is nearest,
    and the Euclidean distance; a held-out host far from every training host has context the model never saw."""
    from contract.context import ROLES, SHELLS
    from training.store import read_rows

    n_material = len(ROLES) * len(SHELLS)
    first_row = {h: int(np.flatnonzero(index.row_hosts == h)[0]) for h in sorted(set(index.row_hosts.tolist()))}
    hosts = sorted(first_row, key=first_row.get)  # read_rows wants ascending rows
    context = read_rows(store, np.asarray([first_row[h] for h in hosts]), list(range(n_material))).astype(np.float64)
    out = {}
    for i, h in enumerate(hosts):
        d = np.linalg.norm(context - context[i], axis=1)
        d[i] = np.inf
        j = int(np.argmin(d))
        out[h] = {"nearest_host": hosts[j], "context_distance": float(d[j])}
    return out


def bar_chart(results: dict, models: list[str], hosts: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = hosts + [SEEN]
    x = np.arange(len(groups))
    width = 0.8 / len(models)
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.75 * len(groups) * len(models) / 2 + 4), 7), sharex=True)
    for ax, key, label in zip(axes, ("accuracy", "cohen_kappa"), ("test accuracy", "Cohen's κ")):
        for i, model in enumerate(models):
            values = [results[g][model][key] for g in groups]
            ax.bar(x + (i - (len(models) - 1) / 2) * width, values, width, label=model)
        ax.axvline(len(hosts) - 0.5, color="k", lw=0.8, ls=":")
        ax.set_ylabel(label)
        ax.set_ylim(min(0.0, min(results[g][m][key] for g in groups for m in models)), 1.0)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=len(models), fontsize=8, loc="lower left")
    axes[0].set_title("held-out host (trained on the other hosts) vs. seen hosts")
    axes[1].set_xticks(x, [g.replace(" (", "\n(") for g in groups], rotation=45, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="data/hosts.zarr", help="store with features (configs/dataset/hosts.yaml)")
    ap.add_argument("--models", nargs="+", default=["MLP-NoContext", "MLP-Simple", "attn-4k"], choices=list(MODELS))
    ap.add_argument("--hosts", nargs="*", default=None, help="hosts to hold out (default: every host of the store)")
    ap.add_argument("--out", default="runs/generalise", help="run directories (reused when the bench is rerun)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run (default 1, see docs/training.md)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time, each in its own process (default 2)")
    args = ap.parse_args()

    from contract.classes import CLASS_NAMES
    from training.demo import model_config_args, train_and_evaluate
    from training.store import read_index

    index = read_index(args.store)
    store_hosts = sorted(set(index.row_hosts.tolist()))
    hosts = args.hosts or store_hosts
    unknown = sorted(set(hosts) - set(store_hosts))
    if unknown:
        raise SystemExit(f"error: --hosts {unknown} are not in {args.store} (hosts there: {store_hosts})")
    dopants = {c["host"]: c["dopant"] for c in index.meta.cases}
    out = Path(args.out)
    started = time.perf_counter()
    calls = {}
    for group in hosts + [SEEN]:
        split = (["--data.split", "random"] if group == SEEN else
                 ["--data.split", "by_host", "--data.test_hosts", json.dumps([group])])
        for model in args.models:
            run_dir = out / ("seen" if group == SEEN else f"without-{group}") / MODELS[model]
            fit_args = ["fit", *model_config_args(MODELS[model]), "--data.store", args.store, "--run_dir", str(run_dir),
                        "--trainer.accelerator", "cpu", "--trainer.strategy", "auto", "--trainer.devices", "1", *split]
            calls[(group, model)] = (f"{model} without {group}", fit_args, run_dir, args.store, 0, args.threads)
    results: dict[str, dict] = {group: {} for group in hosts + [SEEN]}

    def done(key, record):
        group, model = key
        results[group][model] = r = summarise(calls[key][2], record)
        took = "reused" if record["reused"] else f"{record['wall_seconds']:.0f} s"
        print(f"{group:>20} {model:>14}: accuracy {r['accuracy']:.4f} kappa {r['cohen_kappa']:.4f} "
              f"[{r['schedule']}] {took}", flush=True)

    if args.jobs == 1:
        for key, call in calls.items():
            done(key, train_and_evaluate(*call))
    else:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(train_and_evaluate, *call): key for key, call in calls.items()}
            for future in as_completed(futures):
                done(futures[future], future.result())
    wall = time.perf_counter() - started

    nearest = nearest_training_host(args.store, index)
    rows = []
    for group in hosts + [SEEN]:
        row = {"test host": group, "dopant": dopants.get(group, "all"), "n test": results[group][args.models[0]]["n_test"],
               "nearest host (context distance)": (f"{nearest[group]['nearest_host']} ({nearest[group]['context_distance']:.3f})"
                                                   if group in nearest else "")}
        for model in args.models:
            row[f"{model} acc"] = f"{100 * results[group][model]['accuracy']:.1f}"
            row[f"{model} κ"] = f"{results[group][model]['cohen_kappa']:.3f}"
        rows.append(row)
    print_table(rows, list(rows[0]))
    print("\nrecall per class of the central column (" + ", ".join(CLASS_NAMES) + ")")
    recall_rows = [{"test host": g, **{m: " ".join(f"{v:.2f}" for v in results[g][m]["recall_per_class"])
                                       for m in args.models}} for g in hosts + [SEEN]]
    print_table(recall_rows, ["test host", *args.models])
    held = {m: [results[h][m]["accuracy"] for h in hosts] for m in args.models}
    for m in args.models:
        print(f"{m}: held-out hosts mean accuracy {100 * np.mean(held[m]):.1f} % (min {100 * np.min(held[m]):.1f} %), "
              f"seen hosts {100 * results[SEEN][m]['accuracy']:.1f} %")
    path = write_result("generalise", {
        "store": args.store, "store_config_hash": index.meta.config_hash,
        "models": args.models, "hosts": hosts, "dopants": dopants, "results": results, "table": rows,
        "nearest_training_host": nearest,
        "class_names": list(CLASS_NAMES), "wall_seconds": wall,
        "versions": versions("torch", "pytorch-lightning", "numpy", "zarr"),
    })
    chart = path.with_suffix(".png")
    bar_chart(results, args.models, hosts, chart)
    print(f"written: {path}, {chart}")


if __name__ == "__main__":
    main()
