"""Device-resident training data: a LightningDataModule over a feature store.

The features of a rank's shard are read once into memory (on the GPU when training on one). Each epoch
a permutation of the shard's rows is drawn on the device with a generator seeded from (seed, rank, epoch) and
each batch gathers its rows by a contiguous slice of that permutation: no per-sample ``__getitem__``, no
host-device copies per batch, and no permuted copy of the shard (which would double the shard's memory: at
the paper's scale on 2 ranks, 2.7 GB more per rank; bench/paper_scale_train.py).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pytorch_lightning as pl
import torch

from contract.features import model_feature_columns, model_input_names
from contract.jsonio import json_text
from contract.physical_context import CONTEXT_ENCODINGS
from kernels.context import case_model_context, model_inputs

from .splits import (
    FEATURE_SETS,
    SPLITS,
    derive_seed,
    dopant_split,
    host_split,
    placement,
    random_split,
    shard,
)
from .store import read_index, read_rows

VALIDATION_STREAM = 1  # seed stream of the validation split (the test split uses the seed itself)


class DeviceBatches:
    """Iterable of ``(features, labels)`` batches sliced from tensors already on their device.

    Parameters
    ----------
    features : (n, k) float32 tensor
    labels : (n,) int64 tensor, same device
    batch_size : int
        The last batch of an epoch may be shorter.
    shuffle : bool
        Permute on the device at each epoch with a generator seeded from ``(seed, rank, epoch)``.
    epoch_source : callable returning the current epoch, or None to use :attr:`epoch`.

    It is resumable: :meth:`state_dict` records (epoch, batches yielded) and after :meth:`load_state_dict`
    the next iteration of that epoch continues with the same permutation at the next batch, so a run
    restarted from a mid-epoch checkpoint takes the same optimizer steps as an uninterrupted one.
    """

    def __init__(
        self,
        features: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        epoch_source: Callable[[], int] | None = None,
    ):
        if features.shape[0] != labels.shape[0]:
            raise ValueError(f"features has {features.shape[0]} rows but labels {labels.shape[0]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.features, self.labels = features, labels
        self.batch_size, self.shuffle, self.seed, self.rank = int(batch_size), shuffle, seed, rank
        self.epoch_source = epoch_source
        self.epoch = 0
        self._position = 0
        self._resume: dict | None = None

    def __len__(self) -> int:
        return math.ceil(self.features.shape[0] / self.batch_size)

    def __iter__(self):
        return self._batches()  # a generator: the epoch is read at the first batch, after Lightning's hooks

    def _batches(self):
        if self.epoch_source is not None:
            self.epoch = int(self.epoch_source())
        start = 0
        if self._resume is not None and self._resume["epoch"] == self.epoch and self._resume["position"] < len(self):
            start = int(self._resume["position"])
        self._resume = None
        self._position = start
        x, y, n = self.features, self.labels, self.batch_size
        perm = None
        if self.shuffle:
            # one permutation per epoch; each batch gathers its rows (the same batches as slicing x[perm], without
            # holding that permuted copy of the whole shard)
            g = torch.Generator(device=x.device)
            g.manual_seed(derive_seed(self.seed, self.rank, self.epoch))
            perm = torch.randperm(x.shape[0], generator=g, device=x.device)
        for b in range(start, len(self)):
            self._position = b + 1
            if perm is None:
                yield x[b * n : (b + 1) * n], y[b * n : (b + 1) * n]
            else:
                rows = perm[b * n : (b + 1) * n]
                yield x.index_select(0, rows), y.index_select(0, rows)

    def state_dict(self) -> dict:
        return {"epoch": int(self.epoch), "position": int(self._position)}

    def load_state_dict(self, state: dict) -> None:
        self._resume = {"epoch": int(state["epoch"]), "position": int(state["position"])}


class FeatureDataModule(pl.LightningDataModule):
    """Features and labels of a store, split 80/20 (or by host), each DDP rank holding its shard in memory.

    Parameters
    ----------
    store : path of the zarr store (with ``features``, ``label``, ``case``).
    batch_size : training batch size per rank.
    feature_set : "all" (31 columns) or "zernike" (the 6 Zernike columns, for MLP-NoContext).
    context_encoding : "shells" (the paper's 23 stored context values) or "physical" (the 10 column-contrast values
        of ``contract.physical_context``, computed per case, in place of the stored 23: 18 inputs with ``all``).
    split : "random" (``test_fraction`` of rows at random, fixed ``seed``), "by_host" (rows of
        ``test_hosts`` are the test set: generalisation to unseen materials) or "by_dopant" (rows of the combos
        whose dopant is in ``test_dopants``: a dopant unseen with every host).
    test_fraction : fraction of rows in the test set for ``split: random``.
    test_hosts : host names (as in ``attrs["cases"][i]["host"]``) held out for ``split: by_host``.
    test_dopants : dopant symbols held out for ``split: by_dopant``.
    validation_fraction : fraction of the training rows held out as the validation set (early stopping of the
        ``steps`` schedule, :mod:`training.schedule`); 0 (the paper's schedule): validate on the test rows.
    seed : seeds the split and the per-epoch shuffles.
    eval_batch_size : batch size for validation/test (default: batch_size).
    save_shard_indices : write each rank's training row indices to ``<run dir>/shards/`` (provenance).
    read_block_rows : rows read per zarr request while loading.
    """

    def __init__(
        self,
        store: str = "data/demo.zarr",
        batch_size: int = 4096,
        feature_set: str = "all",
        context_encoding: str = "shells",
        split: str = "random",
        test_fraction: float = 0.2,
        test_hosts: list[str] | None = None,
        test_dopants: list[str] | None = None,
        validation_fraction: float = 0.0,
        seed: int = 0,
        eval_batch_size: int | None = None,
        save_shard_indices: bool = False,
        read_block_rows: int = 1 << 20,
    ):
        super().__init__()
        if feature_set not in FEATURE_SETS:
            raise ValueError(f"data.feature_set must be one of {tuple(FEATURE_SETS)}, got {feature_set!r}")
        if context_encoding not in CONTEXT_ENCODINGS:
            raise ValueError(f"data.context_encoding must be one of {CONTEXT_ENCODINGS}, got {context_encoding!r}")
        if split not in SPLITS:
            raise ValueError(f"data.split must be one of {SPLITS}, got {split!r}")
        if split == "by_host" and not test_hosts:
            raise ValueError("data.split 'by_host' needs data.test_hosts (a list of host names)")
        if split == "by_dopant" and not test_dopants:
            raise ValueError("data.split 'by_dopant' needs data.test_dopants (a list of dopant symbols)")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"data.test_fraction must be in (0, 1), got {test_fraction}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= validation_fraction < 0.5:
            raise ValueError(f"data.validation_fraction must be in [0, 0.5), got {validation_fraction}")
        self.save_hyperparameters()
        self.store, self.batch_size, self.feature_set, self.split = store, batch_size, feature_set, split
        self.context_encoding = context_encoding
        self.test_fraction, self.test_hosts, self.seed = test_fraction, list(test_hosts or []), seed
        self.test_dopants = list(test_dopants or [])
        self.validation_fraction = validation_fraction
        self.eval_batch_size = eval_batch_size or batch_size
        self.save_shard_indices, self.read_block_rows = save_shard_indices, read_block_rows
        self.n_features: int | None = None
        self._loaded = False

    def split_rows(self):
        """(index, train rows, test rows) of the whole store, before sharding."""
        index = read_index(self.store)
        if self.split == "random":
            train, test = random_split(index.n_rows, self.test_fraction, self.seed)
        elif self.split == "by_host":
            train, test = host_split(index.row_hosts, self.test_hosts)
        else:
            train, test = dopant_split(index.row_dopants, self.test_dopants)
        return index, train, test

    def fit_validation_rows(self, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows to fit, validation rows) of the training rows: ``validation_fraction`` of them at random
        (seeded apart from the test split), or all rows and none when it is 0."""
        if self.validation_fraction == 0:
            return train, train[:0]
        fit, val = random_split(len(train), self.validation_fraction, derive_seed(self.seed, VALIDATION_STREAM))
        return train[fit], train[val]

    def columns(self) -> list[int]:
        """Stored feature columns this data module feeds the model (``contract.features.model_feature_columns``:
        after the physical context block, if any)."""
        return model_feature_columns(self.feature_set, self.context_encoding)

    def case_contexts(self, cases) -> np.ndarray | None:
        """(n_cases, 10) physical context per case of the store, or None when the model reads no computed
        context (the paper's encoding, or the Zernike-only feature set)."""
        if self.feature_set != "all" or self.context_encoding == "shells":
            return None
        return np.stack([case_model_context(c, self.context_encoding) for c in cases])

    def read_inputs(self, index, rows: np.ndarray) -> np.ndarray:
        """(len(rows), n_features) float32: what the model reads for store ``rows`` (ascending) of ``index``."""
        x = read_rows(self.store, rows, self.columns(), self.read_block_rows)
        contexts = self.case_contexts(index.meta.cases)
        return x if contexts is None else model_inputs(x, range(x.shape[1]), contexts[index.case[rows]])

    def setup(self, stage: str | None = None) -> None:
        if self._loaded:
            return
        rank, world, device = placement(self.trainer)
        index, train, test = self.split_rows()
        self.feature_names = model_input_names(self.feature_set, self.context_encoding)
        self.n_features = len(self.feature_names)
        fit, val = self.fit_validation_rows(train)
        self.train_rows, self.test_rows = shard(fit, rank, world), shard(test, rank, world)
        self.val_rows = shard(val, rank, world) if len(val) else self.test_rows

        def load(rows):
            x = torch.from_numpy(self.read_inputs(index, rows)).to(device)
            y = torch.from_numpy(index.label[rows].astype(np.int64)).to(device)
            return x, y

        self.train_x, self.train_y = load(self.train_rows)
        self.test_x, self.test_y = load(self.test_rows)
        self.val_x, self.val_y = load(self.val_rows) if len(val) else (self.test_x, self.test_y)
        self.rank = rank
        if self.save_shard_indices and self.trainer is not None:
            out = Path(self.trainer.default_root_dir) / "shards"
            out.mkdir(parents=True, exist_ok=True)
            np.save(out / f"train-rank{rank}-of{world}.npy", self.train_rows)
            (out / f"train-rank{rank}-of{world}.json").write_text(
                json_text({"rank": rank, "world_size": world, "n_rows": int(len(self.train_rows))})
            )
        self._loaded = True

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DeviceBatches:
        if not hasattr(self, "_train_batches"):
            self._train_batches = DeviceBatches(
                self.train_x, self.train_y, self.batch_size, shuffle=True, seed=self.seed, rank=self.rank,
                epoch_source=self._epoch,
            )
        return self._train_batches

    def val_dataloader(self) -> DeviceBatches:
        return DeviceBatches(self.val_x, self.val_y, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DeviceBatches:
        return DeviceBatches(self.test_x, self.test_y, self.eval_batch_size, shuffle=False)
