"""End-to-end encoding of the lead's ``tiny_store_kept`` (real abTEM simulation, real zarr) on a real LocalCluster
and on the real single-node Slurm; resume after an interruption; the CLI; bad stores."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from cluster import open_client
from contract.store import StoreError
from kernels.context import context_vector, feature_names
from features.encode import encode_store, store_plan
from kernels.normalise import standardise_patches, standardised_contrast_features
from kernels.site_symmetry import central_intensity
from kernels.zernike import contrast_features

REPO = Path(__file__).resolve().parents[1]


def expected_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The 31 columns recomputed in this process from the pure functions, without the encoder.

    The Zernike columns use the unfused reference (standardise, then project). Returns (expected, the fused
    kernel's Zernike columns computed per shard as the encoder batches them).
    """
    g = zarr.open_group(str(path), mode="r")
    patches, case, env = g["patches"][:], g["case"][:], g["environment"][:]
    cases = g.attrs["cases"]
    by_id = {e["id"]: e for e in g.attrs["environments"]}
    ctx = np.stack([context_vector(cases[c]["metal"], cases[c]["chalcogen"], cases[c]["dopant"],
                                   cases[c]["detector"], cases[c]["beam_energy_kev"]) for c in case])
    subl = np.array([0 if by_id[e]["sublattice"] == "metal" else 1 for e in env])
    # the store's rule: per case, the mean centre of the intact columns (M on metal sites, X2 on chalcogen sites)
    # of the noiseless clean patches (rule 3)
    clean = g["clean"]
    c_case, c_label = clean["case"][:], clean["label"][:]
    c_subl = np.array([0 if by_id[e]["sublattice"] == "metal" else 1 for e in clean["environment"][:]])
    c_centre = central_intensity(clean["patches"][:])
    intact = c_label == np.where(c_subl == 0, 3, 0)
    metal_brighter = {c: c_centre[intact & (c_case == c) & (c_subl == 0)].mean()
                      >= c_centre[intact & (c_case == c) & (c_subl == 1)].mean() for c in np.unique(case)}
    brighter = np.array([0 if metal_brighter[c] else 1 for c in case])
    site = np.stack([subl == brighter, subl != brighter], axis=1).astype(np.float32)
    rps = g.attrs["rows_per_shard"]
    reference = contrast_features(standardise_patches(patches))
    fused = np.concatenate([standardised_contrast_features(patches[a:a + rps]) for a in range(0, len(patches), rps)])
    return np.concatenate([ctx, reference, site], axis=1).astype(np.float32), fused


def shard_bytes(path: Path) -> dict:
    root = path / "features"
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*"))
            if f.is_file() and f.name != "zarr.json"}


def run_cli(store: Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "features", "--store", str(store), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)


def check_encoded(store: Path) -> None:
    g = zarr.open_group(str(store), mode="r")
    feats = g["features"]
    assert feats.shape == (g["patches"].shape[0], 31) and feats.dtype == np.float32
    assert feats.shards == (g.attrs["rows_per_shard"], 31)  # sharded like patches
    assert feats.chunks[0] == g["patches"].chunks[0]
    assert list(feats.attrs["feature_names"]) == feature_names()
    assert g["features_done"][:].tolist() == [1] * store_plan(store).meta.n_shards
    expected, fused = expected_features(store)
    got = feats[:]
    np.testing.assert_array_equal(got[:, :23], expected[:, :23])  # context
    np.testing.assert_array_equal(got[:, 29:], expected[:, 29:])  # site symmetry
    np.testing.assert_allclose(got[:, 23:29], expected[:, 23:29], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got[:, 23:29], fused)  # the same kernel on the same shards: the same bits
    # within every case the two sublattices get complementary flags, and both flags occur
    by_id = {e["id"]: e["sublattice"] for e in g.attrs["environments"]}
    metal = np.array([by_id[e] == "metal" for e in g["environment"][:]])
    for c in np.unique(g["case"][:]):
        rows = g["case"][:] == c
        m = np.unique(got[rows & metal, 29:], axis=0)
        x = np.unique(got[rows & ~metal, 29:], axis=0)
        assert len(m) == 1 and len(x) == 1 and (m[0] + x[0] == 1).all()


@pytest.fixture
def store(tiny_store_kept, tmp_path) -> Path:
    out = tmp_path / "tiny.zarr"
    shutil.copytree(tiny_store_kept, out)
    return out


def test_cli_encodes_tiny_store_end_to_end(store):
    proc = run_cli(store, "--cluster", "local")
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_shards = store_plan(store).meta.n_shards
    assert f"features: {n_shards}/{n_shards} shards" in proc.stderr  # progress from cluster.track
    check_encoded(store)
    # a rerun on a finished store encodes nothing and leaves the bytes alone
    before = shard_bytes(store)
    proc = run_cli(store, "--cluster", "local")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"0 shard(s) / 0 rows encoded, {n_shards} already done" in proc.stderr
    assert shard_bytes(store) == before


def test_interrupted_then_resumed_gives_identical_features(tiny_store_kept, tmp_path):
    reference, broken = tmp_path / "ref.zarr", tmp_path / "broken.zarr"
    shutil.copytree(tiny_store_kept, reference)
    shutil.copytree(tiny_store_kept, broken)
    with open_client("local", n_workers=2) as client:
        encode_store(reference, client)
    # a corrupt pixel (away from the centre, so the brightness pass succeeds) makes one shard's task fail
    # while the others finish: a real interruption of the run
    g = zarr.open_group(str(broken), mode="r+")
    bad_shard = 3
    bad_row = bad_shard * g.attrs["rows_per_shard"] + 3
    good = g["patches"][bad_row]
    corrupt = good.copy()
    corrupt[0, 0] = np.nan
    g["patches"][bad_row] = corrupt
    with open_client("local", n_workers=2) as client:
        with pytest.raises(Exception, match=f"'patches' shard {bad_shard} .*NaN.*first rows \\[{bad_row}\\]"):
            encode_store(broken, client)
    done = zarr.open_group(str(broken), mode="r")["features_done"][:]
    assert done[bad_shard] == 0 and done.sum() < len(done)
    g["patches"][bad_row] = good  # repaired; resume
    with open_client("local", n_workers=2) as client:
        summary = encode_store(broken, client)
    assert summary["skipped_shards"] == int(done.sum()) > 0
    assert summary["encoded_shards"] == len(done) - int(done.sum())
    assert shard_bytes(broken) == shard_bytes(reference)
    np.testing.assert_array_equal(zarr.open_group(str(broken))["features"][:],
                                  zarr.open_group(str(reference))["features"][:])


@pytest.mark.slurm
def test_encoding_on_slurm_matches_local(store, tmp_path, local_slurm):
    local = tmp_path / "local.zarr"
    shutil.copytree(store, local)
    proc = run_cli(store, "--cluster", "slurm", "--cluster-config", str(local_slurm.cluster_config),
                   env=local_slurm.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_encoded(store)
    with open_client("local", n_workers=1) as client:
        encode_store(local, client)
    assert shard_bytes(store) == shard_bytes(local)


def test_bad_store_fails_before_any_job(store, tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        store_plan(tmp_path / "missing.zarr")
    g = zarr.open_group(str(store), mode="r+")
    cases = g.attrs["cases"]
    g.attrs["cases"] = [dict(cases[0], beam_energy_kev=120)] + cases[1:]
    with pytest.raises(ValueError, match="supported values"):
        store_plan(store)
    g.attrs["cases"] = [dict(cases[0], detector="ABF")] + cases[1:]
    with pytest.raises(ValueError, match="supported detectors: HAADF, MAADF"):
        store_plan(store)
    g.attrs["cases"] = cases
    envs = g.attrs["environments"]
    g.attrs["environments"] = [dict(envs[0], sublattice="interstitial")] + envs[1:]
    with pytest.raises(ValueError, match=r"environments\[0\]\['sublattice'\]"):
        store_plan(store)
    g.attrs["environments"] = envs
    store_plan(store)  # repaired
    g["task_done"][1] = 0  # an unfinished simulation is refused
    with pytest.raises(ValueError, match=f"simulation incomplete, 1 of {g['task_done'].shape[0]} tasks not done"):
        store_plan(store)
    proc = run_cli(store, "--cluster", "local")  # the CLI says so before starting a cluster
    assert proc.returncode != 0 and "simulation incomplete" in proc.stderr
