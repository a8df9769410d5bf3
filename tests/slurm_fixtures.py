"""Session fixture ``local_slurm``: a real single-node Slurm on localhost (munged, slurmctld, slurmd).

Loaded through ``pytest_plugins`` in tests/conftest.py. The fixture installs Debian's packages when
they are missing (slurm/install-debian-slurm.sh, needs root) and starts the daemons
(slurm/start-local-slurm.sh, idempotent, < 1 s when already up). If either fails the requesting test
FAILS with the script's output; it is never skipped.

Slurm is left running at session end: the next start is a no-op, and other sessions (or a developer
trying things) may be using it. ``make slurm-down`` stops it.

Usage::

    @pytest.mark.slurm
    def test_something(local_slurm, monkeypatch):
        monkeypatch.setenv("PATH", local_slurm.env["PATH"])      # submitit then sees the sacct wrapper
        with open_client("slurm", config_path=local_slurm.cluster_config, n_workers=2) as client: ...
        subprocess.run([...], env=local_slurm.env)
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO_ROOT / "slurm"
REQUIRED_PROGRAMS = ("slurmctld", "slurmd", "sinfo", "munged")


@dataclass(frozen=True)
class LocalSlurm:
    """Handle on the running single-node Slurm."""

    partition: str  # partition to submit to ("debug")
    cluster_config: Path  # configs/cluster/slurm-localhost.yaml, for open_client("slurm", config_path=...)
    env: dict = field(repr=False)  # os.environ with bin_dir first on PATH (sacct -> sacct -c, for submitit)
    bin_dir: Path  # slurm/bin (the sacct wrapper)
    node: str  # the node's name (hostname -s)


def _missing_programs() -> list[str]:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [prog for prog in REQUIRED_PROGRAMS if shutil.which(prog, path=path) is None]


def _run_script(name: str, timeout: float) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(
            ["bash", str(SLURM_DIR / name)], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"slurm/{name} did not finish within {timeout:.0f} s:\n{exc.stdout}\n{exc.stderr}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(
            f"slurm/{name} failed (exit {proc.returncode}); real-Slurm tests cannot run:\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    return proc


def start_local_slurm() -> LocalSlurm:
    """Install (if needed) and start the local Slurm; pytest.fail with the scripts' output on failure."""
    if _missing_programs():
        _run_script("install-debian-slurm.sh", timeout=600)
        still = _missing_programs()
        if still:
            pytest.fail(f"slurm/install-debian-slurm.sh ran but {still} are still missing", pytrace=False)
    _run_script("start-local-slurm.sh", timeout=120)
    bin_dir = SLURM_DIR / "bin"
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}:{env.get('PATH', '')}"
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    cluster_config = REPO_ROOT / "configs" / "cluster" / "slurm-localhost.yaml"
    partition = yaml.safe_load(cluster_config.read_text())["jobqueue"]["slurm"]["queue"]
    return LocalSlurm(
        partition=partition,
        cluster_config=cluster_config,
        env=env,
        bin_dir=bin_dir,
        node=node,
    )


@pytest.fixture(scope="session")
def local_slurm() -> LocalSlurm:
    """The running single-node Slurm (started once per session, left running afterwards)."""
    return start_local_slurm()
