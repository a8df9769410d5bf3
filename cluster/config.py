"""Cluster YAML files: loading, validation and the worker job script, without touching Slurm.

A Slurm config file holds dask-jobqueue's own schema under ``jobqueue.slurm`` (see
``configs/cluster/slurm.yaml``) plus one optional project key::

    scale:
      jobs: 2          # worker jobs submitted by open_client("slurm") when n_workers is not given

Everything here is pure (text in, text or dicts out) so it can be tested without a scheduler.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import dask.config

from contract.errors import ConfigError
from contract.yamlsafe import read_yaml

from .errors import ClusterError

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SLURM_CONFIG = REPO_ROOT / "configs" / "cluster" / "slurm.yaml"
DEFAULT_LOCAL_CONFIG = REPO_ROOT / "configs" / "cluster" / "local.yaml"

# Address written into a rendered script when no scheduler is running yet.
PLACEHOLDER_SCHEDULER = "tcp://<scheduler-address>:8786"
_TOP_LEVEL_KEYS = {"jobqueue", "scale"}
_SCALE_KEYS = {"jobs"}


def _canonical(key: str) -> str:
    # dask.config treats "job_extra_directives" and "job-extra-directives" as the same key
    return str(key).replace("_", "-")


def slurm_schema_keys() -> set[str]:
    """The keys dask-jobqueue accepts under ``jobqueue.slurm`` (from its bundled jobqueue.yaml)."""
    import dask_jobqueue  # noqa: F401 (registers its defaults)  # deferred: pulls distributed (~2 s)

    return {_canonical(k) for k in dask.config.get("jobqueue.slurm")}


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or a non-mapping raises ClusterError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ClusterError(f"cluster config file not found: {path}")
    try:
        data = read_yaml(path, "cluster config") or {}  # no aliases, duplicate keys or NaN
    except ConfigError as exc:
        raise ClusterError(str(exc)) from None
    if not isinstance(data, dict):
        raise ClusterError(f"cluster config {path} must be a mapping, got {type(data).__name__}")
    return data


def validate_slurm_config(config: Mapping[str, Any], source: str = "config") -> dict:
    """Check a Slurm cluster config and return ``{"slurm": {...}, "jobs": int | None}``.

    ``slurm`` holds the ``jobqueue.slurm`` entries with canonical (dash) key names. Unknown keys,
    a missing ``cores``/``memory`` and non-positive numbers raise ClusterError naming the field.
    """
    unknown_top = set(config) - _TOP_LEVEL_KEYS
    if unknown_top:
        raise ClusterError(f"{source}: unknown top-level key(s) {sorted(unknown_top)}; allowed: {sorted(_TOP_LEVEL_KEYS)}")
    jobqueue = config.get("jobqueue")
    if not isinstance(jobqueue, Mapping) or not isinstance(jobqueue.get("slurm"), Mapping):
        raise ClusterError(f"{source}: expected a mapping at jobqueue.slurm (dask-jobqueue's schema)")
    other = set(jobqueue) - {"slurm"}
    if other:
        raise ClusterError(f"{source}: only jobqueue.slurm is read here, found jobqueue.{sorted(other)[0]}")
    slurm = {_canonical(k): v for k, v in jobqueue["slurm"].items()}
    allowed = slurm_schema_keys()
    unknown = sorted(set(slurm) - allowed)
    if unknown:
        raise ClusterError(
            f"{source}: unknown key jobqueue.slurm.{unknown[0]}; dask-jobqueue accepts: {', '.join(sorted(allowed))}"
        )
    for field in ("cores", "memory"):
        if slurm.get(field) in (None, ""):
            raise ClusterError(f"{source}: jobqueue.slurm.{field} must be set (per worker job)")
    for field in ("cores", "processes"):
        value = slurm.get(field)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ClusterError(f"{source}: jobqueue.slurm.{field} must be a positive integer, got {value!r}")
    if slurm.get("processes") and slurm["cores"] % slurm["processes"]:
        raise ClusterError(
            f"{source}: jobqueue.slurm.cores ({slurm['cores']}) must be a multiple of processes ({slurm['processes']})"
        )
    for field in ("job-extra-directives", "job-script-prologue", "worker-extra-args", "job-directives-skip"):
        value = slurm.get(field)
        if value is not None and not isinstance(value, list):
            raise ClusterError(f"{source}: jobqueue.slurm.{field} must be a list, got {value!r}")
    scale = config.get("scale") or {}
    if not isinstance(scale, Mapping) or set(scale) - _SCALE_KEYS:
        raise ClusterError(f"{source}: scale must be a mapping with key(s) {sorted(_SCALE_KEYS)}")
    jobs = scale.get("jobs")
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        raise ClusterError(f"{source}: scale.jobs must be a positive integer, got {jobs!r}")
    return {"slurm": slurm, "jobs": jobs}


def load_slurm_config(path: str | Path | None = None) -> dict:
    """Load and validate a Slurm cluster YAML (default ``configs/cluster/slurm.yaml``); see validate_slurm_config."""
    path = Path(path) if path is not None else DEFAULT_SLURM_CONFIG
    return validate_slurm_config(load_yaml(path), source=str(path))


def dask_config_entries(slurm: Mapping[str, Any]) -> dict:
    """Flat ``{"jobqueue.slurm.<key>": value}`` entries for ``dask.config.set``.

    Flat keys matter: setting the nested mapping would replace dask-jobqueue's defaults for the
    keys the file leaves out.
    """
    return {f"jobqueue.slurm.{key}": value for key, value in slurm.items()}


def workers_per_job(slurm: Mapping[str, Any]) -> int:
    """Dask worker processes started by one job (dask-jobqueue's rule when ``processes`` is unset)."""
    from dask_jobqueue.core import nprocesses_nthreads  # deferred: pulls distributed (~2 s); Slurm only

    processes = slurm.get("processes")
    if processes is None:
        processes, _ = nprocesses_nthreads(slurm["cores"])
    return int(processes)


def render_job_script(config: Mapping[str, Any], scheduler_address: str = PLACEHOLDER_SCHEDULER) -> str:
    """The sbatch script dask-jobqueue submits for one worker job, as text.

    ``config`` is a cluster config mapping as in the YAML files (``{"jobqueue": {"slurm": {...}}}``).
    The script is dask-jobqueue's own (``SLURMJob.job_script``), so it is exactly what
    ``open_client("slurm")`` submits, except for the scheduler address and the worker name.
    Nothing is created on disk: ``log-directory`` only appears in the ``#SBATCH -o/-e`` lines.
    """
    from dask_jobqueue.slurm import SLURMJob  # deferred: pulls distributed (~2 s); Slurm only

    slurm = validate_slurm_config(config)["slurm"]
    log_directory = slurm.get("log-directory")
    # dask-jobqueue's Job creates log-directory on construction; render without it and add the two lines
    entries = dask_config_entries({**slurm, "log-directory": None})
    with dask.config.set(entries):
        job = SLURMJob(scheduler=scheduler_address, name="dask-worker-name")
        script = job.job_script()
        job_name = job.job_name
    if log_directory is not None:
        lines = script.splitlines()
        at = next(i for i, line in enumerate(lines) if line.startswith("#SBATCH")) + (1 if job_name else 0)
        stem = f"{log_directory}/{job_name or 'worker'}"
        lines[at:at] = [f"#SBATCH -e {stem}-%J.err", f"#SBATCH -o {stem}-%J.out"]
        script = "\n".join(lines) + ("\n" if script.endswith("\n") else "")
    return script
