"""Train/test splits, DDP shards and feature-column selection: pure functions on index arrays (no I/O)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from contract.features import FEATURE_SETS, feature_columns

SPLITS = ("random", "by_host", "by_dopant")
__all__ = ["FEATURE_SETS", "SPLITS", "derive_seed", "dopant_split", "feature_columns", "host_split", "random_split",
           "shard"]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived deterministically from integers (config seed, rank, epoch, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def random_split(n_rows: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows 0..n_rows-1 at random into (train, test) index arrays, each sorted ascending (int64).

    ``round(test_fraction * n_rows)`` rows go to test; the same ``seed`` gives the same split.
    """
    if n_rows < 2:
        raise ValueError(f"need at least 2 rows to split, got n_rows={n_rows}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = min(max(int(round(test_fraction * n_rows)), 1), n_rows - 1)
    perm = np.random.default_rng(seed).permutation(n_rows)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def host_split(row_hosts: np.ndarray, test_hosts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole host materials: rows whose host is in ``test_hosts`` are test, the rest train.

    ``row_hosts`` is (N,) of host names (e.g. "WSe2"); unknown test hosts are an error listing the known ones.
    """
    return _group_split(row_hosts, test_hosts, "host")


def dopant_split(row_dopants: np.ndarray, test_dopants: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hold out dopants from every host they occur in: rows of a combo whose dopant is in ``test_dopants`` are
    test (its undoped environments too), the rest train. ``row_dopants`` is (N,) of dopant symbols."""
    return _group_split(row_dopants, test_dopants, "dopant")


def _group_split(row_values: np.ndarray, test_values: Sequence[str], what: str) -> tuple[np.ndarray, np.ndarray]:
    row_values = np.asarray(row_values)
    known = sorted(set(row_values.tolist()))
    if len(test_values) == 0:
        raise ValueError(f"split 'by_{what}' needs test_{what}s ({what}s in this store: {known})")
    unknown = [h for h in test_values if h not in known]
    if unknown:
        raise ValueError(f"test_{what}s {unknown} are not in the store ({what}s in this store: {known})")
    is_test = np.isin(row_values, list(test_values))
    if is_test.all():
        raise ValueError(f"test_{what}s {list(test_values)} are all {what}s of the store: nothing left to train on")
    return np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)


def placement(trainer) -> tuple:
    """(rank, world size, torch device) a data module loads for: the trainer's, or (0, 1, CPU) without one."""
    import torch

    if trainer is None:
        return 0, 1, torch.device("cpu")
    return trainer.global_rank, trainer.world_size, trainer.strategy.root_device


def shard(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s share of ``indices``: every world_size-th row, truncated to equal length on all ranks.

    Equal lengths keep the number of optimizer steps identical on every DDP rank (the ``len % world_size``
    rows left over are dropped, as :class:`torch.utils.data.DistributedSampler` with drop_last).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    n_per_rank = len(indices) // world_size
    if n_per_rank == 0:
        raise ValueError(f"{len(indices)} rows cannot be shared by {world_size} ranks")
    return np.asarray(indices)[rank::world_size][:n_per_rank]
