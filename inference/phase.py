"""Plane-group phase of micrographs: ``python -m inference phase IMAGE [IMAGE ...] --model CKPT --out DIR``.

Per image (any format ``inference.io.load_image`` reads, any size), in its own folder ``DIR/<file stem>/``:

1. the primitive cell is measured (``kernels.cell``); if it lies outside the cell sizes the model was trained
   on, the image is resampled (linear) so that its cell matches the training median (``--cell-px`` overrides
   the measurement);
2. for the symmetry arm, the seven maps are computed on the whole image with the model's map settings and a
   kernel from the cell (``--kernel-px`` overrides);
3. patches of the model's size slide over the image (stride ``--stride-px``, default half a patch), inside the
   region where the kernel lies within the image when it can hold a patch;
4. each patch gets the softmax over the 17 groups; the image-level ``plane_group`` is the arg-max of their mean,
   and each pixel gets the mean softmax of the patches covering it (the plane-group map).

Written: ``summary.json`` (``plane_group`` in full Hermann-Mauguin form, ``probabilities`` per group,
``confident``, the cell, kernel, resampling and patch counts, notes), ``plane_group_map.png`` (image, map of
the most likely group per pixel, its probability) and ``plane_group_map.npy`` ((H, W) int8 group index of the
input image's pixels, -1 where no patch reached). An answer is marked not confident when the mean probability
of the top group is below 0.5 or within 0.1 of the second.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from contract.errors import InputError
from contract.planegroups import N_PLANE_GROUPS, PLANE_GROUPS
from contract.jsonio import json_text
from kernels.cell import measure_cell
from kernels.symmetry import kernel_px_for_cell, symmetry_maps, valid_mask
from training.phase_model import load_classifier, predict_patches

from .io import image_folders, load_image

CONFIDENT_PROBABILITY = 0.5
CONFIDENT_MARGIN = 0.1


def _geometry(model) -> dict:
    geo = model.hparams.get("geometry")
    if not geo or "patch_size_px" not in geo:
        raise InputError("the checkpoint carries no training geometry (patch size, map settings): retrain it with "
                         "`python -m training phase fit`")
    return geo


def prepare_image(image: np.ndarray, geo: dict, cell_px: float | None = None) -> tuple[np.ndarray, dict]:
    """Resample ``image`` so its cell lies in the training range; returns (image, facts)."""
    facts: dict = {"notes": []}
    measured = None
    if cell_px is None:
        try:
            measured = measure_cell(image).size_px
        except ValueError as err:
            facts["notes"].append(f"cell not measured ({err}); image used at its own scale")
    else:
        measured = float(cell_px)
    facts["cell_px"] = None if measured is None else round(measured, 3)
    factor = 1.0
    lo_hi = geo.get("cell_px_range")
    median = geo.get("cell_px_median")
    if measured is not None and lo_hi and median and not (lo_hi[0] <= measured <= lo_hi[1]):
        factor = median / measured
        image = ndimage.zoom(image, factor, order=1)
        facts["notes"].append(f"cell {measured:.1f} px outside the training range {lo_hi[0]:.1f}-{lo_hi[1]:.1f} px: "
                              f"resampled by {factor:.3f}")
    facts["resample_factor"] = round(factor, 6)
    facts["cell_px_model_scale"] = None if measured is None else round(measured * factor, 3)
    return image, facts


def classify_image(image: np.ndarray, model, cell_px: float | None = None, kernel_px: int | None = None,
                   stride_px: int | None = None) -> dict:
    """Pure core for one (H, W) image: probabilities per patch, image-level group, per-pixel map (input grid)."""
    geo = _geometry(model)
    patch = int(geo["patch_size_px"])
    work, facts = prepare_image(np.asarray(image, np.float64), geo, cell_px)
    h, w = work.shape
    if min(h, w) < patch:
        raise InputError(f"image is {image.shape[0]}x{image.shape[1]} px ({h}x{w} at the model's scale), smaller "
                         f"than the model's {patch} px patches")
    arm = model.hparams["arm"]
    settings = geo.get("map_settings") or {}
    if kernel_px is None:
        cell = facts["cell_px_model_scale"] or geo.get("cell_px_median") or patch / 4
        kernel_px = kernel_px_for_cell(cell, max_px=min(h, w) // 2)
    elif arm == "symmetry" and not 0 < kernel_px <= min(h, w):  # a kernel wider than the image has no centre
        raise InputError(f"--kernel-px {kernel_px} does not fit the image ({h}x{w} px at the model's scale): use an odd "
                         f"size up to {min(h, w) - 1 + min(h, w) % 2}")
    facts["kernel_px"] = int(kernel_px)
    channels = [(work - work.mean()) / max(work.std(), 1e-12)]
    if arm == "symmetry":
        try:
            maps = symmetry_maps(work, kernel_px, int(settings.get("n_max", 10)),
                                 settings.get("convention", "zero-mean"), np.float32)
        except ValueError as err:
            raise InputError(f"symmetry maps: {err}") from None
        channels += list(maps)
    stack = torch.from_numpy(np.stack(channels).astype(np.float32))
    valid = valid_mask((h, w), kernel_px) if arm == "symmetry" else np.ones((h, w), bool)
    rows, cols = np.where(valid)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    if r1 - r0 < patch or c1 - c0 < patch:  # the valid region cannot hold a patch: use the whole image
        r0, r1, c0, c1 = 0, h, 0, w
        facts["notes"].append("the image is too small for patches clear of the map border; border pixels used")
    stride = int(stride_px or max(1, patch // 2))
    ys = _positions(r0, r1 - patch, stride)
    xs = _positions(c0, c1 - patch, stride)
    corners = [(y, x) for y in ys for x in xs]
    patches = []
    for y, x in corners:
        p = stack[:, y:y + patch, x:x + patch].clone()
        p[0] = (p[0] - p[0].mean()) / p[0].std().clamp_min(1e-6)  # the image channel as in training
        patches.append(p)
    probs = predict_patches(model.model, torch.stack(patches)).numpy()
    mean = probs.mean(axis=0)
    votes = np.zeros((N_PLANE_GROUPS, h, w))
    cover = np.zeros((h, w))
    for (y, x), p in zip(corners, probs):
        votes[:, y:y + patch, x:x + patch] += p[:, None, None]
        cover[y:y + patch, x:x + patch] += 1
    pixel_probs = np.divide(votes, cover, out=np.zeros_like(votes), where=cover > 0)
    group_map = np.where(cover > 0, pixel_probs.argmax(axis=0), -1)
    confidence = np.where(cover > 0, pixel_probs.max(axis=0), 0.0)
    if facts["resample_factor"] != 1.0:  # back onto the input grid
        zoom = (image.shape[0] / h, image.shape[1] / w)
        group_map = ndimage.zoom(group_map, zoom, order=0)
        confidence = ndimage.zoom(confidence, zoom, order=1)
    order = np.argsort(mean)[::-1]
    top, second = float(mean[order[0]]), float(mean[order[1]])
    return {
        "plane_group": PLANE_GROUPS[int(order[0])],
        "probability": round(top, 4),
        "confident": bool(top >= CONFIDENT_PROBABILITY and top - second >= CONFIDENT_MARGIN),
        "probabilities": {g: round(float(mean[i]), 5) for i, g in enumerate(PLANE_GROUPS)},
        "patch_votes": {PLANE_GROUPS[i]: int(c) for i, c in enumerate(np.bincount(probs.argmax(1),
                                                                                      minlength=N_PLANE_GROUPS)) if c},
        "n_patches": len(corners), "patch_size_px": patch, "stride_px": stride, "arm": arm, **facts,
        "_map": group_map.astype(np.int8), "_confidence": confidence.astype(np.float32),
    }


def _positions(lo: int, hi: int, stride: int) -> list[int]:
    if hi <= lo:
        return [max(0, lo)]
    pos = list(range(lo, hi + 1, stride))
    if pos[-1] != hi:
        pos.append(hi)  # reach the last pixels
    return pos


def plot_result(image: np.ndarray, result: dict, path: Path, title: str) -> Path:
    import matplotlib  # deferred: matplotlib is heavy; only the figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as matplotlib above
    from matplotlib.colors import ListedColormap  # deferred: as matplotlib above

    cmap = ListedColormap(plt.get_cmap("tab20").colors[:N_PLANE_GROUPS])
    group_map = result["_map"].astype(float)
    group_map[group_map < 0] = np.nan
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    axes[0].imshow(image, cmap="gray")
    axes[0].set_title(title)
    axes[1].imshow(image, cmap="gray")
    axes[1].imshow(group_map, cmap=cmap, vmin=-0.5, vmax=N_PLANE_GROUPS - 0.5, alpha=0.45, interpolation="nearest")
    present = sorted({int(v) for v in np.unique(result["_map"]) if v >= 0})
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)) for i in present]
    axes[1].legend(handles, [PLANE_GROUPS[i] for i in present], loc="upper right", fontsize=8, framealpha=0.8)
    verdict = "" if result["confident"] else " (not confident)"
    axes[1].set_title(f"plane group: {result['plane_group']} p={result['probability']:.2f}{verdict}")
    im = axes[2].imshow(result["_confidence"], vmin=0, vmax=1, cmap="magma")
    axes[2].set_title("probability of the most likely group")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_phase(images: list[str], model_path: str, out_dir: str, *, cell_px: float | None = None,
              kernel_px: int | None = None, stride_px: int | None = None) -> list[dict]:
    """Classify every image; one folder per image under ``out_dir``. Every input is checked before any work."""
    model = load_classifier(model_path)
    _geometry(model)
    summaries = []
    for path, folder in image_folders(images, out_dir):
        image, meta = load_image(path)
        folder.mkdir(parents=True, exist_ok=True)
        try:
            result = classify_image(image, model, cell_px=cell_px, kernel_px=kernel_px, stride_px=stride_px)
        except InputError as err:
            raise InputError(f"{path.name}: {err}") from None
        np.save(folder / "plane_group_map.npy", result["_map"])
        plot_result(image, result, folder / "plane_group_map.png", path.name)
        summary = {"image": str(path), "model": str(model_path), "shape_px": list(image.shape),
                   **{k: v for k, v in result.items() if not k.startswith("_")},
                   "files": {"map": "plane_group_map.npy", "figure": "plane_group_map.png"}}
        (folder / "summary.json").write_text(json_text(summary, indent=1))
        summaries.append({**summary, "folder": str(folder)})
    return summaries
