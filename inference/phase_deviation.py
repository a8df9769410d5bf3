"""Measured plane group of micrographs: ``python -m inference phase IMAGE [IMAGE ...] --method deviation --out DIR``.

No model: per image (any format ``inference.io.load_image`` reads) the lattice is measured, the image is averaged
over its unit cells and the group is chosen by the symmetry deviations of that average and the geometric AIC
(``kernels.planegroup_deviation``, docs/planegroups.md). Per image, in ``DIR/<file stem>/``:

* ``summary.json``: ``plane_group`` and ``runner_up`` with their criterion values, the criterion and deviation of
  every group the lattice allows, each operation of the chosen group with its residual and the residual the
  measured noise alone would give, the noise level, the refined lattice, cells averaged, pseudo-translations
  broken, notes;
* ``cell_average.png``: the cell average on 2 x 2 cells with the chosen group's symmetry elements (rotation
  centres by order, mirror lines solid, glide lines dashed) and the criterion of the first groups.

An image where no lattice can be measured is refused (exit 2) with the reason.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from contract.errors import InputError
from contract.jsonio import json_text
from kernels.planegroup_deviation import DeviationResult, classify_plane_group

from .io import image_folders, load_image


def summarise(result: DeviationResult) -> dict:
    """The JSON-ready facts of one classification (criterion values relative to the cell average's energy)."""
    ranked = sorted(result.criterion, key=result.criterion.get)
    ops = [{"kind": op.kind, "order": op.order, "W": op.W.tolist(), "w": [round(float(v), 4) for v in op.w],
            "residual": round(op.residual, 6), "noise_expected_residual": round(op.expected, 6)}
           for op in result.operations]
    return {
        "plane_group": result.plane_group,
        "criterion": round(result.criterion[result.plane_group], 6),
        "runner_up": result.runner_up,
        "runner_up_criterion": (round(result.criterion[result.runner_up], 6) if result.runner_up in result.criterion
                                else None),  # None: the runner-up needs another cell (pseudo-translation)
        "ranking": ranked,
        "criterion_by_group": {g: round(result.criterion[g], 6) for g in ranked},
        "deviation_by_group": {g: round(result.deviation[g], 6) for g in ranked},
        "operations": ops,
        "noise": round(result.noise, 6),
        "n_coefficients": result.n_coefficients,
        "cells_averaged": round(result.n_cells, 1),
        "lattice_px": np.round(result.basis_px, 3).tolist(),
        "lattice_point_group_order": result.isometries,
        "superlattice_index": result.superlattice,
        "origin_fractional": [round(float(v), 4) for v in result.origin],
        "criterion_note": "geometric AIC relative to the cell average's energy: deviation J(G) + 2 (n/|G|) "
                          "(noise + floor); the lowest wins",
    }


def symmetry_elements(result: DeviationResult, cells: int = 2) -> tuple[list, list]:
    """Rotation centres [(x, y, order)] and reflection lines [((x0, y0), (x1, y1), 'mirror'|'glide')] in px of the
    cell-average frame, over ``cells`` x ``cells`` cells."""
    a = result.basis_px.T
    centres, lines = [], []
    span = range(-cells - 1, cells + 2)
    for op in result.operations:
        eye = np.eye(2)
        if op.kind == "rotation":
            for lv in itertools.product(span, repeat=2):
                f = np.linalg.solve(eye - op.W, op.w + np.array(lv))
                if np.all(f > -1e-6) and np.all(f < cells + 1e-6):
                    centres.append((*(a @ f), op.order))
        elif op.kind in ("mirror", "glide"):
            vals, vecs = np.linalg.eig(op.W.astype(float))
            axis = np.real(vecs[:, np.argmax(np.real(vals))])
            for lv in itertools.product(span, repeat=2):
                shift = op.w + np.array(lv)
                glide = (eye + op.W) @ shift / 2
                perp = (eye - op.W) @ shift / 2
                kind = "mirror" if np.allclose(glide, np.round(glide), atol=0.1) else "glide"
                p0 = a @ (perp / 2)
                d = a @ axis
                d = d / np.hypot(*d) * 3 * cells * np.hypot(*a.T).max()
                lines.append((tuple(p0 - d), tuple(p0 + d), kind))
    centres = list({(round(x, 2), round(y, 2), n) for x, y, n in centres})
    lines = list({tuple(np.round(np.ravel([l[0], l[1]]), 2)) + (l[2],) for l in lines})
    return centres, [((l[0], l[1]), (l[2], l[3]), l[4]) for l in lines]


def plot_cell_average(result: DeviationResult, path: Path, title: str, cells: int = 2) -> Path:
    import matplotlib  # deferred: heavy, only the figure needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: as matplotlib above
    from scipy import ndimage  # deferred: only the figure resamples

    a = result.basis_px.T
    corners = np.array([a @ np.array(c) for c in ((0, 0), (cells, 0), (cells, cells), (0, cells))])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    step = 0.25
    xs, ys = np.arange(lo[0], hi[0] + step, step), np.arange(lo[1], hi[1] + step, step)
    xx, yy = np.meshgrid(xs, ys)
    frac = np.linalg.solve(a, np.stack([xx.ravel(), yy.ravel()]))
    n = result.motif.shape[0]
    values = ndimage.map_coordinates(result.motif, frac * n, order=1, mode="grid-wrap").reshape(xx.shape)
    inside = np.all((frac > -1e-9) & (frac < cells + 1e-9), axis=0).reshape(xx.shape)
    values = np.where(inside, values, np.nan)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.4), gridspec_kw={"width_ratios": [1.3, 1]})
    ax = axes[0]
    ax.imshow(values, cmap="gray", origin="upper", extent=(xs[0], xs[-1], ys[-1], ys[0]))
    ax.plot(*np.vstack([corners, corners[:1]]).T, color="tab:blue", lw=0.8)
    centres, lines = symmetry_elements(result, cells)
    for (x0, y0), (x1, y1), kind in lines:
        ax.plot([x0, x1], [y0, y1], color="tab:red" if kind == "mirror" else "tab:orange",
                ls="-" if kind == "mirror" else "--", lw=1.2)
    markers = {2: ("o", "tab:green"), 3: ("^", "tab:purple"), 4: ("s", "tab:cyan"), 6: ("h", "tab:pink")}
    for order in (2, 3, 4, 6):  # a higher-order centre covers the 2-fold at the same point
        pts = [(x, y) for x, y, o in centres if o == order]
        if pts:
            ax.scatter(*np.array(pts).T, marker=markers[order][0], color=markers[order][1], s=45, zorder=3,
                       edgecolor="k", label=f"{order}-fold")
    ax.plot([], [], color="tab:red", label="mirror")
    ax.plot([], [], color="tab:orange", ls="--", label="glide")
    ax.set_xlim(lo[0] - 1, hi[0] + 1)
    ax.set_ylim(hi[1] + 1, lo[1] - 1)
    ax.set_aspect("equal")
    ax.set_xlabel("x (px of the image)")
    ax.set_ylabel("y (px of the image)")
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    ax.set_title(f"{title}: {result.plane_group} (runner-up {result.runner_up}), {result.n_cells:.0f} cells averaged",
                 fontsize=9)
    ranked = sorted(result.criterion, key=result.criterion.get)[:8]
    axes[1].barh(range(len(ranked))[::-1], [result.criterion[g] for g in ranked], color="tab:gray",
                 label="G-AIC")
    axes[1].barh(range(len(ranked))[::-1], [result.deviation[g] for g in ranked], color="tab:red", alpha=0.6,
                 label="deviation J")
    axes[1].set_yticks(range(len(ranked))[::-1], ranked)
    axes[1].set_xlabel("relative to the cell average's energy")
    axes[1].set_title(f"lowest G-AIC wins (noise {result.noise:.3g})", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_phase_deviation(images: list[str], out_dir: str) -> list[dict]:
    """Measure the plane group of every image; one folder per image under ``out_dir``. Every file is checked first."""
    summaries = []
    for path, folder in image_folders(images, out_dir):
        image, _ = load_image(path)
        try:
            result = classify_plane_group(image)
        except ValueError as err:
            raise InputError(f"{path.name}: no plane group measured: {err}") from None
        folder.mkdir(parents=True, exist_ok=True)
        plot_cell_average(result, folder / "cell_average.png", path.name)
        summary = {"image": str(path), "method": "deviation", "shape_px": list(np.shape(image)),
                   **summarise(result), "files": {"figure": "cell_average.png"}}
        (folder / "summary.json").write_text(json_text(summary, indent=1))
        summaries.append({**summary, "folder": str(folder)})
    return summaries
