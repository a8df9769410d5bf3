"""The report files of one classified image: ``sites.csv``, ``overlay.png``, ``classes.png`` and
``summary.json`` (``write_report``), moved into place together when finished (``publish``)."""
from __future__ import annotations

import csv
import shutil
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after the backend choice)
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from contract.classes import CLASS_COLOURS, CLASS_NAMES, SUBLATTICES  # noqa: E402
from contract.jsonio import json_text  # noqa: E402

from .class_figure import write_class_figure  # noqa: E402
from .sites import Sites  # noqa: E402
from .summary import report_warnings  # noqa: E402


def write_report(out_dir, image: np.ndarray, sites: Sites, result: dict, summary: dict) -> dict:
    """``sites.csv``, ``overlay.png`` and ``summary.json`` under ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    px = summary["pixel_size_angstrom"]
    with open(out / "sites.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x_px", "y_px", "x_angstrom", "y_angstrom", "sublattice", "label", "class_name",
                    *[f"p_{n}" for n in CLASS_NAMES], "entropy_nats", "has_peak", "on_border"])
        for i, (r, c) in enumerate(sites.positions):
            w.writerow([f"{c:.3f}", f"{r:.3f}", f"{c * px:.4f}", f"{r * px:.4f}",
                        SUBLATTICES[int(result["sublattice"][i])], int(result["label"][i]),
                        CLASS_NAMES[int(result["label"][i])], *[f"{p:.6f}" for p in result["probs"][i]],
                        f"{result['entropy'][i]:.6f}", int(sites.has_peak[i]), int(sites.on_border[i])])
    matplotlib.use("Agg")
    h, w_ = image.shape
    size = 8 if max(h, w_) <= 1200 else 12
    fig, ax = plt.subplots(figsize=(size, size))
    # shown as block means at about the figure's resolution (matplotlib resamples a 2048² image slowly)
    f = max(int(np.ceil(max(h, w_) / (size * 100))), 1)
    hb, wb = h // f, w_ // f
    extent = (-0.5, wb * f - 0.5, hb * f - 0.5, -0.5)
    ax.imshow(image[:hb * f, :wb * f].reshape(hb, f, wb, f).mean(axis=(1, 3)), cmap="gray", extent=extent,
              interpolation="nearest")
    if sites.lattice_mask is not None and (~sites.lattice_mask).any():
        masked = ~sites.lattice_mask[:hb * f:f, :wb * f:f]
        ax.imshow(np.ma.masked_where(~masked, np.ones(masked.shape, np.uint8)), cmap=ListedColormap(["#d91a99"]),
                  alpha=0.35, interpolation="nearest", extent=extent)
    marker = max(4.0, min(18.0, 18 * (sites.lattice_constant_px / 25) ** 2 * (1000 / max(h, w_)) ** 2))
    for c, name in enumerate(CLASS_NAMES):
        sel = result["label"] == c
        inner, border = sel & ~sites.on_border, sel & sites.on_border
        ax.scatter(sites.positions[inner, 1], sites.positions[inner, 0], s=marker, facecolors="none",
                   edgecolors=CLASS_COLOURS[c], linewidths=1.0, label=f"{name} ({int(inner.sum())})")
        ax.scatter(sites.positions[border, 1], sites.positions[border, 0], s=marker, marker="x", c=CLASS_COLOURS[c],
                   linewidths=0.6, alpha=0.5)
    title = "columns by class (x: border, not counted; shaded: no lattice, masked)"
    unc = summary.get("uncertainty", {})
    warnings = report_warnings(summary)
    if summary.get("unseen_context"):
        title = "UNSEEN CONTEXT (--allow-unseen-context): " + title
    for line in warnings:  # wrapped: a long warning ran off both sides of the figure
        title += "\n" + "\n".join(textwrap.wrap(line, 110))
    ax.set_title(title, fontsize=9, color="red" if summary.get("unseen_context") or warnings else "k")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_axis_off()
    ax.set_xlim(-0.5, w_ - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    # room above the image for every title line (about 0.02 of the figure height each)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.97 - 0.02 * title.count("\n"))
    fig.savefig(out / "overlay.png", dpi=100)
    plt.close(fig)
    inner = ~sites.on_border
    write_class_figure(out / "classes.png", result["patches"][inner], result["centre"][inner],
                       result["label"][inner], summary)
    (out / "summary.json").write_text(json_text(summary, indent=2))
    return {k: str(out / f) for k, f in (("csv", "sites.csv"), ("overlay", "overlay.png"), ("classes", "classes.png"),
                                         ("summary", "summary.json"))}


def publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished report files from ``tmp`` into ``out_dir`` (created now, not before)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        shutil.move(str(f), str(out_dir / f.name))
