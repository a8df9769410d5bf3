"""Dask workers as Slurm jobs (dask-jobqueue), with the checks dask-jobqueue leaves out.

dask-jobqueue's ``scale()`` never raises when ``sbatch`` refuses a job, and a job stuck in the
queue looks the same as a slow one. So, before scaling, the rendered job script goes through
``sbatch --test-only`` (a bad partition, account or resource request fails there with Slurm's own
message), and a worker wait that times out reports each job's squeue state and pending reason.
"""
from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

from .config import render_job_script, workers_per_job
from .errors import ClusterError

SBATCH_TIMEOUT_S = 60


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    if shutil.which(cmd[0]) is None:
        raise ClusterError(f"`{cmd[0]}` not found on PATH: open_client('slurm') must run where Slurm's client tools are")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"`{' '.join(cmd)}` did not answer within {timeout:.0f} s (is slurmctld up?)") from exc


def preflight_job_script(script: str, source: str = "config") -> str:
    """Ask Slurm whether it would accept ``script`` (``sbatch --test-only``); return sbatch's answer.

    Nothing is queued. A refusal raises ClusterError quoting sbatch's stderr.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="dask-worker-preflight-") as handle:
        handle.write(script)
        handle.flush()
        proc = _run(["sbatch", "--test-only", handle.name], timeout=SBATCH_TIMEOUT_S)
    answer = (proc.stderr.strip() + "\n" + proc.stdout.strip()).strip()
    if proc.returncode != 0:
        header = "\n".join(line for line in script.splitlines() if line.startswith("#SBATCH"))
        raise ClusterError(
            f"Slurm refused the worker job from {source} (sbatch --test-only exit {proc.returncode}):\n"
            f"  {answer}\nJob directives:\n{header}"
        )
    return answer


def job_ids(cluster) -> list[str]:
    """Slurm job ids of the jobs a dask-jobqueue cluster has submitted so far."""
    ids = []
    for job in list(cluster.workers.values()):
        job_id = getattr(job, "job_id", None)
        if job_id:
            ids.append(str(job_id))
    return ids


def describe_jobs(ids: Iterable[str]) -> str:
    """One line per job: id, state and reason from squeue (or a note when squeue cannot tell)."""
    ids = list(ids)
    if not ids:
        return "  no job was submitted (sbatch failed inside dask-jobqueue; see the log above)"
    proc = _run(["squeue", "-h", "-j", ",".join(ids), "-o", "%i %T %r %M %N"], timeout=30)
    if proc.returncode != 0:
        return f"  squeue failed: {proc.stderr.strip()}"
    seen = {line.split()[0]: line for line in proc.stdout.splitlines() if line.strip()}
    lines = []
    for job_id in ids:
        if job_id in seen:
            jid, state, reason, *rest = seen[job_id].split() + ["", ""]
            lines.append(f"  job {jid}: state {state}, reason {reason}, time {rest[0]}, node {rest[1] or '-'}")
        else:
            lines.append(f"  job {job_id}: no longer in squeue (finished or failed; check its log)")
    return "\n".join(lines)


def _log_tails(log_directory: str | None, ids: list[str], n_lines: int = 15) -> str:
    if not log_directory:
        return ""
    out = []
    for job_id in ids:
        for path in sorted(Path(log_directory).glob(f"*-{job_id}.err")):
            tail = path.read_text(errors="replace").splitlines()[-n_lines:]
            if tail:
                out.append(f"--- {path} (last {len(tail)} lines)\n" + "\n".join(tail))
    return ("\n" + "\n".join(out)) if out else ""


def start_slurm_cluster(settings: Mapping, n_workers: int | None, wait_timeout_s: float, source: str):
    """Start a SLURMCluster from validated settings (see config.validate_slurm_config) and wait for its workers.

    Call inside ``dask.config.set(dask_config_entries(settings["slurm"]))``. Returns ``(cluster, client)``.
    """
    from dask_jobqueue import SLURMCluster  # deferred: pulls distributed (~2 s); Slurm only
    from distributed import Client  # deferred: distributed costs ~2 s; `import cluster` stays light


    slurm = settings["slurm"]
    per_job = workers_per_job(slurm)
    if n_workers is None:
        jobs = settings["jobs"] or 1
        n_workers = jobs * per_job
    elif not isinstance(n_workers, int) or isinstance(n_workers, bool) or n_workers < 1:
        raise ClusterError(f"n_workers must be a positive integer, got {n_workers!r}")
    else:
        jobs = math.ceil(n_workers / per_job)
    preflight_job_script(render_job_script({"jobqueue": {"slurm": slurm}}), source=source)

    cluster = SLURMCluster()
    client = None
    try:
        client = Client(cluster)
        cluster.scale(jobs=jobs)
        try:
            client.wait_for_workers(n_workers, timeout=wait_timeout_s)
        except TimeoutError as exc:
            ids = job_ids(cluster)
            have = len(client.scheduler_info(n_workers=-1)["workers"])
            raise ClusterError(
                f"only {have} of {n_workers} Dask workers ({jobs} Slurm job(s) from {source}) connected within "
                f"{wait_timeout_s:.0f} s. Slurm says:\n{describe_jobs(ids)}"
                f"{_log_tails(slurm.get('log-directory'), ids)}"
            ) from exc
    except BaseException:
        if client is not None:
            client.close()
        cluster.close()
        raise
    return cluster, client
