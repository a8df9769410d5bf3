"""Shared pytest fixtures and markers.

Markers (see pyproject.toml): ``slurm`` tests use the real single-node Slurm started from ``slurm/``;
``gpu`` tests are skipped unless CuPy sees a CUDA device.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the stages are importable from the checkout
    sys.path.insert(0, str(REPO_ROOT))


def _cuda_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU with CuPy")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT

pytest_plugins = ["tests.slurm_fixtures", "tests.store_fixtures", "tests.inference_fixtures"]


@pytest.fixture
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread avoids waiting on busy cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def no_distributed_state_left():
    """A test that ran a command in-process must not leave torch.distributed initialised or MASTER_PORT exported:
    the rendezvous server keeps listening there, and every later DDP run or Slurm job that inherits this
    environment fails with EADDRINUSE (the CI failure of 2026-12-07). ``contract.cli.run_command`` cleans up."""
    before = os.environ.get("MASTER_PORT")
    yield
    dist = sys.modules.get("torch.distributed")
    initialised = dist is not None and dist.is_available() and dist.is_initialized()
    leaked = os.environ.get("MASTER_PORT") != before
    if initialised:
        dist.destroy_process_group()
    if leaked and before is None:
        del os.environ["MASTER_PORT"]
    elif leaked:
        os.environ["MASTER_PORT"] = before
    assert not (initialised or leaked), "the test left torch.distributed initialised or MASTER_PORT exported"
