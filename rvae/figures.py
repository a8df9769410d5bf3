"""Figures of rVAE outputs (matplotlib, Agg): per-atom overlays for ADF images, scan maps for 4D-STEM, the
decoded latent traversal. I/O only: every value comes from the caller."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _plt():
    import matplotlib  # deferred: matplotlib is heavy; loaded once a figure is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as matplotlib above

    return plt


def _save(fig, out: Path, title: str = "", dpi: int = 110) -> Path:
    """Title, tight layout, write ``out`` and free the figure."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    _plt().close(fig)
    return out


def atom_overlays(image: np.ndarray, positions: np.ndarray, values: dict[str, np.ndarray], out: Path,
                  cyclic: tuple[str, ...] = ("angle",), title: str = "") -> Path:
    """One panel per value: the image in grey with every atom as a dot coloured by the value (cyclic colour map
    for angles)."""
    plt = _plt()
    names = list(values)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.imshow(image, cmap="gray", interpolation="nearest")
        v = np.asarray(values[name], dtype=np.float64)
        cmap = "twilight" if name in cyclic else "viridis"
        lo, hi = (np.nanmin(v), np.nanmax(v)) if name not in cyclic else (-np.pi, np.pi)
        sc = ax.scatter(positions[:, 1], positions[:, 0], c=v, s=9, cmap=cmap, vmin=lo, vmax=hi, linewidths=0)
        fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(name)
        ax.set_axis_off()
    return _save(fig, out, title)


def scan_maps(maps: dict[str, np.ndarray], out: Path, cyclic: tuple[str, ...] = ("angle", "com_direction"),
              title: str = "", markers: np.ndarray | None = None) -> Path:
    """One panel per (scan y, scan x) map; ``markers`` (D, 2) (row, col) scan pixels drawn on every panel."""
    plt = _plt()
    names = list(maps)
    cols = min(4, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    for ax, name in zip(axes.ravel(), names):
        m = np.asarray(maps[name], dtype=np.float64)
        kw = {"cmap": "twilight", "vmin": -np.pi, "vmax": np.pi} if name in cyclic else {"cmap": "magma"}
        im = ax.imshow(m, interpolation="nearest", **kw)
        if markers is not None and len(markers):
            ax.scatter(markers[:, 1], markers[:, 0], s=60, facecolors="none", edgecolors="cyan", linewidths=1)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    return _save(fig, out, title)


def latent_traversal(module, z: np.ndarray, out: Path, steps: int = 7) -> Path:
    """The decoded canonical item (φ = 0, no shift) over a grid of the first two latents, each spanning the
    5th-95th percentile of the encoded values (the others at their median)."""
    plt = _plt()
    k = z.shape[1]
    if k == 0:
        return out
    lo, hi = np.percentile(z, 5, axis=0), np.percentile(z, 95, axis=0)
    med = np.median(z, axis=0)
    a = np.linspace(lo[0], hi[0], steps)
    b = np.linspace(lo[1], hi[1], steps) if k > 1 else np.array([med[0]])
    grid = np.tile(med, (len(b) * len(a), 1))
    grid[:, 0] = np.tile(a, len(b))
    if k > 1:
        grid[:, 1] = np.repeat(b, len(a))
    with torch.no_grad():
        dev = next(module.parameters()).device
        imgs = module.model.canonical(torch.as_tensor(grid, dtype=torch.float32, device=dev)).cpu().numpy()
    fig, axes = plt.subplots(len(b), len(a), figsize=(1.3 * len(a), 1.3 * len(b)), squeeze=False)
    for ax, img in zip(axes.ravel(), imgs):
        ax.imshow(img, cmap="gray")
        ax.set_axis_off()
    return _save(fig, out, "decoded canonical items: z1 across" + (", z2 down" if k > 1 else ""), dpi=100)
