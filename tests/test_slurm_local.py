"""The cluster layer against a real single-node Slurm (slurm/start-local-slurm.sh), not a mock."""
from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from cluster import ClusterError, open_client, track

pytestmark = pytest.mark.slurm
SLURM_DIR = Path(__file__).resolve().parents[1] / "slurm"


def _config_with(local_slurm, tmp_path: Path, **slurm) -> Path:
    config = yaml.safe_load(local_slurm.cluster_config.read_text())
    config["jobqueue"]["slurm"].update(slurm)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _job_id_and_square(x):
    return os.environ["SLURM_JOB_ID"], x * x


def test_node_is_up_and_start_is_idempotent(local_slurm):
    state = subprocess.run(
        ["sinfo", "-h", "-N", "-n", local_slurm.node, "-p", local_slurm.partition, "-o", "%t"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert state in {"idle", "mix", "alloc"}
    again = subprocess.run(["bash", str(SLURM_DIR / "start-local-slurm.sh")], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "started" not in again.stdout and "wrote" not in again.stdout  # nothing restarted or rewritten
    # the node offers more CPUs than the machine has, so workers and a 2-task training job fit together
    cpus = subprocess.run(["sinfo", "-h", "-N", "-n", local_slurm.node, "-o", "%c"], capture_output=True, text=True)
    assert int(cpus.stdout.strip()) >= 4


def test_two_workers_compute_through_track(local_slurm):
    stream = io.StringIO()
    with open_client("slurm", config_path=local_slurm.cluster_config, n_workers=2, wait_timeout_s=120) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2
        results = list(track(client.map(_job_id_and_square, range(12)), label="square", stream=stream))
        ids = set(_squeue_ids())
    assert sorted(r[1] for r in results) == [x * x for x in range(12)]
    job_ids = {r[0] for r in results}
    assert job_ids <= ids  # the tasks ran inside the Slurm jobs dask-jobqueue submitted
    assert stream.getvalue().splitlines()[-1].startswith("square: 12/12 tasks (100.0%)")
    # closing the client cancels the worker jobs
    for _ in range(50):
        if not (job_ids & _squeue_ids()):
            break
        time.sleep(0.2)
    assert not (job_ids & _squeue_ids())


def test_bad_partition_fails_before_submitting(local_slurm, tmp_path):
    path = _config_with(local_slurm, tmp_path, queue="no-such-partition")
    before = _squeue_ids()
    with pytest.raises(ClusterError, match="invalid partition specified: no-such-partition"):
        with open_client("slurm", config_path=path, n_workers=1, wait_timeout_s=600):
            pytest.fail("open_client yielded a client for a partition that does not exist")
    assert _squeue_ids() <= before  # nothing was queued


def test_impossible_memory_request_quotes_sbatch(local_slurm, tmp_path):
    path = _config_with(local_slurm, tmp_path, memory="4000GiB")
    with pytest.raises(ClusterError, match=r"sbatch --test-only.*\n.*(node configuration is not available|memory)"):
        with open_client("slurm", config_path=path, n_workers=1, wait_timeout_s=600):
            pass


def test_worker_timeout_reports_pending_reason(local_slurm, tmp_path):
    # held jobs pass the preflight but never start: the error must say why
    path = _config_with(local_slurm, tmp_path, **{"job-extra-directives": ["--hold"]})
    with pytest.raises(ClusterError, match=r"0 of 1 Dask workers.*\n.*state PENDING, reason JobHeldUser") as info:
        with open_client("slurm", config_path=path, n_workers=1, wait_timeout_s=3):
            pass
    job_id = str(info.value).split("job ")[-1].split(":")[0]
    for _ in range(50):  # the failed start cancelled its job
        if job_id not in _squeue_ids():
            break
        time.sleep(0.2)
    assert job_id not in _squeue_ids()


def test_sacct_wrapper_sees_a_finished_job(local_slurm, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\necho hello from $SLURM_JOB_ID\n")
    submit = subprocess.run(
        ["sbatch", "--parsable", "--wait", "-p", local_slurm.partition, "-t", "1", "-o", str(tmp_path / "out-%j"),
         str(script)],
        capture_output=True, text=True, env=local_slurm.env, timeout=120,
    )
    assert submit.returncode == 0, submit.stderr
    job_id = submit.stdout.strip().split(";")[0]
    assert (tmp_path / f"out-{job_id}").read_text().strip() == f"hello from {job_id}"
    # exactly the command submitit polls with
    command = ["sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", job_id]
    for _ in range(50):  # the completion record is written as the job leaves the queue
        wrapped = subprocess.run(command, capture_output=True, text=True, env=local_slurm.env, check=True).stdout
        if len(wrapped.splitlines()) > 1:
            break
        time.sleep(0.2)
    assert wrapped.splitlines()[0] == "JobID|State|NodeList"
    assert f"{job_id}|COMPLETED|{local_slurm.node}" in wrapped.splitlines()
    # without the wrapper (no slurmdbd) sacct cannot see it: the reason the wrapper exists
    plain = subprocess.run(command, capture_output=True, text=True)
    assert f"{job_id}|COMPLETED" not in plain.stdout


def _where_am_i(x):
    return os.environ["SLURM_JOB_ID"], x + 1


def _die_without_result():
    os._exit(3)  # no result file: only sacct can tell submitit the job is over


def _wait_done(job, timeout_s: float = 120) -> bool:
    # polls like job.result() would, but gives up instead of hanging forever
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if job.done(force_check=True):
            return True
        time.sleep(0.5)
    return False


def _final_state(job, timeout_s: float = 30) -> str | None:
    # sacct -c knows a job only once it has left the queue; the result file can appear a moment earlier
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = job.get_info(mode="force").get("State")
        if state:
            return state
        time.sleep(0.3)
    return None


def test_submitit_round_trip_through_the_wrapper(local_slurm, tmp_path, monkeypatch):
    import submitit

    monkeypatch.setenv("PATH", local_slurm.env["PATH"])
    executor = submitit.SlurmExecutor(folder=tmp_path / "submitit", max_num_timeout=0)
    executor.update_parameters(partition=local_slurm.partition, time=2, cpus_per_task=1, mem="512M")
    job = executor.submit(_where_am_i, 41)
    assert _wait_done(job)
    job_id, value = job.result()
    assert value == 42 and job_id == str(job.job_id)
    assert _final_state(job) == "COMPLETED"  # read through the wrapper's sacct -c
    # a job that dies without a result: with the wrapper submitit sees it end instead of waiting forever
    dead = executor.submit(_die_without_result)
    assert _wait_done(dead), "submitit never learnt that the job ended (is slurm/bin first on PATH?)"
    assert _final_state(dead) == "FAILED"
    dead._results_timeout_s = 1  # submitit waits 15 s for a late result file on shared filesystems; none will come
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        dead.result()
