"""bench/paper_scale_train.py: the tiled store is a store training accepts, and one small 2-process DDP epoch
through the training CLI reports what it trained against the bare step."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import zarr

from bench.paper_scale_train import COLUMNS, run, tile_feature_store
from contract import store as schema
from training.data import FeatureDataModule
from training.synthetic import write_synthetic_store


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("pst") / "s.zarr", n_rows=3000, rows_per_shard=500)


def test_tiled_store_repeats_the_rows_and_passes_the_training_checks(small_store, tmp_path):
    out = tile_feature_store(small_store, tmp_path / "t.zarr", 7100, rows_per_shard=1000, chunk_rows=250)
    src, tiled = zarr.open_group(small_store, mode="r"), zarr.open_group(out, mode="r")
    idx = np.arange(7100) % 3000
    for name in (schema.FEATURES, schema.LABEL, schema.CASE):
        np.testing.assert_array_equal(tiled[name][:], src[name][:][idx], err_msg=name)
    assert tiled[schema.FEATURES].shards == (1000, 31) and tiled.attrs["rows_per_shard"] == 1000
    assert tiled[schema.FEATURES_DONE][:].tolist() == [1] * 8
    dm = FeatureDataModule(out, batch_size=64)
    dm.setup()  # reads the index, checks the markers, the labels and every shard's digest at its new position
    assert dm.train_x.shape == (round(0.8 * 7100), 31)
    # a shard moved to another position no longer matches its digest
    digests = zarr.open_group(out, mode="r")[schema.digest_name(schema.FEATURES)]
    assert schema.digest_problem(digests[1], 1000, tiled[schema.FEATURES][1000:2000]) is None
    assert schema.digest_problem(digests[0], 1000, tiled[schema.FEATURES][1000:2000]) is not None
    prefix = tile_feature_store(small_store, tmp_path / "p.zarr", 1234, rows_per_shard=500)
    np.testing.assert_array_equal(zarr.open_group(prefix, mode="r")[schema.FEATURES][:],
                                  src[schema.FEATURES][:1234])


def test_two_process_epoch_reports_rows_rate_and_memory(small_store, tmp_path):
    r = run(small_store, processes=2, max_rows=2500, batch_size=512, bare_min_seconds=0.2, bare_min_steps=2,
            workdir=tmp_path / "work")
    assert r["rows"] == 2500 and r["store_rows"] == 3000  # trained on a copy of the first 2 500 rows
    assert r["backend"] == "gloo" and r["processes"] == 2
    assert r["batch_global"] == 512 and r["batch_per_rank"] == 256
    assert r["train_rows_per_rank"] == [1000, 1000]  # 80 % of 2 500, shared by 2 ranks
    assert r["rows_trained"] == sum(r["train_rows_per_rank"]) == sum(r["rows_trained_per_rank"])
    assert r["steps"] == math.ceil(1000 / 256) and r["steps_per_rank"] == [4, 4]
    assert math.isfinite(r["ratio"]) and r["ratio"] > 0
    assert r["samples_per_s"] > 0 and r["bare_samples_per_s"] > 0
    assert len(r["peak_rss_gib"]) == 2 and all(0.1 < m < 24 for m in r["peak_rss_gib"])
    # the sum sampled every 0.2 s cannot exceed the ranks' own peaks added (it may miss a short spike of one)
    assert 0 < r["peak_rss_sum_gib"] <= sum(r["peak_rss_gib"]) * 1.05
    assert r["epoch_wall_s"] >= r["train_s"] > 0 and r["wall_s"] > r["process_wall_s"] * 0.9
    assert {"torch", "pytorch-lightning"} <= set(r["versions"]) and r["versions"]["torch"]
    assert set(COLUMNS) <= set(r)
    json.dumps(r)  # plain values only
    assert (tmp_path / "work" / "run" / "checkpoints" / "last.ckpt").is_file()  # the CLI's own end-of-epoch save


def test_global_batch_must_split_evenly(small_store):
    with pytest.raises(ValueError, match="not divisible by 2"):
        run(small_store, processes=2, batch_size=511)
