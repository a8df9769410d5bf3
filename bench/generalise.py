"""How far the context carries: leave-one-host-out and leave-one-dopant-out, for both context encodings.

    python -m simulate run --config configs/dataset/hosts.yaml --out data/hosts.zarr --resume   # ~35 min on 2 cores
    python -m features encode --store data/hosts.zarr
    nice -n 10 python bench/generalise.py --store data/hosts.zarr [--models MLP-NoContext MLP-Simple attn-4k]
                                         [--encodings shells physical]

Three kinds of held-out group, each trained and tested with every model and context encoding (MLP-NoContext reads
no context, so it runs once):

* **a host** (``data.split: by_host``): trained on every other host, tested on all of this host's rows;
* **a dopant** (``data.split: by_dopant``): trained on every combo without it, tested on the combos that carry it
  (per test host apart: a host whose only dopant is the held-out one is unseen too);
* **seen** (random 80/20 of all rows): the baseline, in the same run.

Per group and model: test accuracy, Cohen's kappa, per-class recall, confusion matrix, accuracy per detector
(HAADF and MAADF apart), and for each held-out group the distance of its cases to the nearest training case in
both encodings' material spaces (shell fractions; column contrasts at the same beam energy and detector) and
whether its column contrasts lie inside the training cases' range (interpolation) or beyond it. Written to
``bench/results/generalise-<date>.json`` with a bar chart ``generalise-<date>.png``. Runs live under ``--out``; a
finished run is reused, so an interrupted benchmark resumes where it stopped.

The physical limit is the classes' separability on a seen host, which the random-split accuracy estimates.
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
NO_CONTEXT = "MLP-NoContext"
SEEN = "seen (random 80/20)"
PHYSICAL_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train" / "physical.yaml"


def variants(models: list[str], encodings: list[str]) -> list[tuple[str, str]]:
    """(model, encoding) pairs: MLP-NoContext once (it reads no context), every other model per encoding."""
    return [(m, "none") if m == NO_CONTEXT else (m, e) for m in models
            for e in (["none"] if m == NO_CONTEXT else encodings)]


def variant_name(model: str, encoding: str) -> str:
    return model if encoding == "none" else f"{model} {encoding}"


def summarise(run_dir: Path, record: dict) -> dict:
    """Test accuracy, kappa, per-class recall, per detector and per host, and the schedule of one finished run."""
    m = json.loads((run_dir / "eval" / "metrics.json").read_text())
    test = m["test"]
    cm = np.asarray(test["confusion_matrix"])
    recall = (np.diag(cm) / np.maximum(cm.sum(1), 1)).round(4).tolist()
    return {"accuracy": test["accuracy"], "cohen_kappa": test["cohen_kappa"], "n_test": test["n"],
            "mean_entropy_nats": test["mean_entropy_nats"], "confusion_matrix": cm.tolist(),
            "recall_per_class": recall,
            "accuracy_by_detector": {d: v["accuracy"] for d, v in test["by_detector"].items()},
            "kappa_by_detector": {d: v["cohen_kappa"] for d, v in test["by_detector"].items()},
            "accuracy_by_host": {h: v["accuracy"] for h, v in test.get("by_host", {}).items()},
            "schedule": record["schedule"], "fit_and_evaluate_seconds": record["wall_seconds"],
            "cpu_seconds": record["cpu_seconds"]}


def case_distances(cases: list[dict], test: list[int], train: list[int]) -> list[dict]:
    """Per test case: the nearest training case in the shell-fraction space (material only) and in the
    column-contrast space (same beam energy and detector), with the distances, and whether each column-contrast
    value lies inside the training cases' range at that energy and detector."""
    from contract.context import case_key
    from inference.unseen_context import material_context, material_distance

    out = []
    train_cases = [cases[j] for j in train]
    for i in test:
        c = cases[i]
        shells = material_distance(c, train_cases, "shells")
        physical = material_distance(c, train_cases, "physical")
        same = [t for t in train_cases if (t["detector"], t["beam_energy_kev"]) == (c["detector"], c["beam_energy_kev"])]
        values = material_context(c, "physical")
        span = np.stack([material_context(t, "physical") for t in same])
        inside = bool(np.all((values >= span.min(0) - 1e-9) & (values <= span.max(0) + 1e-9)))
        out.append({"case": "{}+{} {} keV {}".format(*case_key(c)[:2], c["beam_energy_kev"], c["detector"]),
                    "host": c["host"], "dopant": c["dopant"], "detector": c["detector"],
                    "shells_distance": shells[0], "shells_nearest": f"{shells[1]['host']}+{shells[1]['dopant']}",
                    "physical_distance": physical[0],
                    "physical_nearest": f"{physical[1]['host']}+{physical[1]['dopant']}",
                    "physical_inside_training_range": inside,
                    "physical_values": values.round(4).tolist()})
    return out


def bar_chart(results: dict, names: list[str], groups: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(groups))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(9, 0.45 * len(groups) * len(names) / 2 + 4), 4.5))
    for i, name in enumerate(names):
        ax.bar(x + (i - (len(names) - 1) / 2) * width, [results[g][name]["accuracy"] for g in groups], width,
               label=name)
    ax.axhline(0.95, color="k", lw=0.8, ls=":")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=len(names), fontsize=7, loc="lower left")
    ax.set_title("held-out host / dopant (trained without it) vs. seen; dotted: 95 %")
    ax.set_xticks(x, [g.replace(" (", "\n(") for g in groups], rotation=45, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="data/hosts.zarr", help="store with features (configs/dataset/hosts.yaml)")
    ap.add_argument("--models", nargs="+", default=["MLP-NoContext", "MLP-Simple", "attn-4k"], choices=list(MODELS))
    ap.add_argument("--encodings", nargs="+", default=["shells", "physical"], choices=["shells", "physical"])
    ap.add_argument("--hosts", nargs="*", default=None, help="hosts to hold out (default: every host of the store)")
    ap.add_argument("--dopants", nargs="*", default=None,
                    help="dopants to hold out (default: every dopant the store has with two or more hosts)")
    ap.add_argument("--out", default="runs/generalise", help="run directories (reused when the bench is rerun)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads per run (default 1, see docs/training.md)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time, each in its own process (default 2)")
    args = ap.parse_args()

    from contract.classes import CLASS_NAMES
    from training.demo import model_config_args, train_and_evaluate
    from training.store import read_index

    index = read_index(args.store)
    cases = index.meta.cases
    store_hosts = sorted({c["host"] for c in cases})
    combos = sorted({(c["host"], c["dopant"]) for c in cases})
    hosts_of = {d: sorted(h for h, dd in combos if dd == d) for d in sorted({d for _, d in combos})}
    hosts = args.hosts if args.hosts is not None else store_hosts
    dopants = args.dopants if args.dopants is not None else [d for d, hs in hosts_of.items() if len(hs) >= 2]
    for what, given, known in (("--hosts", hosts, store_hosts), ("--dopants", dopants, list(hosts_of))):
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise SystemExit(f"error: {what} {unknown} are not in {args.store} (there: {known})")
    groups = [("host", h) for h in hosts] + [("dopant", d) for d in dopants] + [("seen", SEEN)]
    label = {(kind, value): value if kind == "seen" else f"{value} ({kind})" for kind, value in groups}
    pairs = variants(args.models, args.encodings)
    names = [variant_name(*p) for p in pairs]
    out = Path(args.out)
    started = time.perf_counter()
    calls = {}
    for kind, value in groups:
        split = {"seen": ["--data.split", "random"],
                 "host": ["--data.split", "by_host", "--data.test_hosts", json.dumps([value])],
                 "dopant": ["--data.split", "by_dopant", "--data.test_dopants", json.dumps([value])]}[kind]
        folder = "seen" if kind == "seen" else f"without-{value}" if kind == "host" else f"without-dopant-{value}"
        for model, encoding in pairs:
            physical = ["--config", str(PHYSICAL_CONFIG)] if encoding == "physical" else []
            run_dir = out / folder / (MODELS[model] + ("-physical" if encoding == "physical" else ""))
            fit_args = ["fit", *model_config_args(MODELS[model]), *physical, "--data.store", args.store,
                        "--run_dir", str(run_dir), "--trainer.accelerator", "cpu", "--trainer.strategy", "auto",
                        "--trainer.devices", "1", *split]
            key = (label[(kind, value)], variant_name(model, encoding))
            calls[key] = (f"{key[1]} without {value}", fit_args, run_dir, args.store, 0, args.threads)
    results: dict[str, dict] = {label[g]: {} for g in groups}

    def done(key, record):
        group, name = key
        results[group][name] = r = summarise(calls[key][2], record)
        took = "reused" if record["reused"] else f"{record['wall_seconds']:.0f} s"
        print(f"{group:>22} {name:>20}: accuracy {r['accuracy']:.4f} kappa {r['cohen_kappa']:.4f} "
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

    distances = {}
    for kind, value in groups:
        if kind == "seen":
            continue
        field = "host" if kind == "host" else "dopant"
        test = [i for i, c in enumerate(cases) if c[field] == value]
        train = [i for i, c in enumerate(cases) if c[field] != value]
        distances[label[(kind, value)]] = case_distances(cases, test, train)

    rows, detector_rows = [], []
    for kind, value in groups:
        g = label[(kind, value)]
        near = distances.get(g, [])
        row = {"held out": g, "n test": results[g][names[0]]["n_test"],
               "shells dist (max)": f"{max(d['shells_distance'] for d in near):.3f}" if near else "",
               "physical dist (max)": f"{max(d['physical_distance'] for d in near):.3f}" if near else "",
               "inside": (f"{sum(d['physical_inside_training_range'] for d in near)}/{len(near)}" if near else "")}
        for name in names:
            row[name] = f"{100 * results[g][name]['accuracy']:.1f}"
        rows.append(row)
        det_row = {"held out": g}
        for name in names:
            det_row[name] = " / ".join(f"{100 * results[g][name]['accuracy_by_detector'].get(d, float('nan')):.1f}"
                                       for d in ("HAADF", "MAADF"))
        detector_rows.append(det_row)
    print("\ntest accuracy (%); distances to the nearest training case (shell fractions; column contrasts at the "
          "same energy and detector); inside: test cases whose column contrasts lie in the training range")
    print_table(rows, list(rows[0]))
    print("\naccuracy HAADF / MAADF (%)")
    print_table(detector_rows, list(detector_rows[0]))
    for kind, value in groups:
        g = label[(kind, value)]
        if kind == "dopant":
            print(f"\n{g}: accuracy per test host (%; hosts of {value} only: "
                  f"{', '.join(h for h in hosts_of[value] if len([d for hh, d in combos if hh == h]) == 1)})")
            print_table([{"test host": h, **{n: f"{100 * results[g][n]['accuracy_by_host'].get(h, float('nan')):.1f}"
                                               for n in names}} for h in hosts_of[value]], ["test host", *names])
    print("\nrecall per class of the central column (" + ", ".join(CLASS_NAMES) + ")")
    print_table([{"held out": label[g], **{n: " ".join(f"{v:.2f}" for v in results[label[g]][n]["recall_per_class"])
                                           for n in names}} for g in groups], ["held out", *names])
    for name in names:
        held = [results[label[g]][name]["accuracy"] for g in groups if g[0] == "host"]
        drop = [results[label[g]][name]["accuracy"] for g in groups if g[0] == "dopant"]
        print(f"{name}: held-out hosts mean {100 * np.mean(held):.1f} % (min {100 * np.min(held):.1f} %)"
              + (f", held-out dopants min {100 * np.min(drop):.1f} %" if drop else "")
              + f", seen {100 * results[SEEN][name]['accuracy']:.1f} %")
    path = write_result("generalise", {
        "store": args.store, "store_config_hash": index.meta.config_hash, "models": args.models,
        "encodings": args.encodings, "variants": names, "held_out_hosts": hosts, "held_out_dopants": dopants,
        "combos": [list(c) for c in combos], "results": results, "table": rows, "table_by_detector": detector_rows,
        "distances": distances, "class_names": list(CLASS_NAMES), "wall_seconds": wall,
        "versions": versions("torch", "pytorch-lightning", "numpy", "zarr", "abtem"),
    })
    chart = path.with_suffix(".png")
    bar_chart(results, names, [label[g] for g in groups], chart)
    print(f"written: {path}, {chart}")


if __name__ == "__main__":
    main()
