"""Training jobs on the real single-node Slurm (slurm/start-local-slurm.sh), submitted through submitit."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from training.submit import SlurmResources, submit
from training.synthetic import write_synthetic_store

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # 20 000 rows: 16 000 train rows -> 8 000 per rank -> 32 steps of 256 per epoch
    return write_synthetic_store(tmp_path_factory.mktemp("train_slurm") / "s.zarr", n_rows=20000, rows_per_shard=2000)


@pytest.fixture
def slurm_env(local_slurm, monkeypatch):
    monkeypatch.setenv("PATH", local_slurm.env["PATH"])  # submitit polls sacct: the wrapper adds -c
    return local_slurm


def two_tasks(local_slurm) -> SlurmResources:
    return SlurmResources(partition=local_slurm.partition, tasks_per_node=2, timeout_min=10, mem_gb=4)


def read_step(path: Path) -> int | None:
    try:
        return int(torch.load(path, weights_only=True)["global_step"])
    except Exception:  # being written right now
        return None


def wait_gone(job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True, text=True).stdout
        if job_id not in out.split():
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still in squeue after {timeout} s")


def test_two_task_ddp_job_through_submitit_writes_checkpoint_and_metrics(repo_root, store, slurm_env, tmp_path):
    run_dir = tmp_path / "run"
    job = submit([repo_root / "configs" / "train" / "base.yaml", repo_root / "configs" / "train" / "mlp-simple.yaml"], store, two_tasks(slurm_env), run_dir,
                 extra_fit_args=["--trainer.max_epochs", "2", "--data.batch_size", "256", "--schedule.kind", "paper",
                                 "--data.save_shard_indices", "true"], umap_samples=0)
    results = job.results()  # one per task; rank 0 evaluated
    assert results[0] == str(run_dir / "eval" / "metrics.json") and results[1] is None
    metrics = json.loads(Path(results[0]).read_text())
    assert metrics["test"]["n"] == 4000 and 0.2 < metrics["test"]["accuracy"] <= 1.0
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * 32
    shards = [np.load(run_dir / "shards" / f"train-rank{r}-of2.npy") for r in range(2)]
    assert np.intersect1d(*shards).size == 0 and len(shards[0]) == len(shards[1]) == 8000
    log = Path(job.paths.stdout).read_text() + Path(job.paths.stderr).read_text()
    assert "global_rank=0(2)" in log


def test_cancelled_job_resubmitted_resumes_from_last_checkpoint(repo_root, store, slurm_env, tmp_path):
    run_dir = tmp_path / "run"
    epochs, steps_per_epoch = 30, 32
    args = ([repo_root / "configs" / "train" / "base.yaml", repo_root / "configs" / "train" / "mlp-simple.yaml"], store, two_tasks(slurm_env), run_dir)
    kwargs = dict(extra_fit_args=["--trainer.max_epochs", str(epochs), "--data.batch_size", "256", "--schedule.kind", "paper",
                                  "--checkpoint_every_n_steps", "16"], umap_samples=0)
    last = run_dir / "checkpoints" / "last.ckpt"
    first = submit(*args, **kwargs)
    deadline = time.monotonic() + 180
    while read_step(last) is None:
        assert time.monotonic() < deadline, f"no checkpoint from job {first.job_id}: {first.paths.stderr}"
        assert first.state not in ("FAILED", "COMPLETED"), Path(first.paths.stderr).read_text()[-3000:]
        time.sleep(0.2)
    subprocess.run(["scancel", first.job_id], check=True)
    wait_gone(first.job_id)
    step_at_cancel = read_step(last)
    print(f"cancelled at step {step_at_cancel} of {epochs * steps_per_epoch}")
    assert step_at_cancel is not None and 0 < step_at_cancel < epochs * steps_per_epoch, step_at_cancel

    second = submit(*args, **kwargs)
    assert second.results()[0] == str(run_dir / "eval" / "metrics.json")
    assert read_step(last) == epochs * steps_per_epoch  # same optimizer steps as an uninterrupted run
    log = Path(second.paths.stdout).read_text() + Path(second.paths.stderr).read_text()
    assert "Restoring states from the checkpoint path" in log and "last.ckpt" in log
    versions = sorted(p.name for p in (run_dir / "csv").iterdir())
    assert len(versions) == 2  # the first (cancelled) and the resumed run


def test_sbatch_template_runs_two_task_ddp(repo_root, store, slurm_env, tmp_path):
    """slurm/train.sbatch as a user runs it, its GPU line overridden for this CPU-only node."""
    run_dir = tmp_path / "run"
    out = subprocess.run(
        ["sbatch", "--parsable", "--wait", f"--partition={slurm_env.partition}", "--ntasks-per-node=2",
         "--gpus-per-node=0", "--cpus-per-task=1", "--mem=4G", "--time=00:10:00",
         f"--output={tmp_path}/slurm-%j.out", str(repo_root / "slurm" / "train.sbatch"),
         str(repo_root / "configs" / "train" / "mlp-simple.yaml"), store, "--run_dir", str(run_dir),
         "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1", "--data.batch_size", "256",
         "--schedule.kind", "paper"],
        cwd=repo_root, env=slurm_env.env, capture_output=True, text=True, timeout=300,
    )
    job_id = out.stdout.strip().split(";")[0]
    log = (tmp_path / f"slurm-{job_id}.out").read_text() if job_id else ""
    assert out.returncode == 0, out.stderr + log[-3000:]
    assert "1 node(s) x 2 task(s)" in log and "Starting with 2 processes" in log
    assert "SLURM auto-requeueing enabled" in log  # Lightning took over SIGUSR1 (--signal=SIGUSR1@90)
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 32
    script = (repo_root / "slurm" / "train.sbatch").read_text()
    for directive in ("--signal=SIGUSR1@90", "--requeue", "--partition=", "--nodes=", "--gpus-per-node=",
                      "--ntasks-per-node=", "--time="):
        assert f"#SBATCH {directive}" in script
