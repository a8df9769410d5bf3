"""The class figure of a classified frame (``classes.png``), as the paper's Fig. 6c lets a reader check it by eye:
per predicted class the mean patch with its count and density, and per sublattice the histogram of central
intensities coloured by predicted class, with the class means and the class-order verdict in the title."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after the backend choice)
import numpy as np  # noqa: E402

from contract.classes import CHALCOGEN_SITE_CLASSES, CLASS_COLOURS, CLASS_NAMES, METAL_SITE_CLASSES  # noqa: E402


def write_class_figure(path, patches: np.ndarray, centre: np.ndarray, label: np.ndarray, summary: dict) -> str:
    """``patches`` (N, P, P), ``centre`` (N,) and ``label`` (N,) of the counted sites; ``summary`` gives counts,
    densities and the class-order check. Returns the path written."""
    density = summary.get("defect_density_per_nm2") or {}
    order = summary.get("class_order") or {}
    fig = plt.figure(figsize=(11, 6.2))
    grid = fig.add_gridspec(2, len(CLASS_NAMES), height_ratios=[1, 1.15], hspace=0.45, wspace=0.25)
    finite = np.isfinite(centre)
    lo, hi = (np.percentile(centre[finite], [0.5, 99.5]) if finite.any() else (0.0, 1.0))
    for c, name in enumerate(CLASS_NAMES):
        ax = fig.add_subplot(grid[0, c])
        sel = label == c
        if sel.any():
            ax.imshow(patches[sel].mean(axis=0), cmap="gray", vmin=lo, vmax=hi)
        else:
            ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
        d = density.get(name)
        ax.set_title(f"{name}: {int(sel.sum())}" + (f"\n{d:.3f} /nm²" if d is not None else "\n"), fontsize=9,
                     color=CLASS_COLOURS[c])
        ax.set_axis_off()
    bins = np.linspace(lo, hi, 60) if hi > lo else 30
    for k, (title, classes) in enumerate((("metal sublattice", METAL_SITE_CLASSES),
                                          ("chalcogen sublattice", CHALCOGEN_SITE_CLASSES))):
        ax = fig.add_subplot(grid[1, k * 3:k * 3 + (2 if k == 0 else 2)])
        for c in classes:
            v = centre[label == c]
            if len(v):
                ax.hist(v, bins=bins, color=CLASS_COLOURS[c], alpha=0.6, label=f"{CLASS_NAMES[c]} ({len(v)})")
                ax.axvline(v.mean(), color=CLASS_COLOURS[c], lw=1.5)
        ax.set_title(f"{title}: central intensity by predicted class (lines: means)", fontsize=9)
        ax.set_xlabel("mean of the 3x3 centre pixels (image units)", fontsize=8)
        ax.legend(fontsize=8)
    verdict = ("class order: as physics expects" if order.get("ok", True) else
               "CLASS ORDER VIOLATED: " + "; ".join(f"{v['dimmer']} not dimmer than {v['brighter']}"
                                                   for v in order.get("violations", [])))
    fig.suptitle(f"{Path(str(summary.get('image', ''))).name}: mean patch per class; {verdict}", fontsize=10,
                 color="k" if order.get("ok", True) else "red")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)
