"""The zarr item stream: shard by shard, every row once per epoch, seeded orders, equal batches per DDP rank,
one streaming pass for the statistics, transforms."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from contract.errors import InputError
from rvae.data import ItemTransform, ShardStream, ZarrItemsDataModule, dataset_statistics, open_items
from rvae.store import write_items

N, P, SHARD = 2000, 21, 50  # 40 shards


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    items = rng.poisson(5.0, (N, P, P)).astype(np.float32)
    items[:, 0, 0] = np.arange(N)  # the row number, readable back through the transform
    path = tmp_path_factory.mktemp("items") / "items.zarr"
    write_items(path, items, SHARD)
    return str(path), items


def rows_of(stream, epoch_batches=None):
    return torch.cat([rows for _, rows in stream]).numpy()


def test_stream_holds_one_shard_and_visits_every_row_once(store):
    path, items = store
    stream = ShardStream(path, "patches", ItemTransform(), batch_size=16, shuffle=True, seed=3,
                         equal_batches=False)
    tracemalloc.start()
    seen = []
    for x, rows in stream:
        assert x.shape[1:] == (P, P)
        torch.testing.assert_close(x[:, 0, 0], rows.float())  # each item travels with its row index
        seen.append(rows.numpy())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    seen = np.concatenate(seen)
    assert sorted(seen.tolist()) == list(range(N))
    assert stream.peak_rows_held == SHARD
    shard_bytes = SHARD * P * P * 8  # float64 while transforming
    assert peak < 5 * shard_bytes < items.nbytes / 2  # a few buffers of one shard, never the store (40 shards)


def test_epoch_orders_are_seeded(store):
    path, _ = store
    epoch = {"e": 0}
    make = lambda seed: ShardStream(path, "patches", ItemTransform(), 32, shuffle=True, seed=seed,  # noqa: E731
                                    epoch_source=lambda: epoch["e"], equal_batches=False)
    a0, b0 = rows_of(make(1)), rows_of(make(1))
    epoch["e"] = 1
    a1 = rows_of(make(1))
    assert np.array_equal(a0, b0) and not np.array_equal(a0, a1)
    assert not np.array_equal(a0, rows_of(make(2)))
    assert np.array_equal(rows_of(ShardStream(path, "patches", ItemTransform(), 32, shuffle=False)), np.arange(N))


def test_ddp_ranks_get_disjoint_shards_and_equal_batch_counts(store):
    path, _ = store
    streams = [ShardStream(path, "patches", ItemTransform(), 64, shuffle=True, seed=0, rank=r, world_size=3)
               for r in range(3)]
    counts = [sum(1 for _ in s) for s in streams]
    assert len(set(counts)) == 1 and counts[0] == len(streams[0])
    rows = [set(rows_of(s).tolist()) for s in streams]
    assert not (rows[0] & rows[1]) and not (rows[1] & rows[2]) and not (rows[0] & rows[2])


def test_statistics_are_one_streaming_pass_over_the_whole_array(store):
    path, items = store
    for sqrt in (False, True):
        x = np.sqrt(items.astype(np.float64)) if sqrt else items.astype(np.float64)
        stats = dataset_statistics(open_items(path, "patches"), sqrt=sqrt)
        assert stats["mean"] == pytest.approx(x.mean(), rel=1e-9)
        assert stats["std"] == pytest.approx(x.std(), rel=1e-6)
        assert (stats["min"], stats["max"], stats["n_items"]) == (x.min(), x.max(), N)


def test_transform_crops_even_items_to_odd_about_index_n_over_2():
    raw = np.zeros((1, 6, 6))
    raw[0, 3, 3] = 4.0  # abTEM's zero angle of an even pattern: index n // 2
    out = ItemTransform(sqrt=True, offset=0.0, scale=2.0)(raw)
    assert out.shape == (1, 5, 5) and out[0, 2, 2] == 1.0  # centre pixel; sqrt(4) / 2


def test_datamodule_normalises_and_keeps_its_values_in_the_checkpoint_state(store):
    path, items = store
    dm = ZarrItemsDataModule(path, "patches", batch_size=100, normalisation="minmax")
    dm.setup("fit")
    assert dm.item_size == P and dm.offset == items.min() and dm.scale == items.max() - items.min()
    x, _ = next(iter(dm.train_dataloader()))
    assert x.min() >= 0 and x.max() <= 1
    again = ZarrItemsDataModule(path, "patches")
    again.load_state_dict(dm.state_dict())
    assert (again.offset, again.scale) == (dm.offset, dm.scale)


def test_bad_stores_and_options_are_reported(store, tmp_path):
    path, _ = store
    with pytest.raises(InputError, match="no array 'nope'"):
        open_items(path, "nope")
    with pytest.raises(InputError, match="does not exist"):
        open_items(str(tmp_path / "missing.zarr"), "patches")
    write_items(tmp_path / "flat.zarr", np.ones((10, 5, 5)), 5)
    dm = ZarrItemsDataModule(str(tmp_path / "flat.zarr"), "patches")
    with pytest.raises(InputError, match="constant"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="normalisation"):
        ZarrItemsDataModule(path, normalisation="zscore")
    unfinished = np.ones((10, 5, 5))
    unfinished[3] = np.nan
    write_items(tmp_path / "nan.zarr", unfinished, 5)
    with pytest.raises(InputError, match="NaN"):
        dataset_statistics(open_items(str(tmp_path / "nan.zarr"), "patches"), sqrt=False)


def test_radial_normalisation_is_per_ring_and_rotation_equivariant(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.indices((11, 11)) - 5
    disc = 100.0 * (np.hypot(yy, xx) <= 3)  # a round bright disc: per ring, a mean and a spread
    items = rng.poisson(disc + 1.0, (200, 11, 11)).astype(np.float32)
    write_items(tmp_path / "p.zarr", items, 50)
    dm = ZarrItemsDataModule(str(tmp_path / "p.zarr"), "patches", normalisation="radial", sqrt=True)
    dm.setup("fit")
    x = dm.transform(items)
    from rvae.data import ring_index

    rings = ring_index(11)
    for r in (0, 2, 5):
        sel = x[:, rings == r]
        assert abs(sel.mean()) < 1e-4 and sel.std() == pytest.approx(1.0, rel=1e-3)
    torch.testing.assert_close(torch.from_numpy(dm.transform(np.rot90(items, 1, axes=(1, 2)).copy())),
                               torch.from_numpy(np.rot90(x, 1, axes=(1, 2)).copy()))  # rings turn with the item
    state = dm.state_dict()
    assert len(state["offset"]) == rings.max() + 1 and all(isinstance(v, float) for v in state["scale"])
