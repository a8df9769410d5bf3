"""Splits, shards, store reading and the device-resident batches, on a real zarr store on disk."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from contract.store import StoreError
from training.data import DeviceBatches, FeatureDataModule
from training.splits import (
    derive_seed,
    feature_columns,
    host_split,
    random_split,
    shard,
)
from training.store import read_index, read_rows
from training.synthetic import FEATURE_NAMES, write_synthetic_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("train_data") / "s.zarr", n_rows=3000, rows_per_shard=250)


def test_random_split_is_fixed_disjoint_and_80_20():
    train, test = random_split(1000, 0.2, seed=3)
    train2, test2 = random_split(1000, 0.2, seed=3)
    np.testing.assert_array_equal(train, train2)
    np.testing.assert_array_equal(test, test2)
    assert len(test) == 200 and len(train) == 800
    assert np.intersect1d(train, test).size == 0
    np.testing.assert_array_equal(np.union1d(train, test), np.arange(1000))
    assert not np.array_equal(random_split(1000, 0.2, seed=4)[1], test)


def test_random_split_bad_input():
    with pytest.raises(ValueError, match="test_fraction"):
        random_split(10, 1.0, 0)
    with pytest.raises(ValueError, match="n_rows"):
        random_split(1, 0.2, 0)


def test_host_split_holds_out_whole_hosts():
    hosts = np.array(["MoS2", "WSe2", "NbSe2", "WSe2", "MoS2"])
    train, test = host_split(hosts, ["WSe2"])
    np.testing.assert_array_equal(test, [1, 3])
    np.testing.assert_array_equal(train, [0, 2, 4])
    with pytest.raises(ValueError, match=r"TaS2.*hosts in this store: \['MoS2', 'NbSe2', 'WSe2'\]"):
        host_split(hosts, ["TaS2"])
    with pytest.raises(ValueError, match="nothing left"):
        host_split(hosts, ["MoS2", "WSe2", "NbSe2"])
    with pytest.raises(ValueError, match="needs test_hosts"):
        host_split(hosts, [])


def test_shards_are_disjoint_and_equal_length():
    idx = np.arange(10, 113)
    shards = [shard(idx, r, 4) for r in range(4)]
    assert {len(s) for s in shards} == {103 // 4}
    assert len(np.unique(np.concatenate(shards))) == 4 * (103 // 4)
    with pytest.raises(ValueError, match="rank"):
        shard(idx, 4, 4)


def test_feature_sets_follow_the_contract_layout():
    cols = feature_columns("zernike")
    assert cols == list(range(23, 29)) and all(FEATURE_NAMES[c].startswith("zernike_") for c in cols)
    assert feature_columns("all") == list(range(31))
    with pytest.raises(ValueError, match="feature_set"):
        feature_columns("context")


def test_store_of_another_feature_layout_is_refused(store, tmp_path):
    import shutil

    other = tmp_path / "other.zarr"
    shutil.copytree(store, other)
    g = zarr.open_group(str(other), mode="r+")
    g["features"].attrs["feature_names"] = [f"column_{i}" for i in range(31)]
    with pytest.raises(StoreError, match="feature layout differs"):
        read_index(other)


def test_derive_seed_is_deterministic_and_distinct():
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    assert len({derive_seed(0, r, e) for r in range(4) for e in range(4)}) == 16


def test_read_rows_matches_numpy_across_blocks(store):
    full = np.asarray(zarr.open_group(store, mode="r")["features"][:])
    rows = np.sort(np.random.default_rng(0).choice(3000, 700, replace=False))
    cols = [23, 24, 30]
    np.testing.assert_array_equal(read_rows(store, rows, cols, block_rows=256), full[rows][:, cols])
    with pytest.raises(ValueError, match="sorted"):
        read_rows(store, rows[::-1], cols)


def test_read_index_hosts_and_detectors(store):
    index = read_index(store)
    group = zarr.open_group(store, mode="r")
    cases = group.attrs["cases"]
    case = group["case"][:]
    assert index.n_rows == 3000
    # the per-row strings (~48 bytes a row) are built on first use, not by every read_index
    assert not {"row_hosts", "row_detectors", "row_dopants"} & set(vars(index))
    assert list(index.row_hosts[:20]) == [cases[k]["host"] for k in case[:20]]
    assert set(index.row_detectors) == {"HAADF", "MAADF"}
    assert index.row_dopants.tolist() == [cases[k]["dopant"] for k in case]
    assert index.row_hosts is index.row_hosts  # built once


def test_store_without_features_is_a_clear_error(tmp_path):
    g = zarr.open_group(str(tmp_path / "nofeat.zarr"), mode="w")
    g.create_array("label", shape=(4,), dtype="uint8")
    g.create_array("case", shape=(4,), dtype="int32")
    with pytest.raises(ValueError, match="python -m features"):
        read_index(tmp_path / "nofeat.zarr")
    with pytest.raises(StoreError, match="does not exist"):
        read_index(tmp_path / "missing.zarr")


def test_datamodule_feature_sets_and_split(store):
    dm = FeatureDataModule(store=store, batch_size=100, feature_set="zernike", seed=0)
    dm.setup("fit")
    full = np.asarray(zarr.open_group(store, mode="r")["features"][:])
    assert dm.n_features == 6 and dm.train_x.shape == (2400, 6) and dm.test_x.shape == (600, 6)
    np.testing.assert_array_equal(dm.train_x.numpy(), full[dm.train_rows][:, 23:29])
    assert dm.train_y.dtype == torch.int64
    dm_host = FeatureDataModule(store=store, split="by_host", test_hosts=["WSe2"])
    dm_host.setup("fit")
    index = read_index(store)
    assert set(index.row_hosts[dm_host.test_rows]) == {"WSe2"}
    assert "WSe2" not in set(index.row_hosts[dm_host.train_rows])
    with pytest.raises(ValueError, match="test_hosts"):
        FeatureDataModule(store=store, split="by_host")
    with pytest.raises(ValueError, match="data.feature_set"):
        FeatureDataModule(store=store, feature_set="pixels")


def test_device_batches_permute_each_epoch_and_cover_all_rows():
    x = torch.arange(1000, dtype=torch.float32)[:, None].repeat(1, 3)
    y = torch.arange(1000)
    batches = DeviceBatches(x, y, batch_size=128, shuffle=True, seed=5)
    assert len(batches) == 8
    orders = []
    for epoch in range(2):
        batches.epoch = epoch
        seen = torch.cat([yb for _, yb in batches])
        assert torch.equal(torch.sort(seen).values, y)
        orders.append(seen)
    assert not torch.equal(orders[0], orders[1])
    batches.epoch = 1
    assert torch.equal(torch.cat([yb for _, yb in batches]), orders[1])  # same (seed, epoch), same order
    for xb, yb in batches:
        assert torch.equal(xb[:, 0].long(), yb)  # features stay with their labels


def test_device_batches_are_slices_of_the_epoch_permutation():
    """Each batch gathers rows by a slice of the epoch's permutation: the batches (and so every run and checkpoint)
    are those of slicing the permuted shard, which DeviceBatches no longer copies whole."""
    from training.splits import derive_seed

    x, y = torch.randn(1000, 5), torch.arange(1000)
    batches = DeviceBatches(x, y, batch_size=96, shuffle=True, seed=7, rank=1)
    batches.epoch = 2
    g = torch.Generator().manual_seed(derive_seed(7, 1, 2))
    perm = torch.randperm(1000, generator=g)
    got = list(batches)
    assert len(got) == 11 and len(got[-1][1]) == 1000 - 10 * 96
    for b, (xb, yb) in enumerate(got):
        assert torch.equal(xb, x[perm][b * 96:(b + 1) * 96]) and torch.equal(yb, y[perm][b * 96:(b + 1) * 96])
    plain = list(DeviceBatches(x, y, batch_size=96, shuffle=False))  # unshuffled: views of the shard
    assert plain[1][0].data_ptr() == x[96:].data_ptr()


def test_device_batches_resume_mid_epoch():
    x, y = torch.randn(500, 4), torch.arange(500)
    a = DeviceBatches(x, y, batch_size=64, shuffle=True, seed=1)
    a.epoch = 3
    it = iter(a)
    first = [next(it)[1] for _ in range(3)]
    state = a.state_dict()
    assert state == {"epoch": 3, "position": 3}
    rest = [yb for _, yb in it]
    b = DeviceBatches(x, y, batch_size=64, shuffle=True, seed=1)
    b.epoch = 3
    b.load_state_dict(state)
    resumed = [yb for _, yb in b]
    assert len(resumed) == len(rest) == len(a) - 3
    for u, v in zip(resumed, rest):
        assert torch.equal(u, v)
    assert len([1 for _ in b]) == len(b)  # the resume state is used once
    assert len(torch.cat(first + resumed).unique()) == 500
