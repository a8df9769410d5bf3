"""``python -m rvae submit --config CONFIG --data.store STORE --data.array ARRAY [slurm options] [fit overrides]``

One rVAE fit as a Slurm job through submitit, as the classifiers' ``python -m training submit``: one task per
device (``--ntasks-per-node`` = devices, read by Lightning from the Slurm environment), ``ckpt_path: last`` so a
requeued or resubmitted job resumes, DDP over the tasks (each rank streams its own shards). The job is
checkpointable: on timeout or pre-emption submitit requeues it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import submitit

from training.submit import SlurmResources

from .cli import run_cli
from .data import ZarrItemsDataModule, open_items
from .fit import read_config
from .module import RVAEModule


class FitJob(submitit.helpers.Checkpointable):
    """Runs in every Slurm task: the Lightning fit (resuming); returns the checkpoint path on rank 0."""

    def __call__(self, fit_args: list[str], run_dir: str) -> str | None:
        run_cli(["fit", *fit_args])
        if submitit.JobEnvironment().global_rank != 0:
            return None
        return str(Path(run_dir) / "checkpoints" / "last.ckpt")


def check_inputs(config: str | Path, store: str, array: str) -> dict:
    """Validate the config, the model and the items before anything is submitted."""
    cfg = read_config(config)
    RVAEModule(**cfg.get("model", {}))
    ZarrItemsDataModule(**{**cfg.get("data", {}), "store": str(store), "array": array})
    open_items(str(store), array)
    return cfg


def submit(config: str | Path, store: str, array: str, resources: SlurmResources, run_dir: str | None = None,
           extra_fit_args: list[str] | None = None, setup: list[str] | None = None) -> submitit.Job:
    cfg = check_inputs(config, store, array)
    run_dir = Path(run_dir or cfg.get("run_dir") or f"runs/{Path(config).stem}").resolve()
    workdir = Path.cwd().resolve()
    devices = resources.tasks_per_node
    fit_args = ["--config", str(Path(config).resolve()), "--data.store", str(Path(store).resolve()),
                "--data.array", array, "--run_dir", str(run_dir), "--trainer.devices", str(devices),
                "--trainer.num_nodes", str(resources.nodes),
                "--trainer.strategy", "ddp" if devices * resources.nodes > 1 else "auto"]
    if resources.gpus_per_node == 0:
        fit_args += ["--trainer.accelerator", "cpu"]
    fit_args += list(extra_fit_args or [])
    executor = submitit.AutoExecutor(folder=run_dir / "submitit" / "%j", cluster="slurm")
    params = dict(slurm_partition=resources.partition, nodes=resources.nodes, tasks_per_node=devices,
                  cpus_per_task=resources.cpus_per_task, timeout_min=resources.timeout_min, name="stem-rvae",
                  slurm_setup=[f"cd {workdir}", f"export PYTHONPATH={workdir}${{PYTHONPATH:+:$PYTHONPATH}}",
                               "export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}",
                               *(setup or [])])
    if resources.gpus_per_node:
        params["gpus_per_node"] = resources.gpus_per_node
    if resources.mem_gb is not None:
        params["mem_gb"] = resources.mem_gb
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor.submit(FitJob(), fit_args, str(run_dir))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m rvae submit", description=__doc__.split("\n\n")[1])
    p.add_argument("--config", required=True, help="configs/rvae/adf.yaml or fourdstem.yaml")
    p.add_argument("--data.store", "--store", dest="store", required=True)
    p.add_argument("--data.array", "--array", dest="array", required=True)
    p.add_argument("--run_dir", default=None)
    p.add_argument("--partition", default=None)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0)
    p.add_argument("--tasks-per-node", type=int, default=1, help="CPU runs: DDP processes per node")
    p.add_argument("--cpus-per-task", type=int, default=1)
    p.add_argument("--mem-gb", type=float, default=None)
    p.add_argument("--timeout-min", type=int, default=60)
    p.add_argument("--wait", action="store_true")
    a, extra = p.parse_known_args(argv)
    resources = SlurmResources(a.partition, a.nodes, a.tasks_per_node, a.gpus_per_node, a.cpus_per_task,
                               a.mem_gb, a.timeout_min, "stem-rvae")
    job = submit(a.config, a.store, a.array, resources, a.run_dir, extra)
    print(f"submitted job {job.job_id}; logs: {job.paths.stdout}")
    if a.wait:
        print(f"checkpoint: {job.results()[0]}")
