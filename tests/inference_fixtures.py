"""Session fixtures of the inference tests: real Lightning checkpoints trained on a synthetic feature store
(seconds), the real experimental micrograph shipped by temul-toolkit, and a rendered honeycomb specimen.

The checkpoints are real ``python -m training fit`` runs (2 epochs) on ``training.synthetic`` features: their
classes mean nothing for images, but every inference path (feature sets, metadata, unseen-context checks)
runs through the real files. Tests that judge classes use the abTEM-trained model of test_inference_fullfield.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REAL_DM3 = "example_data/experimental/example_Se_implanted_MoS2.dm3"
"""A real 1024 x 1024 HAADF frame of Se-implanted monolayer MoS2 (60 kV, Gatan DigiScan, 0.127 Å/px), shipped as
example data by temul-toolkit (PyPI, GPL-3.0; installed with --no-deps by the Makefile: data only, none of its
code is imported)."""


def real_micrograph_path() -> Path:
    """Path of the real MoS2 .dm3 in the installed temul-toolkit (``AssertionError`` with the install line)."""
    spec = importlib.util.find_spec("temul")  # locates the package without importing it
    assert spec is not None and spec.submodule_search_locations, (
        "the real-micrograph tests need temul-toolkit's example data: "
        "`pip install --no-deps temul-toolkit==0.1.9` (the Makefile's venv target does this)")
    path = Path(list(spec.submodule_search_locations)[0]) / REAL_DM3
    assert path.is_file(), f"{path} is missing from the installed temul-toolkit"
    return path


@pytest.fixture(scope="session")
def real_dm3() -> Path:
    return real_micrograph_path()


def _fit(store: Path, run_dir: Path, model: str, repo_root: Path) -> Path:
    subprocess.run([sys.executable, "-m", "training", "fit", "--config", "configs/train/base.yaml",
                    "--config", f"configs/train/{model}.yaml", "--data.store", str(store),
                    "--trainer.max_epochs", "2", "--data.batch_size", "256",
                    "--run_dir", str(run_dir)], check=True, cwd=repo_root, capture_output=True)
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def synthetic_checkpoints(tmp_path_factory, repo_root) -> dict:
    """``{"mlp-simple": ckpt, "mlp-nocontext": ckpt}`` trained 2 epochs on a 2 000-row synthetic feature store
    (cases: MoS2, WSe2, NbSe2 with V at 60/80 keV, HAADF and MAADF)."""
    from training.synthetic import write_synthetic_store

    work = tmp_path_factory.mktemp("synthetic-models")
    store = Path(write_synthetic_store(work / "synthetic.zarr", n_rows=2000))
    return {m: _fit(store, work / m, m, repo_root) for m in ("mlp-simple", "mlp-nocontext")}


def render_specimen(size_angstrom: float, pixel_angstrom: float, a_angstrom: float = 3.16, angle_deg: float = 17.0,
                    metal: float = 1.0, chalcogen: float = 0.45, sigma_angstrom: float = 0.35,
                    empty_fraction: float = 0.0, seed: int = 0):
    """A clean specimen image of a honeycomb of Gaussian columns (not physics: for the geometry tests) on a
    square grid of ``pixel_angstrom``, and its columns: (image, y Å (N,), x Å (N,), sublattice (N,) 0 metal /
    1 chalcogen, empty (N,) bool). ``empty_fraction`` of the chalcogen columns are left dark."""
    rng = np.random.default_rng(seed)
    n = int(round(size_angstrom / pixel_angstrom))
    t = np.radians(angle_deg)
    basis = a_angstrom * np.array([[np.sin(t), np.sin(t + np.pi / 3)], [np.cos(t), np.cos(t + np.pi / 3)]])
    m = int(size_angstrom * 1.5 / a_angstrom) + 2
    i, j = np.meshgrid(np.arange(-m, m), np.arange(-m, m), indexing="ij")
    ij = np.c_[i.ravel(), j.ravel()].astype(float)
    centre = np.full(2, size_angstrom / 2) + [0.13, -0.21]
    pos = np.concatenate([centre + ij @ basis.T, centre + (ij + 1 / 3) @ basis.T])
    sub = np.r_[np.zeros(len(ij), int), np.ones(len(ij), int)]
    keep = (pos > -1).all(axis=1) & (pos < size_angstrom + 1).all(axis=1)
    pos, sub = pos[keep], sub[keep]
    empty = (sub == 1) & (rng.random(len(sub)) < empty_fraction)
    weight = np.where(sub == 0, metal, chalcogen) * ~empty
    img = np.zeros((n, n))
    r0 = np.floor(pos / pixel_angstrom).astype(int)
    half = int(np.ceil(4 * sigma_angstrom / pixel_angstrom))
    oy, ox = np.mgrid[-half:half + 1, -half:half + 1]
    for (py, px), (ry, rx), w in zip(pos, r0, weight):
        if not w:
            continue
        yy, xx = ry + oy, rx + ox
        ok = (yy >= 0) & (yy < n) & (xx >= 0) & (xx < n)
        g = w * np.exp(-((yy * pixel_angstrom - py) ** 2 + (xx * pixel_angstrom - px) ** 2) / (2 * sigma_angstrom**2))
        np.add.at(img, (yy[ok], xx[ok]), g[ok])
    return img + 0.02, pos[:, 0], pos[:, 1], sub, empty
