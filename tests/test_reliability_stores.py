"""Issue 21, finding 2: training checks what ``verify`` checks before the first step, and ``verify`` sees shards
moved to the wrong rows.

- A missing ``label`` shard (reads as the fill value 0 = X2), swapped ``label`` shards and an unfinished
  simulation are refused by ``training fit`` (exit 3 / 2, one line) before anything is trained: the rows' label,
  case and environment are compared with the plan of the store's own config (``training.store``).
- Swapped ``patches`` shards (valid chunks in the wrong rows) fail ``simulate verify`` and swapped ``features``
  shards with identical context and site-symmetry columns fail ``features verify``: each shard's digest, written
  with it, hashes its first row index with its bytes (``contract.store.shard_digest``).

The store is written by the simulation's own writers (``simulate.run.prepare_store``, ``simulate.store.write_shard``,
``write_clean``, ``mark_done``) for the tiny config's plan, with noise patches instead of abTEM images (seconds,
not minutes: only the layout matters here), encoded by the real feature stage on an in-process Dask client, then
copied and damaged on disk as a botched copy would."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch.distributed
import zarr

from distributed import Client

from contract import store as schema
from contract.errors import EXIT_BAD_INPUT, EXIT_CORRUPT_DATA, CorruptDataError
from contract.features import CONTEXT_COLUMNS, SITE_SYMMETRY_COLUMNS
from contract.store import StoreError
from features.encode import encode_store
from features.verify import verify_features
from simulate import config as config_mod
from simulate import store as sim_store
from simulate.patches import max_scan_px, pad_scans, task_window
from simulate.run import prepare_store
from simulate.verify import expected_clean_rows, expected_rows, verify_store
from tests.store_fixtures import TINY_CONFIG
from training.__main__ import main as training_main
from training.data import FeatureDataModule
from training.store import check_rows_as_planned, read_index, read_rows

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("one_torch_thread")]


def write_plan_store(path: Path, config: Path, seed: int = 0) -> Path:
    """A complete store of ``config``'s plan through the simulation's writers, with Gamma-noise patches (kept)
    and uniform random clean scans."""
    cfg = config_mod.load(config)
    plan, _, _ = prepare_store(cfg, path, False, keep_patches=True)
    side = max_scan_px(plan, cfg)
    rng = np.random.default_rng(seed)
    p = plan.patch_size_px
    for task in plan.tasks:
        for position in range(len(plan.environments_of(task))):
            rows = {k: np.asarray(v, schema.ROW_ARRAYS[k]) for k, v in expected_rows(plan, task.index, position).items()}
            rows[schema.PATCHES] = rng.gamma(2.0, 50.0, (plan.rows_per_shard, p, p)).astype(schema.PATCH_DTYPE)
            sim_store.write_shard(path, plan.shard_start(task, position), rows)
        clean = {k: np.asarray(v, schema.ROW_ARRAYS[k]) for k, v in expected_clean_rows(plan, task.index).items()}
        clean[schema.PATCHES] = rng.random((plan.clean_rows_per_task, p, p)).astype(schema.PATCH_DTYPE)
        n_px = task_window(task, cfg).n_px
        clean[schema.SCANS] = pad_scans(list(rng.random((plan.clean_rows_per_task, n_px, n_px), dtype=np.float32)),
                                        side)
        sim_store.write_clean(path, task.index * plan.clean_rows_per_task, clean)
        sim_store.mark_done(path, task.index)
    return path


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> Path:
    enc = write_plan_store(tmp_path_factory.mktemp("rel-stores") / "enc.zarr", TINY_CONFIG)
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        encode_store(enc, client)
    return enc


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy.zarr"
    shutil.copytree(src, dst)
    return dst


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_name(a.name + ".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def test_new_stores_carry_shard_digests(encoded):
    g = zarr.open_group(str(encoded), mode="r")
    for name in schema.DIGESTED_ARRAYS:
        digests = g[schema.digest_name(name)][:]
        step = schema.rows_per_stored_block(g[name])
        assert (digests != 0).all() and len(digests) == g[name].shape[0] // step
        assert int(digests[1]) == schema.shard_digest(step, g[name][step:2 * step])
    assert verify_store(encoded)[0].ok and verify_features(encoded)[0].ok


def test_swapped_patches_shards_fail_simulate_verify(encoded, tmp_path):
    store = _copy(encoded, tmp_path)
    _swap(store / "patches/c/1/0/0", store / "patches/c/2/0/0")  # both finite, both decode
    report = verify_store(store)[0]
    bad = {f.shard: f.problem for f in report.findings}
    assert set(bad) == {1, 2} and all("digest" in p for p in bad.values()), report.lines()


def test_swapped_features_shards_fail_features_verify(encoded, tmp_path):
    """Shards 1 and 2 are the M- and D-centre environments of one task: same context and site-symmetry columns,
    so only their digests can tell them apart."""
    store = _copy(encoded, tmp_path)
    g = zarr.open_group(str(store), mode="r")
    step = schema.rows_per_stored_block(g[schema.FEATURES])
    f1, f2 = g[schema.FEATURES][step:2 * step], g[schema.FEATURES][2 * step:3 * step]
    for cols in (CONTEXT_COLUMNS, SITE_SYMMETRY_COLUMNS):
        assert np.array_equal(f1[:, cols], f2[:, cols])
    assert not np.array_equal(f1, f2)
    _swap(store / "features/c/1/0", store / "features/c/2/0")
    report = verify_features(store)[0]
    bad = {f.shard: f.problem for f in report.findings}
    assert set(bad) == {1, 2} and all("digest" in p for p in bad.values()), report.lines()


def _listening_ports() -> set[int]:
    return {c.laddr.port for c in psutil.Process().net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


PLANNED = "holds values other than the plan"
DAMAGES = {
    "missing label shard": (lambda s: (s / "label/c/2").unlink(), PLANNED),
    "swapped label shards": (lambda s: _swap(s / "label/c/1", s / "label/c/2"), PLANNED),  # shard 0 (X2 = 0) is not stored
    "swapped environment shards": (lambda s: _swap(s / "environment/c/1", s / "environment/c/5"), PLANNED),
    "missing case shard": (lambda s: (s / "case/c/4").unlink(), PLANNED),
    "swapped features shards": (lambda s: _swap(s / "features/c/1/0", s / "features/c/2/0"), "digest"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_training_refuses_rows_other_than_planned(damage, encoded, tmp_path, monkeypatch, capsys):
    store = _copy(encoded, tmp_path)
    damage_fn, words = DAMAGES[damage]
    damage_fn(store)
    with pytest.raises(CorruptDataError, match=words):
        dm = FeatureDataModule(store=str(store), batch_size=16)
        index, train, test = dm.split_rows()
        read_rows(store, np.sort(np.r_[train, test]), dm.columns())
    monkeypatch.chdir(REPO)
    listening = _listening_ports()
    rc = training_main(["fit", "--config", "configs/train/base.yaml", "--config", "configs/train/mlp-simple.yaml",
                        "--data.store", str(store), "--run_dir", str(tmp_path / "run"), "--trainer.max_epochs", "1",
                        "--trainer.accelerator", "cpu", "--data.batch_size", "16"])
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert rc == EXIT_CORRUPT_DATA and len(errors) == 1 and " verify " in errors[0], errors
    assert not (tmp_path / "run" / "checkpoints").exists()
    # the refusal came after Lightning's DDP setup: the command released its rendezvous port and environment
    assert "MASTER_PORT" not in os.environ and not torch.distributed.is_initialized()
    assert _listening_ports() <= listening, "the rendezvous server is still listening"


def test_training_refuses_an_unfinished_simulation(encoded, tmp_path):
    store = _copy(encoded, tmp_path)
    zarr.open_group(str(store), mode="r+")[schema.TASK_DONE][1] = 0
    with pytest.raises(StoreError, match="not marked done") as info:
        read_index(store)
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_row_check_cost_is_printed_and_small(encoded):
    index = read_index(encoded)
    out = io.StringIO()
    took = check_rows_as_planned(zarr.open_group(str(encoded), mode="r"), index.meta, index.label, index.case,
                                 stream=out)
    assert "s per million rows" in out.getvalue() and took < 5, out.getvalue()
