"""Train and evaluate the paper's six models on one store, and print Table 1 in the paper's layout.

``python -m training demo --store data/demo.zarr --out runs/demo [--max-epochs N] [--batch-size B]``
``python -m training demo-table --runs runs/demo``

By default each model trains with the configs' ``schedule: auto`` (:mod:`training.schedule`): on the small demo
store that is the ``steps`` schedule (at most 1 070 optimizer steps, batch capped at the training rows, early
stop on a validation-loss plateau); ``--max-epochs`` or ``--batch-size`` switch to the paper's epoch schedule
with those values. The table's last column says which schedule each model ran.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from contract.classes import DEFECT_CLASSES
from contract.cli import check_output_args
from contract.context import DETECTOR_NAMES
from contract.jsonio import json_text

from .cli import SCHEDULE_FILE, run_cli
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
             config_dir: str | Path = CONFIG_DIR, threads: int | None = None, jobs: int = 1) -> Path:
    """Fit and evaluate each model in ``out/<config>``, ``jobs`` models at a time (separate processes).

    Each model's Lightning output goes to ``out/<config>/train.log``; one line per model is printed. A run that
    finished with the same arguments is reused; an interrupted one resumes from its last checkpoint.
    ``threads``: torch intra-op threads per model (None: torch's default).
    """
    from .store import read_index

    read_index(store)  # a missing store or one without features fails here, with its message, before any job
    out = Path(out)
    todo = []
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
        if batch_size is not None:
            args += ["--data.batch_size", str(batch_size)]
        if max_epochs is not None or batch_size is not None:  # explicit epochs/batch: the epoch schedule
            args += ["--schedule.kind", "paper"]
        todo.append((row, config, args, run_dir))
    # the longest runs first (full-batch attention), so that parallel jobs end together
    todo.sort(key=lambda job: list(MODELS).index(job[0]), reverse=True)
    started = time.perf_counter()
    jobs = max(1, min(int(jobs), len(todo) or 1))
    print(f"training {len(todo)} model(s) on {store}, {jobs} at a time; logs in {out}/<model>/train.log", flush=True)
    calls = [(row, args, run_dir, str(store), umap_samples, threads) for row, _, args, run_dir in todo]
    if jobs == 1:
        for call in calls:
            _report_model(train_and_evaluate(*call))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(train_and_evaluate, *call) for call in calls]
            for future in as_completed(futures):
                _report_model(future.result())
    print(f"all done in {time.perf_counter() - started:.0f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    return out


def train_and_evaluate(row: str, args: list[str], run_dir: Path, store: str, umap_samples: int,
                      threads: int | None) -> dict:
    """One model: fit (or reuse a finished run with the same arguments) and evaluate; output to train.log."""
    run_dir.mkdir(parents=True, exist_ok=True)
    done_file = run_dir / "demo_run.json"
    if done_file.is_file() and (run_dir / "eval" / "metrics.json").is_file():
        done = json.loads(done_file.read_text())
        if done.get("args") == args and done.get("umap_samples") == umap_samples:
            return {**done, "reused": True}
    done_file.unlink(missing_ok=True)
    cpu0, wall0 = os.times(), time.perf_counter()
    with open(run_dir / "train.log", "a") as log:
        sys.stdout.flush(), sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)  # Lightning's own handlers write to the fds too
        try:
            if threads is not None:
                import torch

                torch.set_num_threads(threads)
            print(f"== {row}: {' '.join(args)}", flush=True)
            run_cli(args)
            metrics = evaluate(run_dir / "checkpoints" / "last.ckpt", store, run_dir / "eval",
                               umap_samples=umap_samples)
        except Exception:  # noqa: BLE001 - logged to train.log, then re-raised with the log's path
            import traceback

            traceback.print_exc()
            raise RuntimeError(f"{row} failed: see {run_dir / 'train.log'}") from None
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])
    cpu1 = os.times()
    record = {"row": row, "run_dir": str(run_dir), "args": args, "umap_samples": umap_samples,
              "test_accuracy": metrics["test"]["accuracy"], "schedule": _schedule(run_dir)["text"],
              "wall_seconds": time.perf_counter() - wall0,
              "cpu_seconds": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)}
    done_file.write_text(json_text(record, indent=1))
    return {**record, "reused": False}


def _report_model(r: dict) -> None:
    timing = "reused a finished run" if r["reused"] else f"{r['wall_seconds']:.0f} s ({r['cpu_seconds']:.0f} s CPU)"
    print(f"{r['row']:>14}: test accuracy {100 * r['test_accuracy']:.1f} %  [{r['schedule']}]  {timing}", flush=True)


def _schedule(run_dir: Path) -> dict:
    """The schedule a run trained with (``schedule.json``), as a short text and the record itself."""
    path = run_dir / SCHEDULE_FILE
    if not path.is_file():
        return {"text": "–"}
    s = json.loads(path.read_text())
    if s["kind"] == "paper":
        text = f"paper: {s['max_epochs']} epochs × batch {s['batch_size']} = {s['steps_done']} steps"
    else:
        stop = "early stop" if s["stopped_early"] else "budget reached"
        text = f"steps: {s['steps_done']}/{s['max_steps']} ({stop}), batch {s['batch_size']}"
    return {"text": text, **s}


def _fmt(value, scale=1.0, digits=3, strip_zero=False):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value * scale:.{digits}f}"
    return text[1:] if strip_zero and text.startswith("0.") else text


def table(runs: str | Path) -> tuple[str, dict]:
    """Markdown table in the layout of the paper's Table 1 (plus entropy and ECE), from ``runs/*/eval``."""
    runs = Path(runs)
    head = ("| Model | Train Acc. (%) | Test Acc. (%) | κ HAADF | κ MAADF | F1 single vac. HAADF | MAADF "
            "| F1 double vac. HAADF | MAADF | F1 dopant HAADF | MAADF | entropy (nats) | ECE | schedule |")
    lines = [head, "|" + "---|" * 14]
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
        schedule = _schedule(runs / config)
        cells.append(schedule["text"])
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
        rows[row] = {"train_accuracy": m.get("train", {}).get("accuracy"), "test": t["accuracy"],
                     "entropy_nats": t["mean_entropy_nats"], "ece": t["ece"],
                     "kappa": {d: by(d, "cohen_kappa") for d in DETECTOR_NAMES},
                     "f1_defect": {d: by(d, "f1_defect") for d in DETECTOR_NAMES},
                     "n_test": t["n"], "store": m["data"].get("store"), "schedule": schedule}
    if not rows:
        raise FileNotFoundError(f"no */eval/metrics.json under {runs}: run `python -m training demo` first")
    lines += [
        "",
        "κ and F1 here are on the simulated test split, per detector (the paper's are on experimental WSe2 images).",
        ("schedule: `paper` = the paper's epochs and batch; `steps` = optimizer steps taken of the budget, batch "
         "capped at the training rows, early stop on the loss of a validation split of the training rows "
         "(training/schedule.py)."),
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
    # One thread: these models are small, and on a shared 2-core machine two OpenMP threads spin against other
    # processes (measured: attn-400k steps 7x slower in wall time with 2 threads than with 1 at load ~13).
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per model (default 1)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="models trained at a time, each in its own process (default: 2, or 1 on one core)")
    p.add_argument("--configs", default=str(CONFIG_DIR), help="directory of base.yaml and the model configs")
    a = p.parse_args(argv)
    check_output_args(a)  # before the six models are trained
    run_demo(a.store, a.out, a.max_epochs, a.models, a.umap_samples, a.accelerator, a.batch_size, a.configs,
             a.threads, a.jobs)
    table_main(["--runs", a.out])


def table_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training demo-table", description="Table 1 from a demo run")
    p.add_argument("--runs", default="runs/demo")
    a = p.parse_args(argv)
    text, rows = table(a.runs)
    print(text)
    (Path(a.runs) / "table1.md").write_text(text + "\n")
    (Path(a.runs) / "table1.json").write_text(json_text(rows, indent=1))
    print(f"\nwritten: {Path(a.runs) / 'table1.md'}, {Path(a.runs) / 'table1.json'}")
