"""Streaming items from a zarr array, shard by shard: the rVAE's data.

The items are the rows of one (N, P, P) zarr array (ADF sub-images written by ``fit-image``, or the patterns
of one scan of a 4D-STEM store at one dose). An epoch visits the array's shards in an order drawn from
(seed, epoch), splits them between DDP ranks, reads one shard at a time, shuffles its rows and yields batches
from it: at most one shard is in memory. Every rank yields the same number of batches (the smallest count),
so no rank waits at a collective.

Transform (``ItemTransform``): crop an even-sized item to odd (drop the first row and column, so that index
n // 2, abTEM's zero angle, lands on the centre pixel), √I for counts (``sqrt``: variance-stabilising for
Poisson), then per-dataset normalisation, measured in one streaming pass over the whole array: ``standard``
(one mean and one standard deviation), ``radial`` (a mean and a standard deviation per ring of whole-pixel
radius about the centre pixel: rotation-equivariant, for diffraction patterns, whose round bright-field disc
otherwise holds nearly all the variance and leaves the position-dependent changes at ~1e-3 of it, so that the
latents collapsed on noise-free graphene: measured), ``mean_pattern`` (the dataset's mean item subtracted pixel
by pixel, then divided by the residual's standard deviation per ring: what varies from item to item, for
4D-STEM, whose fixed Bragg structure does not rotate with the probe position and otherwise fixed the angle) or
``minmax`` (to [0, 1], for the Bernoulli likelihood).

An optional ``crop`` (row, column, size) keeps one odd square window of each item after the odd crop: for 4D-STEM
the bright-field disc and its inner dark field, centred on the undeflected beam (``bright_field_window``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pytorch_lightning as pl
from scipy import ndimage
import torch
from torch.utils.data import DataLoader, IterableDataset

from contract.errors import InputError
from contract.store import open_group

NORMALISATIONS = ("standard", "radial", "mean_pattern", "minmax")


def open_items(store: str, array: str):
    """The (N, P, P) zarr array ``array`` of the store ``store``; ``InputError`` naming what is wrong."""
    group = open_group(store)
    try:
        arr = group[array]
    except KeyError:
        raise InputError(f"store {store!r} has no array {array!r}") from None
    if not hasattr(arr, "shape") or len(arr.shape) != 3 or arr.shape[1] != arr.shape[2] or arr.shape[1] < 3:
        raise InputError(f"{store}/{array}: items must be (N, P, P) square images, got shape "
                         f"{getattr(arr, 'shape', None)}")
    return arr


def shard_rows(arr) -> int:
    """Rows per shard of a zarr array (its chunk rows when it is not sharded)."""
    shards = getattr(arr, "shards", None)
    return int(shards[0] if shards else arr.chunks[0])


def item_size(raw_size: int) -> int:
    """Size of the items after the odd crop."""
    return raw_size if raw_size % 2 == 1 else raw_size - 1


def ring_index(size: int) -> np.ndarray:
    """(size, size) int: the whole-pixel radius of each pixel about the centre pixel (``radial`` rings)."""
    yy, xx = np.indices((size, size)) - size // 2
    return np.rint(np.hypot(yy, xx)).astype(np.int64)


def bright_field_window(mean_pattern: np.ndarray, radius_factor: float = 1.5) -> tuple[int, int, int]:
    """The odd square window (row, column, size) of a diffraction pattern that holds its bright-field disc and
    inner dark field out to ``radius_factor`` x the disc radius, centred on the disc (the undeflected beam).

    ``mean_pattern`` (P, P): the scan's mean pattern (counts or intensities). The disc is the connected set of
    pixels above half of the brightest (as the pattern's own contrast defines it: no calibration needed); its
    centre the centroid of those pixels rounded to a pixel, its radius sqrt(area / π). The window is clipped to
    the pattern. ``InputError`` when no disc stands out (a flat or empty pattern)."""
    m = np.asarray(mean_pattern, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or not np.isfinite(m).all():
        raise InputError(f"bright_field_window: a finite square (P, P) mean pattern is needed, got shape {m.shape}")
    if not radius_factor > 0:
        raise ValueError(f"radius_factor must be > 0, got {radius_factor}")
    lo, hi = float(m.min()), float(m.max())
    if not hi > lo:
        raise InputError("bright_field_window: the mean pattern is flat: no bright-field disc to centre on")
    bright = m > lo + 0.5 * (hi - lo)
    labels, _ = ndimage.label(bright)
    disc = labels == labels.flat[int(np.argmax(m))]
    r0, c0 = (int(round(v)) for v in ndimage.center_of_mass(disc))
    half = int(math.ceil(radius_factor * math.sqrt(disc.sum() / math.pi)))
    half = min(half, r0, c0, m.shape[0] - 1 - r0, m.shape[1] - 1 - c0)
    if half < 1:
        raise InputError(f"bright_field_window: the disc centre ({r0}, {c0}) lies on the pattern's edge")
    return r0 - half, c0 - half, 2 * half + 1


@dataclass(frozen=True)
class ItemTransform:
    """Raw (B, P, P) rows -> model input (B, P', P') float32 (see the module docstring). ``offset`` and ``scale``
    are numbers, or (``radial``) one per ring 0, 1, ... of ``ring_index``, or (``mean_pattern``) one offset per
    pixel (P'² values, row-major) and one scale per ring."""

    sqrt: bool = False
    normalisation: str = "standard"
    offset: float | tuple = 0.0  # standard: mean; radial: mean per ring; mean_pattern: mean item; minmax: minimum
    scale: float | tuple = 1.0  # standard: std; radial and mean_pattern: std per ring; minmax: maximum - minimum
    crop: tuple[int, int, int] | None = None  # (row, column, size) of the window kept after the odd crop

    def pre(self, raw: np.ndarray) -> np.ndarray:
        """Odd crop, window and √I, before normalisation: a float64 copy (never the caller's array)."""
        x = np.array(raw, dtype=np.float64)
        if x.shape[-1] % 2 == 0:
            x = x[..., 1:, 1:]
        if self.crop is not None:
            r, c, n = self.crop
            if r < 0 or c < 0 or r + n > x.shape[-2] or c + n > x.shape[-1]:
                raise InputError(f"crop {self.crop} leaves the {x.shape[-1]} x {x.shape[-1]} items")
            x = x[..., r:r + n, c:c + n]
        if self.sqrt:
            x = np.sqrt(np.clip(x, 0, None))
        return x

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        x = self.pre(raw)  # a float64 copy: normalised in place
        if np.ndim(self.offset) == 0:
            offset, scale = self.offset, self.scale
        elif self.normalisation == "mean_pattern":
            offset = np.asarray(self.offset).reshape(x.shape[-2:])
            scale = np.asarray(self.scale)[ring_index(x.shape[-1])]
        else:
            rings = ring_index(x.shape[-1])
            offset, scale = np.asarray(self.offset)[rings], np.asarray(self.scale)[rings]
        x -= offset
        x /= scale
        return x.astype(np.float32)


def dataset_statistics(arr, sqrt: bool, rows_per_read: int | None = None,
                       crop: tuple[int, int, int] | None = None) -> dict:
    """One streaming pass over ``arr`` (shard by shard): mean, std, min, max of the pre-normalised values, the
    mean and std per ring, the mean item and the std per ring about it, and the number of items. ``InputError``
    when a value is not finite (an unfinished store)."""
    t = ItemTransform(sqrt=sqrt, crop=None if crop is None else tuple(crop))
    step = rows_per_read or shard_rows(arr)
    total, total_sq, count, lo, hi = 0.0, 0.0, 0, math.inf, -math.inf
    size = int(crop[2]) if crop is not None else item_size(int(arr.shape[1]))
    rings = ring_index(size)
    ring_sum = ring_sq = pixel_sum = pixel_sq = 0.0
    for start in range(0, arr.shape[0], step):
        x = t.pre(arr[start:start + step])
        if not np.isfinite(x).all():
            raise InputError(f"items {start}..{start + len(x) - 1} hold NaN or infinite values: is the store "
                             "finished (simulate ... --resume)?")
        total += float(x.sum())
        total_sq += float(np.square(x).sum())
        ring_sum = ring_sum + np.bincount(rings.ravel(), x.sum(axis=0).ravel())
        ring_sq = ring_sq + np.bincount(rings.ravel(), np.square(x).sum(axis=0).ravel())
        pixel_sum = pixel_sum + x.sum(axis=0)
        pixel_sq = pixel_sq + np.square(x).sum(axis=0)
        count += x.size
        lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    mean = total / count
    std = math.sqrt(max(total_sq / count - mean**2, 0.0))
    per_ring = np.bincount(rings.ravel()) * int(arr.shape[0])
    ring_mean = ring_sum / per_ring
    ring_std = np.sqrt(np.clip(ring_sq / per_ring - ring_mean**2, 0, None))
    ring_std = np.maximum(ring_std, 1e-3 * std)  # a ring without spread (dark corners) is not blown up
    pixel_mean = pixel_sum / int(arr.shape[0])
    pixel_var = np.clip(pixel_sq / int(arr.shape[0]) - np.square(pixel_mean), 0, None)  # about each pixel's mean
    residual_std = np.sqrt(np.bincount(rings.ravel(), pixel_var.ravel()) / np.bincount(rings.ravel()))
    residual_std = np.maximum(residual_std, 1e-3 * std)
    return {"mean": mean, "std": std, "min": lo, "max": hi, "n_items": int(arr.shape[0]),
            "ring_mean": ring_mean.tolist(), "ring_std": ring_std.tolist(),
            "pixel_mean": pixel_mean.ravel().tolist(), "residual_ring_std": residual_std.tolist()}


def epoch_shards(n_shards: int, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
    """Shard order of an epoch: a permutation drawn from (seed, epoch), or 0..n-1."""
    if not shuffle:
        return np.arange(n_shards)
    return np.random.default_rng(np.random.SeedSequence([seed, epoch])).permutation(n_shards)


class ShardStream(IterableDataset):
    # A DataLoader with num_workers=0 (the only way it is used) reads it in order; the length is exact.
    """Batches ``(images (B, P', P') float32 tensor, row indices (B,) int64 tensor)`` from one rank's shards.

    ``peak_rows_held`` records the most rows this stream ever held in memory at once (a test checks that it
    never exceeds one shard).
    """

    def __init__(self, store: str, array: str, transform: ItemTransform, batch_size: int, shuffle: bool,
                 seed: int = 0, rank: int = 0, world_size: int = 1, epoch_source: Callable[[], int] | None = None,
                 equal_batches: bool = True, shards=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.store, self.array, self.transform = store, array, transform
        self.batch_size, self.shuffle, self.seed = int(batch_size), shuffle, int(seed)
        self.rank, self.world_size, self.epoch_source = rank, world_size, epoch_source
        arr = open_items(store, array)
        self.n_rows, self.rows_per_shard = int(arr.shape[0]), shard_rows(arr)
        self.n_shards = math.ceil(self.n_rows / self.rows_per_shard)
        self.shards = np.arange(self.n_shards) if shards is None else np.asarray(shards, dtype=np.int64)
        if len(self.shards) and len(self.shards) < world_size:
            raise ValueError(f"{array}: {len(self.shards)} shards cannot feed {world_size} ranks")
        self.equal_batches = equal_batches
        self.peak_rows_held = 0

    def _shard_len(self, shard: int) -> int:
        return min(self.n_rows, (shard + 1) * self.rows_per_shard) - shard * self.rows_per_shard

    def _batches_of(self, shards) -> int:
        return sum(math.ceil(self._shard_len(s) / self.batch_size) for s in shards)

    def _order(self, epoch: int) -> np.ndarray:
        return self.shards[epoch_shards(len(self.shards), epoch, self.seed, self.shuffle)]

    def _my_shards(self, epoch: int) -> np.ndarray:
        return self._order(epoch)[self.rank::self.world_size]

    def __len__(self) -> int:
        if not self.equal_batches:
            return self._batches_of(self._my_shards(self._epoch()))
        order = self._order(self._epoch())
        return min(self._batches_of(order[r::self.world_size]) for r in range(self.world_size))

    def _epoch(self) -> int:
        return int(self.epoch_source()) if self.epoch_source is not None else 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self._epoch()
        n_batches = len(self)
        arr = open_items(self.store, self.array)
        yielded = 0
        for shard in self._my_shards(epoch):
            start = int(shard) * self.rows_per_shard
            raw = arr[start:start + self._shard_len(int(shard))]  # one whole shard: one read
            self.peak_rows_held = max(self.peak_rows_held, len(raw))
            x = torch.from_numpy(self.transform(raw))
            del raw
            rows = torch.arange(start, start + len(x))
            if self.shuffle:
                g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, epoch, int(shard)])
                                                      .generate_state(1)[0]))
                perm = torch.randperm(len(x), generator=g)
                x, rows = x[perm], rows[perm]
            for b in range(0, len(x), self.batch_size):
                if yielded == n_batches:
                    return
                yield x[b:b + self.batch_size], rows[b:b + self.batch_size]
                yielded += 1


class ZarrItemsDataModule(pl.LightningDataModule):
    """Items of one zarr array for the rVAE (see the module docstring).

    Parameters
    ----------
    store : path of the zarr store.
    array : path of the (N, P, P) array inside it, e.g. ``patches`` (``fit-image``) or
        ``graphene/patterns/dose_100000`` (a 4D-STEM store).
    batch_size : items per batch (per rank).
    sqrt : √I before normalisation (counts).
    normalisation : "standard" (mean 0, std 1 over the whole array), "radial" (per ring about the centre:
        diffraction patterns), "mean_pattern" (the mean item subtracted, the std per ring about it: what varies
        between 4D-STEM patterns) or "minmax" ([0, 1]; Bernoulli likelihood).
    crop : [row, column, size] of an odd window kept of each item (after the odd crop); None: the whole item.
    offset, scale : the normalisation's values (numbers, or one per ring for "radial"); None: measured in
        ``setup`` by one streaming pass (then kept in the checkpoint, so a resumed run or an encoding uses the
        same ones).
    seed : shard and row order of every epoch.
    val_shards : number of shards (the last ones) validated on each epoch; 0 for none. The model is fitted to the
        whole array (unsupervised, as in the papers); validation reports the loss on seen items.
    """

    def __init__(self, store: str = "data/items.zarr", array: str = "patches", batch_size: int = 128,
                 sqrt: bool = False, normalisation: str = "standard", offset: float | list[float] | None = None,
                 scale: float | list[float] | None = None, seed: int = 0, val_shards: int = 1,
                 crop: list[int] | None = None):
        super().__init__()
        if normalisation not in NORMALISATIONS:
            raise ValueError(f"data.normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if val_shards < 0:
            raise ValueError(f"data.val_shards must be >= 0, got {val_shards}")
        if crop is not None and (len(crop) != 3 or int(crop[2]) % 2 != 1 or min(int(v) for v in crop) < 0):
            raise ValueError(f"data.crop must be [row, column, odd size] >= 0, got {crop!r}")
        self.save_hyperparameters()
        self.store, self.array, self.batch_size, self.sqrt = store, array, batch_size, sqrt
        self.normalisation, self.offset, self.scale, self.seed = normalisation, offset, scale, seed
        self.val_shards = val_shards
        self.crop = None if crop is None else tuple(int(v) for v in crop)
        self.item_size: int | None = None
        self.statistics: dict | None = None

    def setup(self, stage: str | None = None) -> None:
        arr = open_items(self.store, self.array)
        self.item_size = item_size(int(arr.shape[1]))
        if self.crop is not None:
            if self.crop[0] + self.crop[2] > self.item_size or self.crop[1] + self.crop[2] > self.item_size:
                raise InputError(f"data.crop {list(self.crop)} leaves the {self.item_size} x {self.item_size} items")
            self.item_size = self.crop[2]
        if self.offset is None or self.scale is None:
            self.statistics = dataset_statistics(arr, self.sqrt, crop=self.crop)
            s = self.statistics
            self.offset, self.scale = {"standard": (s["mean"], s["std"]), "minmax": (s["min"], s["max"] - s["min"]),
                                       "radial": (s["ring_mean"], s["ring_std"]),
                                       "mean_pattern": (s["pixel_mean"], s["residual_ring_std"])}[self.normalisation]
        if not np.min(self.scale) > 0:
            raise InputError(f"{self.store}/{self.array}: the items are constant (scale {self.scale}); nothing to fit")

    @property
    def transform(self) -> ItemTransform:
        return make_transform(self.sqrt, self.normalisation, self.offset, self.scale, self.crop)

    def _rank(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank()
        stream = ShardStream(self.store, self.array, self.transform, self.batch_size, shuffle=True, seed=self.seed,
                             rank=rank, world_size=world, epoch_source=self._epoch)
        return DataLoader(stream, batch_size=None, num_workers=0)

    def val_dataloader(self):
        rank, world = self._rank()
        arr = open_items(self.store, self.array)
        n_shards = math.ceil(arr.shape[0] / shard_rows(arr))
        n = min(self.val_shards, n_shards)
        if n < max(world, 1):  # none asked, or too few to share between the ranks: no validation
            return []
        stream = ShardStream(self.store, self.array, self.transform, self.batch_size, shuffle=False, rank=rank,
                             world_size=world, shards=list(range(n_shards - n, n_shards)))
        return DataLoader(stream, batch_size=None, num_workers=0)

    def predict_dataloader(self) -> DataLoader:
        stream = ShardStream(self.store, self.array, self.transform, self.batch_size, shuffle=False,
                             equal_batches=False)
        return DataLoader(stream, batch_size=None, num_workers=0)

    def state_dict(self) -> dict:
        if self.offset is None:
            return {}
        return {"offset": _plain(self.offset), "scale": _plain(self.scale)}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.offset, self.scale = _plain(state["offset"]), _plain(state["scale"])


def _plain(value):
    """A float or a list of floats (what a weights_only checkpoint and a YAML config hold)."""
    return float(value) if np.ndim(value) == 0 else [float(v) for v in np.asarray(value).ravel()]


def make_transform(sqrt: bool, normalisation: str, offset, scale, crop=None) -> ItemTransform:
    offset, scale = _plain(offset), _plain(scale)
    return ItemTransform(bool(sqrt), str(normalisation), offset if np.ndim(offset) == 0 else tuple(offset),
                         scale if np.ndim(scale) == 0 else tuple(scale),
                         None if crop is None else tuple(int(v) for v in crop))
