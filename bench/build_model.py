"""Time to a model for one context from nothing, per stage, and the time a second frame of the same context
takes once the model is registered. Also trains the other candidate model on the same store, so that the build's
default (inference.build.DEFAULT_MODEL) is chosen on measured held-out accuracy and time.

    python bench/build_model.py [--host WSe2] [--dopant V] [--energy-kev 80] [--compare MLP-Simple]

Runs in a fresh, empty model directory (STEM_CONTEXT_MODELS is pointed at a temporary one): nothing is reused.
JSON to bench/results/build-model-<UTC>.json with the machine, load average and versions (bench/_report.py).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._report import versions, write_result  # noqa: E402
from inference import registry  # noqa: E402
from inference.build import DEFAULT_MODEL, MODEL_CONFIGS, TRAIN_CONFIG_DIR, build_model  # noqa: E402
from tests.inference_fixtures import render_specimen  # noqa: E402  (a honeycomb frame: the reuse timing only)
from training.cli import run_cli  # noqa: E402
from training.demo import model_config_args  # noqa: E402
from training.evaluate import evaluate  # noqa: E402


def classify_seconds(frame: Path, ctx: dict, out: Path, env: dict) -> float:
    """Wall time of a fresh ``python -m inference classify`` process without --model (imports included)."""
    cmd = [sys.executable, "-m", "inference", "classify", str(frame), "--host", ctx["host"], "--dopant",
           ctx["dopant"], "--energy-kev", str(ctx["beam_energy_kev"]), "--detector", ctx["detector"],
           "--pixel-size-angstrom", "0.15", "--out", str(out)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="WSe2")
    p.add_argument("--dopant", default="V")
    p.add_argument("--energy-kev", type=int, default=80)
    p.add_argument("--compare", default="MLP-Simple", help="the other candidate model, trained on the same store")
    p.add_argument("--models-dir", default=None,
                   help="model directory (default: a new temporary one, i.e. from nothing); a kept one resumes an "
                        "interrupted build's simulation, and the JSON then says so")
    args = p.parse_args(argv)
    ctx = {"host": args.host, "dopant": args.dopant, "beam_energy_kev": args.energy_kev, "detector": "HAADF"}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="build-model-bench-") as tmp:
        tmp = Path(tmp)
        models = Path(args.models_dir) if args.models_dir else tmp / "models"
        resumed = models.exists()
        os.environ[registry.MODELS_ENV] = str(models)
        t0 = time.perf_counter()
        built = build_model(ctx, keep_data=True)
        from_nothing = time.perf_counter() - t0
        card = built.card
        work = models / "work" / card.name
        store = next(work.glob("*.zarr"))
        # the other candidate on the same store, same schedule rules
        t1 = time.perf_counter()
        run_dir = work / MODEL_CONFIGS[args.compare]
        run_cli(["fit", *model_config_args(MODEL_CONFIGS[args.compare], TRAIN_CONFIG_DIR), "--data.store", str(store),
                 "--run_dir", str(run_dir), "--trainer.accelerator", "cpu", "--trainer.strategy", "auto",
                 "--trainer.devices", "1"])
        other = evaluate(run_dir / "checkpoints" / "last.ckpt", str(store), run_dir / "eval", umap_samples=0,
                         train_accuracy=False)
        other_train_s = time.perf_counter() - t1
        # a second and a third frame of the same context: the registered model, no build
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        reuse = []
        for seed in (1, 2):
            image, *_ = render_specimen(60.0, 0.15, a_angstrom=3.28, seed=seed)
            frame = tmp / f"frame{seed}.npy"
            np.save(frame, image.astype(np.float32))
            reuse.append(classify_seconds(frame, ctx, tmp / f"out{seed}", env))
    result = {
        "context": ctx, "cores": os.cpu_count(), "resumed_an_interrupted_build": resumed, "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "from_nothing_s": from_nothing, "stages_s": card.timings_s,
        "multislice_runs": card.dataset.get("multislice_runs"), "n_rows": card.dataset.get("n_rows"),
        "models": {
            card.model: {"test_accuracy": card.metrics["test_accuracy"], "cohen_kappa": card.metrics["cohen_kappa"],
                         "train_s": card.timings_s.get("train"), "schedule": card.schedule},
            args.compare: {"test_accuracy": other["test"]["accuracy"], "cohen_kappa": other["test"]["cohen_kappa"],
                           "train_and_evaluate_s": other_train_s},
        },
        "default_model": DEFAULT_MODEL,
        "reuse_classify_s": reuse,
        "checkpoint_size_bytes": card.checkpoint_size_bytes,
        "budget_s": 600,
        "versions": versions("abtem", "numpy", "torch", "dask", "distributed", "zarr", "pytorch-lightning"),
    }
    path = write_result("build-model", result)
    print(f"from nothing {from_nothing:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in card.timings_s.items())}); "
          f"{card.model} {100 * card.metrics['test_accuracy']:.1f} % vs {args.compare} "
          f"{100 * other['test']['accuracy']:.1f} %; reuse {', '.join(f'{s:.1f} s' for s in reuse)} -> {path}")


if __name__ == "__main__":
    main()
