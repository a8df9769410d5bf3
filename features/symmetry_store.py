"""Symmetry maps of a plane-group store (``python -m features symmetry --store STORE``) and of one image file
(``python -m features symmetry IMAGE --out MAPS.npz``): I/O and orchestration around ``kernels.symmetry``.

Store pass: one Dask task per shard (``images_per_task`` images, written by one simulation task) measures each
image's cell (``kernels.cell.measure_cell``), picks the kernel (``kernel_px_for_cell``, or the fixed
``--kernel-px``), computes the seven maps and writes ``maps`` (N, 7, S, S) float16, ``kernel_px`` (N,) int32 and
``cell_px`` (N,) float32 (sqrt of the measured primitive cell area; NaN when no lattice was found: the kernel
then falls back to the median of the shard's measured cells) as whole shards, then ``maps_done[shard]``. A rerun
skips shards marked done; a run with other map settings (convention, n_max, kernel) starts the maps afresh.
Maps are stored as float16 (resolution 1e-3 on values in [-1, 1]; 2 bytes x 7 channels per pixel).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from cluster import track
from contract import planegroups as pg
from contract.errors import InputError
from contract.images import read_image
from contract.store import StoreError, open_group

from kernels.cell import measure_cell
from kernels.symmetry import (DEFAULT_CONVENTION, DEFAULT_N_MAX, check_kernel, kernel_px_for_cell, symmetry_maps,
                             valid_mask)

CELL_PX = pg.CELL_PX
STORED_MAP_DTYPE = pg.MAP_DTYPE


def image_kernel(image: np.ndarray, kernel_px: int | None = None) -> tuple[int, float]:
    """(kernel side, measured sqrt(cell area) or NaN) for one image: ``kernel_px`` when given, else from the
    measured cell (capped at half the image's smaller side). ``ValueError`` when no cell is found and no
    kernel is given."""
    try:
        cell = measure_cell(image).size_px
    except ValueError:
        if kernel_px is None:
            raise
        cell = float("nan")
    if kernel_px is None:
        kernel_px = kernel_px_for_cell(cell, max_px=min(image.shape) // 2)
    return int(kernel_px), cell


def shard_maps(images: np.ndarray, kernel_px: int | None, n_max: int, convention: str, device: str = "cpu"):
    """Pure core of one shard: (n, S, S) images -> (maps (n, 7, S, S) float16, kernel (n,), cell (n,))."""
    n = len(images)
    cells = np.full(n, np.nan, np.float32)
    kernels = np.zeros(n, np.int32)
    for i, img in enumerate(images):
        try:
            kernels[i], cells[i] = image_kernel(img, kernel_px)
        except ValueError:
            pass  # filled below from the shard's other images
    if kernel_px is None and (kernels == 0).any():
        measured = cells[np.isfinite(cells)]
        if not len(measured):
            raise ValueError("no lattice found in any image of the shard; pass --kernel-px")
        kernels[kernels == 0] = kernel_px_for_cell(float(np.median(measured)), max_px=min(images.shape[1:]) // 2)
    maps = np.empty((n, pg.N_SYMMETRY_MAPS, *images.shape[1:]), dtype=STORED_MAP_DTYPE)
    for i, img in enumerate(images):
        if device == "gpu":
            import cupy  # deferred: optional GPU dependency (--device gpu)

            maps[i] = cupy.asnumpy(symmetry_maps(cupy.asarray(img), int(kernels[i]), n_max, convention))
        else:
            maps[i] = symmetry_maps(img, int(kernels[i]), n_max, convention)
    return maps, kernels, cells


def _settings(kernel_px, n_max, convention) -> dict:
    return {"names": list(pg.SYMMETRY_MAP_NAMES), "convention": convention, "n_max": int(n_max),
            "kernel_px": "per image from the measured cell (kernels.symmetry.kernel_px_for_cell)"
            if kernel_px is None else int(kernel_px)}


def store_plan(store_path) -> dict:
    """Check a plane-group store before any job: kind, finished simulation; returns its layout."""
    root = open_group(store_path)
    if root.attrs.get(pg.ATTR_KIND) != pg.KIND:
        raise StoreError(f"{store_path} is not a plane-group store (no attrs['kind'] = {pg.KIND!r}); symmetry "
                         f"maps of an image file: python -m features symmetry IMAGE --out MAPS.npz")
    if pg.IMAGES not in root:
        raise StoreError(f"store {store_path!r} has no array {pg.IMAGES!r}")
    done = np.asarray(root[pg.TASK_DONE][:])
    if not done.all():
        raise StoreError(f"store {store_path!r}: simulation incomplete, {int((done == 0).sum())} of {len(done)} tasks "
                         f"not done; finish it with `python -m simulate planegroups ... --resume`")
    n, s = root[pg.IMAGES].shape[0], root[pg.IMAGES].shape[1]
    per = int(root.attrs[pg.ATTR_IMAGES_PER_TASK])
    return {"n": n, "size": s, "per": per, "shards": [(a, min(n, a + per)) for a in range(0, n, per)]}


def prepare_outputs(store_path, plan: dict, settings: dict) -> np.ndarray:
    root = open_group(store_path, mode="r+")
    n, s, per = plan["n"], plan["size"], plan["per"]
    ok = (pg.MAPS in root and pg.MAPS_DONE in root and dict(root[pg.MAPS].attrs).get("settings") == settings
          and root[pg.MAPS].shape == (n, pg.N_SYMMETRY_MAPS, s, s))
    if not ok:
        root.create_array(pg.MAPS, shape=(n, pg.N_SYMMETRY_MAPS, s, s), dtype=STORED_MAP_DTYPE,
                          chunks=(1, pg.N_SYMMETRY_MAPS, s, s), shards=(per, pg.N_SYMMETRY_MAPS, s, s),
                          fill_value=np.nan, overwrite=True, attributes={"settings": settings})
        root.create_array(pg.KERNEL_PX, shape=(n,), dtype="int32", chunks=(per,), shards=(per,), fill_value=0,
                          overwrite=True)
        root.create_array(CELL_PX, shape=(n,), dtype="float32", chunks=(per,), shards=(per,), fill_value=np.nan,
                          overwrite=True)
        root.create_array(pg.MAPS_DONE, shape=(len(plan["shards"]),), dtype="uint8", chunks=(1,), fill_value=0,
                          overwrite=True)
    return np.asarray(root[pg.MAPS_DONE][:])


def map_shard(store_path: str, shard: int, start: int, stop: int, kernel_px, n_max: int, convention: str,
              device: str) -> int:
    """Task: maps of images [start, stop) (one shard), written whole, then the shard's marker."""
    root = open_group(store_path, mode="r+")
    maps, kernels, cells = shard_maps(np.asarray(root[pg.IMAGES][start:stop]), kernel_px, n_max, convention, device)
    root[pg.MAPS][start:stop] = maps
    root[pg.KERNEL_PX][start:stop] = kernels
    root[CELL_PX][start:stop] = cells
    root[pg.MAPS_DONE][shard] = 1
    return stop - start


def map_store(store_path, client, kernel_px: int | None = None, n_max: int = DEFAULT_N_MAX,
              convention: str = DEFAULT_CONVENTION, device: str = "cpu") -> dict:
    """Write the maps of every shard not yet done; returns a summary."""
    if kernel_px is not None:
        check_kernel(kernel_px, n_max, convention)
    plan = store_plan(store_path)
    done = prepare_outputs(store_path, plan, _settings(kernel_px, n_max, convention))
    todo = [k for k in range(len(plan["shards"])) if not done[k]]
    futures = [client.submit(map_shard, str(store_path), k, *plan["shards"][k], kernel_px, n_max, convention,
                             device, key=f"symmetry-maps-{k}", pure=False) for k in todo]
    try:
        rows = sum(track(futures, label="symmetry maps", unit="shard"))
    except BaseException:
        client.cancel(futures)
        raise
    return {"n_shards": len(plan["shards"]), "done_shards": len(todo), "skipped_shards": len(plan["shards"]) - len(todo),
            "rows": int(rows)}


# ------------------------------------------------------------------------------------------ one image
def image_maps(image_path, out, kernel_px: int | None = None, n_max: int = DEFAULT_N_MAX,
               convention: str = DEFAULT_CONVENTION, plot: bool = False) -> dict:
    """Maps of one image file (any format ``inference`` reads) into ``out`` (.npz): the seven (H, W) float32
    arrays by name, ``valid`` (H, W) bool, ``kernel_px``, ``n_max``, ``convention``; a figure beside it with
    ``plot``. Returns a summary."""
    image = read_image(image_path).image
    started = time.perf_counter()
    cell = float("nan")
    if kernel_px is None:
        try:
            kernel_px, cell = image_kernel(image)
        except ValueError as err:
            raise InputError(f"{Path(image_path).name}: cannot measure the lattice ({err}); pass --kernel-px K "
                             f"(odd, about 2.5 x the cell size in px)") from None
    if int(kernel_px) > min(image.shape):  # refused before the (kernel_px² x image) basis is allocated
        raise InputError(f"{Path(image_path).name}: --kernel-px {kernel_px} is larger than the image "
                         f"({image.shape[0]}x{image.shape[1]} px)")
    try:
        check_kernel(kernel_px, n_max, convention)
        maps = symmetry_maps(image, kernel_px, n_max, convention, np.float32)
    except ValueError as err:
        raise InputError(f"{Path(image_path).name}: {err}") from None
    out = Path(out)
    if out.suffix != ".npz":
        raise InputError(f"--out {out}: must end in .npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    valid = valid_mask(image.shape, kernel_px)
    np.savez_compressed(out, **{name: maps[i] for i, name in enumerate(pg.SYMMETRY_MAP_NAMES)}, valid=valid,
                        kernel_px=np.int32(kernel_px), n_max=np.int32(n_max), convention=np.str_(convention))
    summary = {"image": str(image_path), "out": str(out), "shape": list(image.shape), "kernel_px": int(kernel_px),
               "cell_px": None if not np.isfinite(cell) else round(cell, 3), "n_max": n_max,
               "convention": convention, "seconds": round(time.perf_counter() - started, 3)}
    if plot:
        summary["figure"] = str(plot_maps(image, maps, valid, out.with_suffix(".png"), title=Path(image_path).name,
                                          kernel_px=kernel_px))
    return summary


def plot_maps(image, maps, valid, path, title: str = "", kernel_px: int | None = None) -> Path:
    """Image + seven maps on one figure (PNG); the border where the kernel leaves the image is shaded."""
    import matplotlib  # deferred: matplotlib is heavy; only --plot draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as matplotlib above

    fig, axes = plt.subplots(2, 4, figsize=(13, 6.5))
    panels = [("image", image, "gray", None)] + [
        (name, maps[i], "twilight" if name in ("sin2a", "cos2a") else "viridis",
         (-1, 1) if name in ("sin2a", "cos2a", "mirror") else (None, 1))
        for i, name in enumerate(pg.SYMMETRY_MAP_NAMES)]
    for ax, (name, data, cmap, lim) in zip(axes.ravel(), panels):
        kw = {} if lim is None else {"vmin": lim[0], "vmax": lim[1]}
        im = ax.imshow(np.asarray(data, float), cmap=cmap, **kw)
        if name != "image":
            ax.contour(~valid, levels=[0.5], colors="w", linewidths=0.6)
        ax.set_title(name)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    fig.suptitle(f"{title}  (kernel {kernel_px} px; outside the white line the kernel leaves the image)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
