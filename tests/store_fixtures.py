"""Session fixtures that simulate small stores once with real abTEM on a real LocalCluster."""
from __future__ import annotations

from pathlib import Path

import pytest

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dataset" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_config() -> Path:
    return TINY_CONFIG


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    """The tiny dataset (2 combos x 60 keV x 3 environments x 2 detectors x 8 patches, 17 px) simulated on a
    2-worker LocalCluster. Tests must not modify it: copy it first."""
    from simulate.run import simulate

    out = tmp_path_factory.mktemp("tiny") / "tiny.zarr"
    simulate(TINY_CONFIG, out, cluster="local", n_workers=2)
    return out


@pytest.fixture(scope="session")
def tiny_store_kept(tmp_path_factory) -> Path:
    """The tiny dataset simulated with ``keep_patches`` (the noisy ``patches`` array on disk, as every store made
    before layout 2). Tests must not modify it: copy it first."""
    from simulate.run import simulate

    out = tmp_path_factory.mktemp("tiny-kept") / "tiny.zarr"
    simulate(TINY_CONFIG, out, cluster="local", n_workers=2, keep_patches=True)
    return out
