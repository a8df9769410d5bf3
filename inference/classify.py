"""Classify every column of one image: lattice, columns, patches, features, model; then the report files.

``locate_sites`` (lattice + columns + sublattices, pure), ``classify_sites`` (features + model) and
``write_report`` (CSV, overlay PNG, JSON summary) are separate; ``run_classify`` ties them to files.

Which of the two fitted sublattices is the metal cannot be told from geometry (in projection they are
equivalent) nor safely from brightness (Ta/Se2 reverses between HAADF and MAADF, NOTES.md). With
``metal_sublattice="auto"`` both assignments are tried and the one under which the model gives the higher
mean log-probability to sublattice-consistent classes (metal sites: M or D; chalcogen sites: X2, VacX,
VacX2) is kept. The features do not depend on that choice (the site-symmetry flags follow brightness), so
the model runs once.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contract.classes import (
    CHALCOGEN_SITE_CLASSES,
    CLASS_COLOURS,
    CLASS_NAMES,
    DEFECT_CLASS_IDS,
    METAL,
    METAL_SITE_CLASSES,
    SUBLATTICES,
)

from .lattice import (
    border_flags,
    check_image,
    find_peaks,
    fit_lattice,
    lattice_constant_px,
    lattice_sites,
    snap_to_peaks,
)
from .patches import cut_patches, patch_half_width_px, site_features

SQRT3 = 3 ** 0.5


@dataclass
class Sites:
    """Sites of one image: (N, 2) (row, col) px, (N,) fitted-sublattice index (0/1), (N,) has_peak,
    (N,) on_border; the lattice estimates."""

    positions: np.ndarray
    fitted_sublattice: np.ndarray
    has_peak: np.ndarray
    on_border: np.ndarray
    lattice_constant_px: float
    autocorrelation_lattice_constant_px: float
    angle_deg: float
    fit_rms_px: float
    timings_s: dict = field(default_factory=dict)


def locate_sites(image: np.ndarray, smooth_sigma_fraction: float = 0.08) -> Sites:
    """Lattice constant (autocorrelation), peaks (min distance 0.35 a < a/√3), honeycomb fit, every site of
    both sublattices from the fit, snapped to its peak when one lies within 0.3 a/√3."""
    image = check_image(image)
    t0 = time.perf_counter()
    a0 = lattice_constant_px(image)
    t1 = time.perf_counter()
    peaks, _ = find_peaks(image, 0.35 * a0, smooth_sigma_px=max(smooth_sigma_fraction * a0, 0.5))
    t2 = time.perf_counter()
    fit = fit_lattice(peaks, a0)
    a = fit.lattice_constant_px
    sites, sub = lattice_sites(fit, image.shape)
    pos, has = snap_to_peaks(sites, peaks, 0.3 * a / SQRT3)
    t3 = time.perf_counter()
    return Sites(pos, sub, has, border_flags(pos, image.shape, patch_half_width_px(a)), a, a0, fit.angle_deg,
                 fit.rms_px, {"lattice": t1 - t0, "peaks": t2 - t1, "sites": t3 - t2})


def predict_probabilities(model, features: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """(N, 31) -> (N, 5) softmax probabilities (eval mode; the models are batch independent there)."""
    import torch

    from training.evaluate import predict_logits

    return torch.softmax(predict_logits(model, features, batch_size, "cpu"), dim=1).numpy()


def choose_metal_sublattice(probs: np.ndarray, fitted_sublattice: np.ndarray) -> int:
    """The fitted sublattice index (0/1) that is the metal one: higher mean log-probability of
    sublattice-consistent classes."""
    p_metal = probs[:, list(METAL_SITE_CLASSES)].sum(axis=1).clip(1e-12, 1)
    p_chal = probs[:, list(CHALCOGEN_SITE_CLASSES)].sum(axis=1).clip(1e-12, 1)
    score = [np.where(fitted_sublattice == m, np.log(p_metal), np.log(p_chal)).mean() for m in (0, 1)]
    return int(np.argmax(score))


def classify_sites(image: np.ndarray, sites: Sites, model, context: dict, patch_size_px: int,
                   metal_sublattice: str = "auto") -> dict:
    """Features and probabilities of every site. ``metal_sublattice``: ``auto`` (see the module docstring),
    ``brighter`` or ``dimmer``. Returns a dict of arrays: sublattice (0 metal, 1 chalcogen), probs (N, 5),
    label (N,), entropy (N,) nats, plus timings."""
    if metal_sublattice not in ("auto", "brighter", "dimmer"):
        raise ValueError(f"metal_sublattice must be auto, brighter or dimmer, got {metal_sublattice!r}")
    t0 = time.perf_counter()
    patches = cut_patches(image, sites.positions, sites.lattice_constant_px, patch_size_px)
    t1 = time.perf_counter()
    # the flags depend only on which sites are brighter, so sublattice 0/1 of the fit can stand in here
    feats = site_features(patches, sites.fitted_sublattice, metal=context["metal"], chalcogen=context["chalcogen"],
                          dopant=context["dopant"], detector=context["detector"],
                          beam_energy_kev=context["beam_energy_kev"])
    t2 = time.perf_counter()
    probs = predict_probabilities(model, feats)
    t3 = time.perf_counter()
    if metal_sublattice == "auto":
        metal = choose_metal_sublattice(probs, sites.fitted_sublattice)
    else:
        from features.site_symmetry import central_intensity

        centre = central_intensity(patches)
        bright = int(np.argmax([centre[sites.fitted_sublattice == s].mean() for s in (0, 1)]))
        metal = bright if metal_sublattice == "brighter" else 1 - bright
    sublattice = np.where(sites.fitted_sublattice == metal, METAL, 1 - METAL)
    entropy = -(probs * np.log(probs.clip(1e-30))).sum(axis=1)
    return {"sublattice": sublattice, "probs": probs, "label": probs.argmax(axis=1), "entropy": entropy,
            "features": feats, "timings_s": {"patches": t1 - t0, "features": t2 - t1, "model": t3 - t2}}


def summarise(sites: Sites, result: dict, image_shape, pixel_size_angstrom: float) -> dict:
    """Per-class counts and defect densities (per nm²) over the sites not on the border; the counted area
    is the image minus the border margin."""
    inner = ~sites.on_border
    counts = {name: int((result["label"][inner] == c).sum()) for c, name in enumerate(CLASS_NAMES)}
    margin = patch_half_width_px(sites.lattice_constant_px)
    h, w = image_shape
    area_nm2 = max(h - 1 - 2 * margin, 0) * max(w - 1 - 2 * margin, 0) * (pixel_size_angstrom / 10) ** 2
    density = {name: (counts[name] / area_nm2 if area_nm2 > 0 else None)
               for c, name in enumerate(CLASS_NAMES) if c in DEFECT_CLASS_IDS}
    return {"n_sites": int(len(inner)), "n_counted": int(inner.sum()), "n_border": int((~inner).sum()),
            "n_sites_without_peak": int((~sites.has_peak).sum()), "counts": counts,
            "defect_density_per_nm2": density, "counted_area_nm2": area_nm2}


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 8))
    ax.imshow(image, cmap="gray")
    for c, name in enumerate(CLASS_NAMES):
        sel = result["label"] == c
        inner, border = sel & ~sites.on_border, sel & sites.on_border
        ax.scatter(sites.positions[inner, 1], sites.positions[inner, 0], s=18, facecolors="none",
                   edgecolors=CLASS_COLOURS[c], linewidths=1.2, label=f"{name} ({int(inner.sum())})")
        ax.scatter(sites.positions[border, 1], sites.positions[border, 0], s=18, marker="x", c=CLASS_COLOURS[c],
                   linewidths=0.6, alpha=0.5)
    ax.set_title("columns by class (x: border, not counted)")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_axis_off()
    fig.savefig(out / "overlay.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return {k: str(out / f) for k, f in (("csv", "sites.csv"), ("overlay", "overlay.png"), ("summary", "summary.json"))}


def model_patch_size(data_hparams: dict, override: int | None) -> int:
    """The model's patch size: the override, else the ``patch_size_px`` of the store it was trained on."""
    from .io import InputError

    if override is not None:
        return int(override)
    store = data_hparams.get("store")
    if store:
        from contract.store import read_meta

        try:
            size = read_meta(store, require=()).patch_size_px
        except InputError:
            size = None
        if size is not None:
            return int(size)
    raise InputError(f"cannot read the model's patch size from its training store {store!r}: "
                     "give --patch-size-px (the store's patch_size_px, e.g. 33)")


def run_classify(image_path, ckpt, out_dir, *, host=None, dopant=None, beam_energy_kev=None, detector=None,
                 pixel_size_angstrom=None, patch_size_px=None, metal_sublattice="auto", catalog=None) -> dict:
    """Load, check, locate, classify, write. Returns the summary dict (also in ``summary.json``).
    ``catalog``: a catalog YAML (default: the shipped ``contract/catalog.yaml``)."""
    from contract.catalog import load_catalog

    from .io import InputError, load_image, resolve_context

    t_start = time.perf_counter()
    image, file_meta = load_image(image_path)
    ctx = resolve_context(file_meta, {"host": host, "dopant": dopant, "beam_energy_kev": beam_energy_kev,
                                      "detector": detector, "pixel_size_angstrom": pixel_size_angstrom},
                          load_catalog(catalog))
    if not Path(ckpt).is_file():
        raise InputError(f"--model {ckpt}: checkpoint file not found")
    from training.evaluate import load_checkpoint

    model, data_hparams = load_checkpoint(ckpt)
    p = model_patch_size(data_hparams, patch_size_px)
    t_load = time.perf_counter()
    try:
        sites = locate_sites(image)
    except ValueError as err:
        raise InputError(f"{Path(image_path).name}: {err}") from None
    a_cat = ctx["catalog_lattice_constant_angstrom"]
    pixel = ctx["pixel_size_angstrom"]
    notes = []
    if pixel is None:
        pixel = a_cat / sites.lattice_constant_px
        notes.append(f"pixel size inferred from the catalog lattice constant {a_cat} Å and the image lattice "
                     f"({sites.lattice_constant_px:.3f} px): {pixel:.5f} Å")
    a_img = sites.lattice_constant_px * pixel
    if abs(a_img / a_cat - 1) > 0.05:
        notes.append(f"lattice constant from the image {a_img:.4f} Å differs from the catalog's {a_cat} Å by "
                     f"{100 * (a_img / a_cat - 1):+.1f} %: check the pixel size")
    result = classify_sites(image, sites, model, ctx, p, metal_sublattice)
    summary = {"image": str(image_path), "model": str(ckpt), "context": {k: v for k, v in ctx.items()
                                                                         if k != "pixel_size_angstrom"},
               "pixel_size_angstrom": pixel, "pixel_size_source": "given" if ctx["pixel_size_angstrom"] else "inferred",
               "image_shape": list(image.shape), "patch_size_px": p,
               "lattice_constant_angstrom_image": a_img, "lattice_constant_angstrom_catalog": a_cat,
               "lattice_constant_px": sites.lattice_constant_px,
               "lattice_constant_px_autocorrelation": sites.autocorrelation_lattice_constant_px,
               "lattice_angle_deg": sites.angle_deg, "lattice_fit_rms_px": sites.fit_rms_px,
               "metal_sublattice_rule": metal_sublattice, "border_margin_px": patch_half_width_px(sites.lattice_constant_px),
               "notes": notes}
    summary.update(summarise(sites, result, image.shape, pixel))
    t_write = time.perf_counter()
    summary["timings_s"] = {"load": t_load - t_start, **sites.timings_s, **result["timings_s"]}
    write_report(out_dir, image, sites, result, summary)
    summary["timings_s"]["write"] = time.perf_counter() - t_write
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
