"""Build a model for one context on demand: dataset config -> simulate -> features -> train -> evaluate ->
register (``inference.registry``). What ``python -m inference classify FRAME ... --build-model`` runs when no
registered model covers the frame's context, and what ``make starter-model`` runs on a whole dataset config.

One context is one host + dopant at the frame's beam energy: all 34 environments, both detectors from one
multislice run, the demo's static 3 x 2 supercell, :data:`PATCHES_PER_IMAGE` noisy patches per image. The
simulation's work units spread the 34 runs over every worker (``simulate.plan.work_units``); the simulation and
the feature encoding share one Dask cluster (local by default, ``cluster="slurm"`` on Slurm).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence, TextIO

import torch
import yaml

from contract.context import Case, FrameContext
from contract.errors import InputError, UnseenContextError
from contract.jsonio import json_text

from . import registry

if TYPE_CHECKING:
    from simulate.config import DatasetConfig

REPO = Path(__file__).resolve().parents[1]
DATASET_BASE = REPO / "configs" / "dataset" / "paper.yaml"
TRAIN_CONFIG_DIR = REPO / "configs" / "train"
DEFAULT_MODEL = "attn-4k"
"""The model a build trains. bench/build_model.py trains attn-4k and MLP-Simple on the same one-context store
and records both held-out accuracies and times (docs/models.md has the numbers behind this choice)."""
PATCHES_PER_IMAGE = 400
"""Noisy patches per (environment, detector) image: 34 x 2 x 400 = 27 200 rows for one context. The multislice
run dominates the cost (seconds per image against 0.4 ms per noisy patch); more noise draws are almost free."""
MODEL_CONFIGS = {"attn-4k": "attn-4k", "MLP-Simple": "mlp-simple", "MLP-Deep": "mlp-deep",
                 "attn-200k": "attn-200k", "attn-400k": "attn-400k"}


def _deep_merge(base: dict, override: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def context_config(context: Case, overrides: Mapping | None = None,
                   patches_per_image: int = PATCHES_PER_IMAGE) -> dict:
    """The dataset config (YAML mapping, on top of ``configs/dataset/paper.yaml``) of one context's model, with
    ``overrides`` (e.g. ``{"noise": {...}, "patches": {...}}`` measured on a frame) merged onto it."""
    raw = {
        "base": str(DATASET_BASE),
        "name": registry.model_name(context),
        "selection": {"combos": [[context.host, context.dopant]]},
        "environments": "all",
        "imaging": {"beam_energies_kev": [int(context.beam_energy_kev)], "detectors": ["HAADF", "MAADF"]},
        "multislice": {"frozen_phonons": 0, "supercell_repeats": [3, 2]},
        "patches": {"patches_per_image": int(patches_per_image)},
    }
    return _deep_merge(raw, overrides or {})


def _say(stream: TextIO, text: str) -> None:
    print(f"build: {text}", file=stream, flush=True)


def build_from_config(config_path: str | Path, name: str, *, model: str = DEFAULT_MODEL, cluster: str = "local",
                      cluster_config: str | None = None, n_workers: int | None = None,
                      work_dir: str | Path | None = None, models_dir: str | Path | None = None,
                      matched_to_frame: Mapping | None = None, keep_data: bool = False,
                      train_args: Sequence[str] = (), stream: TextIO | None = None) -> registry.RegisteredModel:
    """Simulate (or finish simulating: ``--resume``) the dataset of ``config_path`` into ``work_dir``, encode
    it, train ``model`` on it, evaluate it on its held-out rows and register it as ``name`` in ``models_dir``
    (default: the user's model directory). Progress goes to ``stream`` (default stderr)."""
    from cluster import open_client
    from features.encode import encode_store, store_plan
    from simulate import config as dataset_config
    from simulate.run import simulate
    from training.cli import run_cli
    from training.demo import model_config_args
    from training.evaluate import evaluate, read_checkpoint

    stream = sys.stderr if stream is None else stream
    if model not in MODEL_CONFIGS:
        raise InputError(f"model {model!r}: a build trains one of {', '.join(MODEL_CONFIGS)}")
    cfg = dataset_config.load(config_path)  # a bad config fails here, before any cluster starts
    work = Path(work_dir) if work_dir is not None else registry.user_dir() / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    store = work / f"{cfg.name}.zarr"
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    _say(stream, f"[1/4] simulate {len(cfg.combos)} combo(s) x {len(cfg.imaging.beam_energies_kev)} "
                 f"energy(ies) x {len(cfg.environments)} environments -> {store}")
    with open_client(cluster, n_workers=n_workers, config_path=cluster_config) as client:
        sim = simulate(config_path, store, resume=True, stream=stream, client=client)
        timings["simulate"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        _say(stream, f"[2/4] features ({timings['simulate']:.0f} s so far)")
        store_plan(store)
        encode_store(str(store), client)
        timings["features"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    run_dir = work / MODEL_CONFIGS[model]
    _say(stream, f"[3/4] train {model} ({time.perf_counter() - t0:.0f} s so far; log in {run_dir}/train.log)")
    args = ["fit", *model_config_args(MODEL_CONFIGS[model], TRAIN_CONFIG_DIR), "--data.store", str(store),
            "--run_dir", str(run_dir), "--trainer.accelerator", "cpu", "--trainer.strategy", "auto",
            "--trainer.devices", "1", *train_args]
    _quietly(run_dir / "train.log", run_cli, args)
    timings["train"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    _say(stream, f"[4/4] evaluate on the held-out rows and register as {name}")
    metrics = evaluate(ckpt, str(store), run_dir / "eval", umap_samples=0, train_accuracy=False)
    _, _, meta = read_checkpoint(ckpt)
    timings["evaluate"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t0
    card = card_fields(cfg, model, meta or {}, metrics, run_dir, sim, timings, matched_to_frame)
    registered = registry.register(ckpt, card, name, models_dir)
    (work / "dataset.resolved.json").write_text(json_text(cfg.as_mapping(), indent=1, default=str))
    if not keep_data:
        shutil.rmtree(store, ignore_errors=True)
    test = registered.card.metrics
    _say(stream, f"registered {name}: held-out accuracy {100 * test['test_accuracy']:.1f} %, kappa "
                 f"{test['cohen_kappa']:.3f}; {timings['total']:.0f} s in all "
                 f"({', '.join(f'{k} {v:.0f} s' for k, v in timings.items() if k != 'total')}) -> "
                 f"{registered.card_path}")
    return registered


def _quietly(log_path: Path, fn, *args):
    """Run ``fn(*args)`` with Lightning's own output (it writes to the file descriptors) sent to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        sys.stdout.flush(), sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            return fn(*args)
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def card_fields(cfg: DatasetConfig, model: str, meta: dict, metrics: dict, run_dir: Path, sim: dict, timings: dict,
                matched_to_frame: Mapping | None) -> dict:
    """The card of a freshly trained model (checksum, size and date are added by ``registry.register``)."""
    from simulate.config import config_hash
    from simulate.run import versions

    test = metrics["test"]
    cm = test["confusion_matrix"]
    per_class = {name: (row[i] / sum(row) if sum(row) else None)
                 for i, (name, row) in enumerate(zip(metrics["class_names"], cm))}
    schedule_file = run_dir / "schedule.json"
    schedule = json.loads(schedule_file.read_text()) if schedule_file.is_file() else {}
    return {
        "model": model,
        "context_encoding": str(meta.get("context_encoding", "shells")),
        "cases": tuple(meta.get("training_cases") or ()),
        "patch_size_px": int(cfg.patches.patch_size_px),
        "patch_geometry": {"patch_size_px": int(cfg.patches.patch_size_px),
                           "patch_side_lattice_constants": 3 ** 0.5,
                           "supercell_repeats": list(cfg.multislice.supercell_repeats),
                           "patches_per_image": int(cfg.patches.patches_per_image),
                           "normalisation": meta.get("normalisation")},
        "noise": cfg.noise.as_mapping(),
        "multislice": {k: getattr(cfg.multislice, k) for k in ("frozen_phonons", "slicing", "projection", "gpts",
                                                             "supercell_repeats", "parametrization")},
        "schedule": schedule,
        "metrics": {"test_accuracy": test["accuracy"], "cohen_kappa": test["cohen_kappa"],
                    "per_class_recall": per_class, "f1_defect": test.get("f1_defect"),
                    "mean_entropy_nats": test["mean_entropy_nats"], "n_test": test["n"],
                    "by_detector": {d: {"accuracy": m["accuracy"], "cohen_kappa": m["cohen_kappa"]}
                                    for d, m in test.get("by_detector", {}).items()}},
        "dataset": {"name": cfg.name, "config_hash": config_hash(cfg), "n_rows": sum(c.get("n_rows", 0) for c in
                    meta.get("training_cases") or ()), "combos": cfg.combos,
                    "beam_energies_kev": cfg.imaging.beam_energies_kev,
                    "detectors": list(cfg.imaging.detectors), "environments": len(cfg.environments),
                    "multislice_runs": sim.get("multislice_runs")},
        "versions": {**versions(), "torch": torch.__version__},
        "matched_to_frame": dict(matched_to_frame) if matched_to_frame else None,
        "timings_s": dict(timings),
    }


def build_model(context: Case, *, overrides: Mapping | None = None, model: str = DEFAULT_MODEL,
                cluster: str = "local", cluster_config: str | None = None, n_workers: int | None = None,
                models_dir: str | Path | None = None, keep_data: bool = False,
                patches_per_image: int = PATCHES_PER_IMAGE, train_args: Sequence[str] = (),
                stream: TextIO | None = None) -> registry.RegisteredModel:
    """Build and register the model of one context (host, dopant, beam energy; both detectors).

    ``overrides``: dataset-config values merged onto the generated config (e.g. the noise and patch sampling
    measured on a frame), recorded in the card as ``matched_to_frame``; the model name then carries their hash,
    so that a frame-matched model never replaces the plain one. ``train_args``: extra ``training fit`` options
    (e.g. a shorter ``--schedule.*`` for a test of the pipeline); the card's schedule records what ran."""
    name = registry.model_name(context)
    if overrides:
        name += "-matched-" + hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:8]
    models_dir = Path(models_dir) if models_dir is not None else registry.user_dir()
    work = models_dir / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    config_path = work / "dataset.yaml"
    config_path.write_text(yaml.safe_dump(context_config(context, overrides, patches_per_image), sort_keys=False))
    _drop_stale_store(config_path, work)
    return build_from_config(config_path, name, model=model, cluster=cluster, cluster_config=cluster_config,
                             n_workers=n_workers, work_dir=work, models_dir=models_dir,
                             matched_to_frame=overrides, keep_data=keep_data, train_args=train_args, stream=stream)


def _drop_stale_store(config_path: Path, work: Path) -> None:
    """A cached store of this context left by an interrupted build from another config (an older version's
    defaults) cannot be resumed: remove it, it is this cache's own data."""
    from contract import store as schema
    from simulate import config as dataset_config

    cfg = dataset_config.load(config_path)
    store = work / f"{cfg.name}.zarr"
    if store.exists():
        try:
            stale = schema.read_meta(store, require=()).config_hash != dataset_config.config_hash(cfg)
        except Exception:  # noqa: BLE001 - unreadable: as stale as a store from another config
            stale = True
        if stale:
            shutil.rmtree(store)


def frame_context(image, overrides: dict, catalog=None) -> FrameContext:
    """A frame's context as ``classify`` resolves it (file tags, then the options), without classifying."""
    from contract.catalog import load_catalog

    from .io import read_image, resolve_context

    f = read_image(image)
    return resolve_context(f.values, overrides, load_catalog(catalog), f.sources)


def frame_dataset_overrides(image, ctx: FrameContext) -> tuple[dict, tuple[str, ...]]:
    """The dataset-config overrides that match a model's training data to ``image`` (``inference.frame_imaging``:
    blur, dose or signal-to-noise, 8-bit display export, patch sampling) and what could not be matched. Without
    a clean simulated reference a display frame's dose stays at the base config's range (said in the notes)."""
    from simulate.config import load

    from .classify import locate_sites
    from .frame_imaging import frame_overrides, measure_frame_imaging
    from .io import read_image
    from kernels.lattice import clip_outliers

    f = read_image(image)
    frame, _ = clip_outliers(f.image)
    base = load(DATASET_BASE)  # the probe the models are simulated with (the frames seldom say theirs)
    try:
        imaging = measure_frame_imaging(
            frame, locate_sites(frame), beam_energy_kev=ctx.beam_energy_kev, detector=ctx.detector,
            lattice_constant_angstrom=ctx.catalog_lattice_constant_angstrom,
            convergence_semiangle_mrad=base.imaging.convergence_semiangle_mrad, intensity=f.intensity)
    except ValueError as err:
        raise InputError(f"{Path(str(image)).name}: cannot measure the frame's imaging for --match-frame: {err}") from None
    return frame_overrides(imaging, base.noise.as_mapping())


def model_for_frame(image, overrides: dict, out, *, build: bool = False, cluster: str = "local",
                    cluster_config: str | None = None, dataset_overrides: Mapping | None = None,
                    stream: TextIO | None = None) -> registry.RegisteredModel:
    """The registered model that covers ``image``'s context, its checkpoint verified; with ``build`` one is built
    when none covers it (or when ``dataset_overrides`` ask for a frame-matched one). Without ``build`` a missing
    model is ``UnseenContextError`` (exit 4) with the exact command that builds it."""
    stream = sys.stderr if stream is None else stream
    ctx = frame_context(image, overrides)
    found = None if dataset_overrides else registry.choose_model(ctx)
    if found is None and dataset_overrides:
        name = registry.model_name(ctx)
        found = next((m for m in registry.list_models() if m.card.matched_to_frame == dict(dataset_overrides)
                      and m.card.name.startswith(name)), None)
    if found is None:
        label = ctx.label()
        if not build:
            raise UnseenContextError(
                f"no registered model covers {label} (shipped: {registry.SHIPPED_DIR}, built: {registry.user_dir()}); "
                f"build one (about 10 minutes on 2 cores) and classify with: {registry.build_command(image, ctx, out)}")
        _say(stream, f"no registered model covers {label}: building one")
        found = build_model(ctx, overrides=dataset_overrides, cluster=cluster, cluster_config=cluster_config,
                            stream=stream)
    found.verified_checkpoint()
    print(f"model: {found.card.name} ({found.source}, {found.card.model}, held-out accuracy "
          f"{100 * found.card.metrics.get('test_accuracy', float('nan')):.1f} %) {found.checkpoint_path}",
          file=stream, flush=True)
    return found
