"""Plane-group images for the phase classifier: folds by structure, patches, augmentation (LightningDataModule).

Splits
    Grouped k-fold on the structure signature (``structure`` column of the store): scikit-learn's
    ``StratifiedGroupKFold`` (classes balanced across folds as far as the groups allow), so no signature is in
    two folds and the test fold holds only structures the model never saw. ``split_seed`` fixes the folds;
    the model ``seed`` varies the initialisation and the batches, so both arms and every seed see the same folds.
Patches
    Square ``patch_size_px`` crops inside each image's valid region (where the symmetry kernel lies inside the
    image; ``kernel_px`` per image). Training: ``patches_per_image`` random crops per image and epoch, each with
    one of the 8 symmetries of the square grid applied to image and maps together (``dihedral_transform``: the
    maps of the transformed image, the axis channels transformed with it, never a stack of maps rotated as
    images). Arbitrary rotations are in the data itself (every image is drawn at a random angle and its maps
    computed after). Evaluation: a fixed ``eval_grid x eval_grid`` grid of crops per image, no augmentation.
Channels
    arm ``image``: the image only (1 channel); arm ``symmetry``: the image and the seven maps (8 channels).
    The image channel of every patch is standardised (zero mean, unit standard deviation): counts vary with
    dose and background, the maps are already dimensionless in [-1, 1].
DDP
    Each rank keeps its share of the training images (``training.splits.shard``) in memory; batches are sliced
    from memory with generators seeded from (seed, rank, epoch).
"""
from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl
import torch

from contract import planegroups as pg
from contract.store import StoreError, open_group
from kernels.symmetry import dihedral_transform

from .splits import derive_seed, placement, shard

ARMS = {"image": 1, "symmetry": 1 + pg.N_SYMMETRY_MAPS}
"""Arm name -> input channels."""


def structure_folds(structure: np.ndarray, label: np.ndarray, n_folds: int, split_seed: int) -> np.ndarray:
    """(N,) int fold of each image; images of one structure signature share a fold."""
    from sklearn.model_selection import StratifiedGroupKFold

    structure = np.asarray(structure)
    n_groups = len(np.unique(structure))
    if n_folds < 2 or n_folds > n_groups:
        raise ValueError(f"n_folds must be in [2, {n_groups}] (distinct structures in the store), got {n_folds}")
    folds = np.full(len(structure), -1, dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=int(split_seed))
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(structure)), np.asarray(label), structure)):
        folds[test] = k
    return folds


def read_store(path: str, rows: np.ndarray | None = None, need_maps: bool = True) -> dict:
    """Images (f32), maps (f16, if ``need_maps``), kernel_px, label, structure, peak_counts of a plane-group
    store (``rows``: a subset). ``StoreError`` naming what is missing. ``kernel_px`` is read for both arms: it
    sets the crops (inside the maps' valid region), which must be the same for both."""
    root = open_group(path)
    if root.attrs.get(pg.ATTR_KIND) != pg.KIND:
        raise StoreError(f"{path} is not a plane-group store (python -m simulate planegroups writes one)")
    for name in (pg.IMAGES, pg.LABEL, pg.STRUCTURE, pg.PEAK_COUNTS, pg.KERNEL_PX) + ((pg.MAPS,) if need_maps else ()):
        if name not in root:
            hint = {pg.MAPS: f": run `python -m features symmetry --store {path}` first",
                    pg.KERNEL_PX: f": run `python -m features symmetry --store {path}` first",
                    pg.STRUCTURE: ": the simulation did not finish (rerun it with --resume)"}.get(name, "")
            raise StoreError(f"store {path!r} has no array {name!r}{hint}")
    if pg.MAPS_DONE in root and not np.asarray(root[pg.MAPS_DONE][:]).all():
        raise StoreError(f"store {path!r}: symmetry maps incomplete; finish with `python -m features symmetry "
                         f"--store {path}`")
    sel = slice(None) if rows is None else rows
    out = {
        "label": np.asarray(root[pg.LABEL][:])[sel].astype(np.int64),
        "structure": np.asarray(root[pg.STRUCTURE][:])[sel].astype(np.int64),
        "peak_counts": np.asarray(root[pg.PEAK_COUNTS][:])[sel].astype(np.float32),
        "images": _take(root[pg.IMAGES], rows),
        "kernel_px": np.asarray(root[pg.KERNEL_PX][:])[sel].astype(np.int64),  # both arms: the same crops
    }
    if need_maps:
        out["maps"] = _take(root[pg.MAPS], rows)
    return out


def _take(array, rows, block: int | None = None):
    """Rows of a zarr array, read block by block (one shard at a time): zarr's orthogonal selection on a
    sharded array held ~10x the result in memory."""
    if rows is None:
        return np.asarray(array[:])
    rows = np.asarray(rows, dtype=np.int64)
    block = int(block or (array.shards or array.chunks)[0])
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    for start in range(0, array.shape[0], block):
        sel = np.flatnonzero((rows >= start) & (rows < start + block))
        if len(sel):
            stop = min(array.shape[0], start + block)
            out[sel] = np.asarray(array[start:stop])[rows[sel] - start]
    return out


def crop_offsets(size: int, patch: int, kernel_px: int, n: int, grid: bool, rng: np.random.Generator | None = None):
    """(n, 2) top-left corners (row, column) of patches inside the valid region (the whole image when the
    valid region is smaller than the patch). ``grid``: an evenly spaced sqrt(n) x sqrt(n) grid."""
    half = (int(kernel_px) - 1) // 2
    lo, hi = half, size - half - patch
    if hi < lo:  # the valid region cannot hold a patch: centre it
        lo = hi = (size - patch) // 2
    if grid:
        g = int(round(math.sqrt(n)))
        pos = np.linspace(lo, hi, g).round().astype(int)
        r, c = np.meshgrid(pos, pos, indexing="ij")
        return np.stack([r.ravel(), c.ravel()], axis=1)
    return rng.integers(lo, hi + 1, size=(n, 2))


def make_patches(images: torch.Tensor, maps: torch.Tensor | None, index: np.ndarray, offsets: np.ndarray,
                 patch: int, transforms: np.ndarray | None = None) -> torch.Tensor:
    """(n, C, P, P) float32 patches: standardised image channel, then the maps (if given), each patch
    optionally transformed by ``transforms[i] = (quarter_turns, flip)``."""
    out = []
    for j, (i, (r, c)) in enumerate(zip(index, offsets)):
        img = images[i, r:r + patch, c:c + patch].float()
        img = (img - img.mean()) / img.std().clamp_min(1e-6)
        if maps is None:
            x = img[None]
            if transforms is not None:
                k, f = transforms[j]
                x = torch.rot90(x, int(k), dims=(-2, -1))
                x = torch.flip(x, dims=(-1,)) if f else x
        else:
            m = maps[i, :, r:r + patch, c:c + patch].float()
            if transforms is not None:
                img, m = dihedral_transform(img, m, int(transforms[j][0]), bool(transforms[j][1]))
            x = torch.cat([img[None], m])
        out.append(x)
    return torch.stack(out)


class PatchBatches:
    """Iterable of ``(patches, labels)`` batches over a set of images (in memory).

    Training: every epoch, ``patches_per_image`` random crops of every image with random grid symmetries, in a
    random order, from a generator seeded with (seed, rank, epoch). Evaluation: the fixed crop grid of each
    image in order (``eval_grid**2`` patches per image, consecutive).
    """

    def __init__(self, data: dict, arm: str, patch: int, batch_size: int, train: bool, patches_per_image: int = 4,
                 eval_grid: int = 3, seed: int = 0, rank: int = 0, epoch_source=None, device=None):
        self.images = torch.as_tensor(data["images"], device=device)
        self.maps = torch.as_tensor(data["maps"], device=device) if arm == "symmetry" else None
        self.labels = torch.as_tensor(data["label"], device=device)
        self.kernel = data["kernel_px"]
        self.patch, self.batch_size, self.train = int(patch), int(batch_size), train
        self.per_image = int(patches_per_image) if train else int(eval_grid) ** 2
        self.seed, self.rank, self.epoch_source, self.epoch = seed, rank, epoch_source, 0
        size = self.images.shape[-1]
        if self.patch > size:
            raise ValueError(f"patch_size_px {self.patch} is larger than the store's images ({size} px)")
        if not train:
            self._index, self._offsets = self._eval_layout()

    def _eval_layout(self):
        size = self.images.shape[-1]
        index, offsets = [], []
        for i in range(len(self.labels)):
            off = crop_offsets(size, self.patch, self.kernel[i], self.per_image, grid=True)
            index.append(np.full(len(off), i))
            offsets.append(off)
        return np.concatenate(index), np.concatenate(offsets)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) * self.per_image / self.batch_size)

    def __iter__(self):
        if self.train:
            if self.epoch_source is not None:
                self.epoch = int(self.epoch_source())
            rng = np.random.default_rng(derive_seed(self.seed, self.rank, self.epoch))
            size = self.images.shape[-1]
            index = np.repeat(np.arange(len(self.labels)), self.per_image)
            offsets = np.concatenate([crop_offsets(size, self.patch, self.kernel[i], self.per_image, False, rng)
                                      for i in range(len(self.labels))])
            order = rng.permutation(len(index))
            index, offsets = index[order], offsets[order]
            transforms = np.stack([rng.integers(0, 4, len(index)), rng.integers(0, 2, len(index))], axis=1)
        else:
            index, offsets, transforms = self._index, self._offsets, None
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            x = make_patches(self.images, self.maps, index[sl], offsets[sl], self.patch,
                             None if transforms is None else transforms[sl])
            yield x, self.labels[torch.as_tensor(index[sl], device=self.labels.device)]


class PlaneGroupDataModule(pl.LightningDataModule):
    """Folds by structure over a plane-group store; one fold is the test set of unseen structures.

    Parameters
    ----------
    store : plane-group store with maps (``python -m simulate planegroups`` + ``python -m features symmetry``).
    arm : "image" (1 channel) or "symmetry" (image + 7 maps).
    patch_size_px : side of the square patches the CNN sees.
    batch_size : patches per training batch and rank.
    patches_per_image : random crops per training image and epoch.
    eval_grid : crops per image side for evaluation (eval_grid**2 patches, averaged for the image's prediction).
    n_folds, test_fold : grouped k-fold on the structure signature; ``test_fold`` is held out.
    split_seed : seeds the folds (keep it fixed to compare arms and seeds on the same folds).
    seed : seeds the batches and crops.
    """

    def __init__(self, store: str = "data/planegroups-demo.zarr", arm: str = "symmetry", patch_size_px: int = 48,
                 batch_size: int = 64, patches_per_image: int = 4, eval_grid: int = 3, n_folds: int = 3,
                 test_fold: int = 0, split_seed: int = 0, seed: int = 0):
        super().__init__()
        if arm not in ARMS:
            raise ValueError(f"data.arm must be one of {tuple(ARMS)}, got {arm!r}")
        if not 0 <= test_fold < n_folds:
            raise ValueError(f"data.test_fold must be in [0, {n_folds - 1}], got {test_fold}")
        if patch_size_px < 16 or batch_size < 1 or patches_per_image < 1 or eval_grid < 1:
            raise ValueError("data.patch_size_px >= 16, data.batch_size, patches_per_image, eval_grid >= 1 required")
        self.save_hyperparameters()
        self.store, self.arm, self.patch = store, arm, int(patch_size_px)
        self.batch_size, self.patches_per_image, self.eval_grid = batch_size, patches_per_image, eval_grid
        self.n_folds, self.test_fold, self.split_seed, self.seed = n_folds, test_fold, split_seed, seed
        self.in_channels = ARMS[arm]
        self._loaded = False

    def split_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(folds (N,), train rows, test rows) of the whole store."""
        root = open_group(self.store)
        if pg.STRUCTURE not in root:
            raise StoreError(f"store {self.store!r} has no {pg.STRUCTURE!r} column: the simulation did not finish")
        folds = structure_folds(np.asarray(root[pg.STRUCTURE][:]), np.asarray(root[pg.LABEL][:]), self.n_folds,
                                self.split_seed)
        return folds, np.flatnonzero(folds != self.test_fold), np.flatnonzero(folds == self.test_fold)

    def setup(self, stage: str | None = None) -> None:
        if self._loaded:
            return
        rank, world, device = placement(self.trainer)
        _, train, test = self.split_rows()
        self.train_rows, self.test_rows = shard(train, rank, world), test
        self.train_data = read_store(self.store, self.train_rows, need_maps=self.arm == "symmetry")
        self.test_data = read_store(self.store, self.test_rows, need_maps=self.arm == "symmetry")
        self.rank, self.device = rank, device
        self._loaded = True

    def geometry(self) -> dict:
        """What a micrograph needs to look like the training data (kept in the model's checkpoint)."""
        root = open_group(self.store)
        cell = np.asarray(root[pg.CELL_PX][:]) if pg.CELL_PX in root else np.array([np.nan])
        cell = cell[np.isfinite(cell)]
        settings = dict(root[pg.MAPS].attrs.get("settings", {})) if pg.MAPS in root else {}
        return {"patch_size_px": self.patch, "eval_grid": self.eval_grid, "image_size_px": int(root[pg.IMAGES].shape[-1]),
                "cell_px_median": float(np.median(cell)) if len(cell) else None,
                "cell_px_range": [float(cell.min()), float(cell.max())] if len(cell) else None,
                "map_settings": settings, "store": str(self.store), "n_folds": self.n_folds,
                "test_fold": self.test_fold, "split_seed": self.split_seed}

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    def train_dataloader(self) -> PatchBatches:
        if not hasattr(self, "_train_batches"):
            self._train_batches = PatchBatches(self.train_data, self.arm, self.patch, self.batch_size, True,
                                               self.patches_per_image, self.eval_grid, self.seed, self.rank,
                                               self._epoch, self.device)
        return self._train_batches

    def val_dataloader(self) -> PatchBatches:
        return PatchBatches(self.test_data, self.arm, self.patch, 256, False, eval_grid=self.eval_grid,
                            device=self.device)

    def test_dataloader(self) -> PatchBatches:
        return self.val_dataloader()
