"""Cluster layer without Slurm: config validation, job-script text, status lines, a real LocalCluster."""
from __future__ import annotations

import io
import re
from pathlib import Path

import dask.config
import pytest
import yaml

from cluster import (
    ClusterError,
    TaskError,
    format_duration,
    format_status,
    load_slurm_config,
    local_worker_count,
    open_client,
    render_job_script,
    track,
)
from cluster.config import dask_config_entries, validate_slurm_config
from cluster.local import load_local_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "cluster"
GIB = 1024**3


def _yaml(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text())


def _minimal(**slurm) -> dict:
    return {"jobqueue": {"slurm": {"cores": 2, "memory": "4GiB", **slurm}}}


# ---- status lines -------------------------------------------------------------------------------


def test_format_status_matches_the_documented_layout():
    line = format_status("simulate", 12, 288, 38 * 60, "task")
    # 12 tasks in 38 min = 0.316/min; 276 left at that rate = 874 min = 14h34m
    assert line == "simulate: 12/288 tasks (4.2%) | 0.316 task/min | elapsed 38m00s | ETA 14h34m"


@pytest.mark.parametrize(
    ("done", "total", "elapsed", "expected"),
    [
        (0, 10, 5.0, "x: 0/10 tasks (0.0%) | 0 task/min | elapsed 5s | ETA ?"),
        (10, 10, 4.0, "x: 10/10 tasks (100.0%) | 2.5 task/s | elapsed 4s | done"),
        (3, None, 60.0, "x: 3 tasks | 3 task/min | elapsed 1m00s"),
        (1, 4, 7200.0, "x: 1/4 tasks (25.0%) | 0.00833 task/min | elapsed 2h00m | ETA 6h00m"),
    ],
)
def test_format_status_cases(done, total, elapsed, expected):
    assert format_status("x", done, total, elapsed) == expected


def test_format_status_unit_is_pluralised_once():
    assert format_status("features", 5, 10, 10.0, unit="patch") == "features: 5/10 patches (50.0%) | 30 patch/min | elapsed 10s | ETA 10s"
    assert "5/10 rows (50.0%)" in format_status("f", 5, 10, 10.0, unit="rows")


def test_format_status_zero_elapsed_does_not_divide_by_zero():
    assert format_status("x", 0, 3, 0.0).endswith("ETA ?")


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.4, "59s"), (60, "1m00s"), (3599, "59m59s"), (3600, "1h00m"), (90061, "1d01h")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# ---- config validation --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["slurm.yaml", "slurm-gpu.yaml", "slurm-localhost.yaml"])
def test_shipped_slurm_configs_validate(name):
    settings = load_slurm_config(CONFIGS / name)
    assert settings["slurm"]["cores"] >= 1
    assert settings["jobs"] >= 1


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (_minimal(partition="debug"), "jobqueue.slurm.partition"),
        ({"jobqueue": {"slurm": {"memory": "1GiB"}}}, "jobqueue.slurm.cores"),
        ({"jobqueue": {"slurm": {"cores": 1}}}, "jobqueue.slurm.memory"),
        (_minimal(cores=0), "jobqueue.slurm.cores"),
        (_minimal(cores=4, processes=3), "processes"),
        (_minimal(job_extra_directives="--gres=gpu:1"), "jobqueue.slurm.job-extra-directives"),
        ({**_minimal(), "workers": 3}, "top-level"),
        ({**_minimal(), "scale": {"jobs": 0}}, "scale.jobs"),
        ({"jobqueue": {"pbs": {}}}, "jobqueue.slurm"),
    ],
)
def test_bad_slurm_config_names_the_field(config, field):
    with pytest.raises(ClusterError, match=re.escape(field)):
        validate_slurm_config(config)


def test_underscore_and_dash_keys_are_the_same_field():
    settings = validate_slurm_config(_minimal(job_extra_directives=["--qos=low"], death_timeout=5))
    assert settings["slurm"]["job-extra-directives"] == ["--qos=low"]
    assert dask_config_entries(settings["slurm"])["jobqueue.slurm.death-timeout"] == 5


def test_missing_config_file_is_a_cluster_error(tmp_path):
    with pytest.raises(ClusterError, match="not found"):
        load_slurm_config(tmp_path / "nope.yaml")


def test_open_client_rejects_unknown_kind():
    with pytest.raises(ClusterError, match="kind"):
        with open_client("kubernetes"):
            pass


# ---- job script text ----------------------------------------------------------------------------


def test_localhost_script_has_the_directives():
    script = render_job_script(_yaml("slurm-localhost.yaml"))
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    for directive in ("-J dask-worker", "-p debug", "-n 1", "--cpus-per-task=1", "--mem=2G", "-t 00:30:00"):
        assert f"#SBATCH {directive}" in lines
    assert "#SBATCH -o /tmp/stem-context-slurm/logs/dask-worker-%J.out" in lines
    assert "#SBATCH -A" not in script  # account null: no directive
    command = lines[-1]
    assert "-m distributed.cli.dask_worker tcp://<scheduler-address>:8786" in command
    assert "--interface lo" in command and "--nthreads 1" in command and "--memory-limit 2.00GiB" in command
    assert "--nworkers" not in command  # one process per job


def test_gpu_script_asks_one_gpu_for_one_worker():
    script = render_job_script(_yaml("slurm-gpu.yaml"))
    assert "#SBATCH --gres=gpu:1" in script.splitlines()
    assert "#SBATCH -p gpu" in script
    assert "--nworkers" not in script  # processes: 1 -> a single worker owns the GPU
    assert "--nthreads 4" in script and "--mem=32G" in script


def test_cpu_script_splits_cores_and_memory_over_processes():
    script = render_job_script(_yaml("slurm.yaml"))
    assert "#SBATCH --cpus-per-task=16" in script and "#SBATCH --mem=48G" in script
    assert "--nworkers 16" in script and "--nthreads 1" in script and "--memory-limit 3.00GiB" in script
    assert "--local-directory ${TMPDIR:-/tmp}" in script


def test_account_and_extra_directives_are_rendered():
    script = render_job_script(_minimal(account="mat123", job_extra_directives=["--qos=debug", "--exclusive"]))
    lines = script.splitlines()
    assert "#SBATCH -A mat123" in lines
    assert lines.index("#SBATCH --qos=debug") < lines.index("#SBATCH --exclusive")  # order kept


def test_rendering_creates_no_log_directory(tmp_path):
    logs = tmp_path / "logs"
    script = render_job_script(_minimal(**{"log-directory": str(logs)}))
    assert f"#SBATCH -e {logs}/dask-worker-%J.err" in script
    assert not logs.exists()


def test_rendered_script_is_what_dask_jobqueue_submits(tmp_path):
    """render_job_script mirrors SLURMCluster.job_script() but for the scheduler address and worker name."""
    from dask_jobqueue import SLURMCluster

    config = _yaml("slurm-localhost.yaml")
    config["jobqueue"]["slurm"]["log-directory"] = str(tmp_path / "logs")
    config["jobqueue"]["slurm"]["job-extra-directives"] = ["--qos=normal"]
    ours = render_job_script(config)
    entries = dask_config_entries(validate_slurm_config(config)["slurm"])
    with dask.config.set(entries), SLURMCluster() as cluster:
        theirs = cluster.job_script().replace(cluster.scheduler_address, "tcp://<scheduler-address>:8786")
    assert ours == theirs.replace("--name dummy-name", "--name dask-worker-name")


# ---- local cluster sizing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cores", "memory", "per_worker", "expected"),
    [(2, 24 * GIB, "2GiB", 2), (64, 24 * GIB, "2GiB", 12), (8, 1 * GIB, "2GiB", 1), (4, 16 * GIB, 4 * GIB, 4)],
)
def test_local_worker_count(cores, memory, per_worker, expected):
    assert local_worker_count(cores, memory, per_worker) == expected


def test_local_worker_count_rejects_nonsense():
    with pytest.raises(ClusterError, match="memory_per_worker"):
        local_worker_count(2, GIB, 0)
    with pytest.raises(ClusterError, match="cores"):
        local_worker_count(0, GIB)


def test_local_config_unknown_key(tmp_path):
    path = tmp_path / "local.yaml"
    path.write_text("local:\n  n_threads: 4\n")
    with pytest.raises(ClusterError, match="local.n_threads"):
        load_local_config(path)


# ---- a real LocalCluster ------------------------------------------------------------------------


def _square(x):
    return x * x


def _fail_on(x, bad):
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_local_round_trip_with_status_lines():
    stream = io.StringIO()
    with open_client("local", n_workers=2) as client:
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2
        futures = client.map(_square, range(20))
        results = list(track(futures, label="square", stream=stream, interval_s=0))
        # interval 0: one line per completion; default interval: only the final line for fast tasks
        quiet = io.StringIO()
        assert sorted(track(client.map(_square, range(20, 30)), label="more", stream=quiet)) == [
            x * x for x in range(20, 30)
        ]
        # a task error names the task and keeps the original as the cause
        futures = client.map(_fail_on, range(4), bad=2, key=[f"fail-{i}" for i in range(4)])
        with pytest.raises(TaskError, match=r"square: task 'fail-2' failed: ValueError: bad input 2") as info:
            list(track(futures, label="square", stream=io.StringIO()))
        assert info.value.key == "fail-2" and isinstance(info.value.__cause__, ValueError)
        # a terminal gets a tqdm bar instead
        tty = _Tty()
        assert sorted(track(client.map(_square, range(5)), label="bar", stream=tty)) == [0, 1, 4, 9, 16]
    assert client.status == "closed"
    assert sorted(results) == [x * x for x in range(20)]
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20
    assert lines[-1].startswith("square: 20/20 tasks (100.0%) |") and lines[-1].endswith("| done")
    assert lines[0].startswith("square: 1/20 tasks (5.0%) |")
    quiet_lines = quiet.getvalue().splitlines()
    assert len(quiet_lines) == 1 and quiet_lines[0].startswith("more: 10/10 tasks")
    assert "bar" in tty.getvalue() and "5/5" in tty.getvalue()


def test_local_sizing_follows_memory_per_worker(tmp_path):
    path = tmp_path / "local.yaml"
    path.write_text("local:\n  memory_per_worker: 1TiB\n")  # more than any CI machine: the floor of 1 worker
    with open_client("local", config_path=path) as client:
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1
        assert client.submit(_square, 7).result() == 49
