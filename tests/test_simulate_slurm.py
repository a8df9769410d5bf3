"""The tiny simulation on the real single-node Slurm (dask-jobqueue SLURMCluster worker jobs)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import zarr

from tests.test_simulate_store import assert_same_store

pytestmark = pytest.mark.slurm


def _worker_jobs(env) -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-n", "dask-worker", "-o", "%i %T"], capture_output=True, text=True,
                         env=env, check=True).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def test_slurm_run_writes_the_same_store_as_localcluster(local_slurm, tiny_store, tiny_config, tmp_path):
    from simulate.run import simulate

    out = tmp_path / "slurm.zarr"
    summary = simulate(tiny_config, out, cluster="slurm", cluster_config=str(local_slurm.cluster_config), n_workers=2)
    assert summary["tasks_run"] == 2
    assert_same_store(out, tiny_store)


def test_cancelled_worker_job_still_gives_complete_identical_store(local_slurm, tiny_store, tiny_config, tmp_path):
    out = tmp_path / "scancel.zarr"
    cmd = [sys.executable, "-m", "simulate", "--config", str(tiny_config), "--out", str(out), "--cluster", "slurm",
           "--cluster-config", str(local_slurm.cluster_config), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=local_slurm.env)
    deadline = time.time() + 120
    running: list[str] = []
    while time.time() < deadline and proc.poll() is None:
        running = [job for job, state in _worker_jobs(local_slurm.env).items() if state == "RUNNING"]
        if len(running) == 2:
            break
        time.sleep(0.5)
    assert len(running) == 2, "two worker jobs never ran"
    time.sleep(5)  # both workers are now inside abTEM (a task takes > 10 s)
    assert zarr.open_array(str(out / "task_done"), mode="r")[:].sum() == 0, "cancelled too late to test anything"
    subprocess.run(["scancel", running[0]], check=True, env=local_slurm.env)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output
    assert zarr.open_array(str(out / "task_done"), mode="r")[:].tolist() == [1, 1]
    assert_same_store(out, tiny_store)
