"""``python -m training submit --config CONFIG --data.store STORE [slurm options] [fit overrides ...]``

Submits one training run as a Slurm job through submitit: one task per device (``--ntasks-per-node`` =
devices, which Lightning reads from the Slurm environment), ``ckpt_path: last`` so a requeued or
resubmitted job resumes from ``run_dir/checkpoints/last.ckpt``, then rank 0 evaluates the last checkpoint
into ``run_dir/eval``. The job is checkpointable: on timeout or pre-emption submitit requeues it.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import submitit
import yaml


@dataclass
class SlurmResources:
    """Slurm request for one training job (``tasks_per_node`` is forced to ``gpus_per_node`` when > 0)."""

    partition: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: float | None = None
    timeout_min: int = 60
    job_name: str = "stem-train"

    def __post_init__(self):
        if self.gpus_per_node > 0:
            self.tasks_per_node = self.gpus_per_node
        for name in ("nodes", "tasks_per_node", "cpus_per_task", "timeout_min"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class TrainJob(submitit.helpers.Checkpointable):
    """Runs in every Slurm task: Lightning DDP fit (resuming), then evaluation on global rank 0."""

    def __call__(self, fit_args: list[str], run_dir: str, umap_samples: int = 2000) -> str | None:
        from .cli import run_cli

        run_cli(["fit", *fit_args])
        if submitit.JobEnvironment().global_rank != 0:
            return None
        from .evaluate import evaluate

        out = Path(run_dir) / "eval"
        evaluate(Path(run_dir) / "checkpoints" / "last.ckpt", None, out, umap_samples=umap_samples, device="cpu")
        return str(out / "metrics.json")


def merged_config(configs: Sequence[str | Path]) -> dict:
    """The configs merged left to right (later files override, as LightningCLI's repeated ``--config``)."""
    from contract.errors import InputError

    merged: dict = {}
    for config in configs:
        config = Path(config)
        if not config.is_file():
            raise InputError(f"--config {str(config)!r} does not exist (see configs/train/)")
        cfg = yaml.safe_load(config.read_text()) or {}
        for key, value in cfg.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


def check_inputs(configs: Sequence[str | Path], store: str | Path) -> dict:
    """Validate the configs and the store before anything is submitted; returns the merged config."""
    from .data import FeatureDataModule
    from .module import DefectClassifier
    from .store import read_index

    from contract.cli import one_line
    from contract.errors import ConfigError

    cfg = merged_config(configs)
    try:
        DefectClassifier(**cfg.get("model", {}))  # raises naming the bad model.* field
        FeatureDataModule(**{**cfg.get("data", {}), "store": str(store)})
    except (ValueError, TypeError) as err:  # a bad value or an unknown key of model/data
        raise ConfigError(f"{', '.join(str(c) for c in configs)}: {one_line(err)}") from err
    read_index(store)  # raises if the store or its features are missing
    return cfg


def submit(
    configs: Sequence[str | Path],
    store: str | Path,
    resources: SlurmResources,
    run_dir: str | Path | None = None,
    accelerator: str | None = None,
    extra_fit_args: list[str] | None = None,
    umap_samples: int = 2000,
    setup: list[str] | None = None,
) -> submitit.Job:
    """Submit one training run (``configs``: e.g. base.yaml and a model file, merged in order); returns the
    submitit job (``job.result()`` is rank 0's metrics.json path)."""
    configs = [configs] if isinstance(configs, (str, Path)) else list(configs)
    cfg = check_inputs(configs, store)
    run_dir = Path(run_dir or cfg.get("run_dir") or f"runs/{Path(configs[-1]).stem}").resolve()
    workdir = Path.cwd().resolve()  # the job runs where it was submitted from (the repository)
    fit_args = [
        *[a for c in configs for a in ("--config", str(Path(c).resolve()))], "--data.store", str(Path(store).resolve()),
        "--run_dir", str(run_dir),
        "--trainer.devices", str(resources.tasks_per_node), "--trainer.num_nodes", str(resources.nodes),
        "--trainer.strategy", "ddp" if resources.tasks_per_node * resources.nodes > 1 else "auto",
    ]
    if accelerator or resources.gpus_per_node == 0:
        fit_args += ["--trainer.accelerator", accelerator or "cpu"]
    fit_args += list(extra_fit_args or [])
    executor = submitit.AutoExecutor(folder=run_dir / "submitit" / "%j", cluster="slurm")
    params = dict(
        slurm_partition=resources.partition,
        nodes=resources.nodes,
        tasks_per_node=resources.tasks_per_node,
        cpus_per_task=resources.cpus_per_task,
        timeout_min=resources.timeout_min,
        name=resources.job_name,
        slurm_setup=[f"cd {workdir}", f"export PYTHONPATH={workdir}${{PYTHONPATH:+:$PYTHONPATH}}",
                     # one intra-op thread per allocated core, not per core of the node
                     "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}", *(setup or [])],
    )
    if resources.gpus_per_node:
        params["gpus_per_node"] = resources.gpus_per_node
    if resources.mem_gb is not None:
        params["mem_gb"] = resources.mem_gb
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor.submit(TrainJob(), fit_args, str(run_dir), umap_samples)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training submit", description=__doc__.split("\n\n")[1])
    p.add_argument("--config", required=True, action="append",
                   help="repeat to merge, e.g. --config configs/train/base.yaml --config configs/train/attn-4k.yaml")
    p.add_argument("--data.store", "--store", dest="store", required=True)
    p.add_argument("--run_dir", default=None, help="default: the config's run_dir")
    p.add_argument("--partition", default=None)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0, help="> 0: one task per GPU, accelerator gpu")
    p.add_argument("--tasks-per-node", type=int, default=1, help="CPU runs: DDP processes per node")
    p.add_argument("--cpus-per-task", type=int, default=1)
    p.add_argument("--mem-gb", type=float, default=None)
    p.add_argument("--timeout-min", type=int, default=60)
    p.add_argument("--umap-samples", type=int, default=2000)
    p.add_argument("--wait", action="store_true", help="wait for the job and print its metrics path")
    a, extra = p.parse_known_args(argv)
    resources = SlurmResources(a.partition, a.nodes, a.tasks_per_node, a.gpus_per_node, a.cpus_per_task,
                               a.mem_gb, a.timeout_min)
    job = submit(a.config, a.store, resources, a.run_dir, None, extra, a.umap_samples)
    print(f"submitted job {job.job_id}; logs: {job.paths.stdout}")
    if a.wait:
        print(f"metrics: {job.results()[0]}")
