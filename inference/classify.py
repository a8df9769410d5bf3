"""Classify every column of one image: lattice, columns, patches, features, model; then the report files.

``locate_sites`` (local lattice, columns, sublattices, lattice area: pure), ``lattice_refusal`` (is there a
lattice worth classifying?), ``classify_sites`` (features + model) and ``write_report`` (CSV, overlay PNG,
JSON summary) are separate; ``run_classify`` ties them to files. Every check that can refuse an input (the
image, its context, the checkpoint, the model's training cases, the lattice) runs before anything is written:
a refused input leaves ``--out`` untouched, and the report files appear together at the end.

Which of the two sublattices is the metal cannot be told from geometry (in projection they are equivalent)
nor safely from brightness (the metal column is the brighter in HAADF, the chalcogen pair can be in MAADF: WSe2
at 60 keV in docs/frame-matching.md, "Blur calibration"). With
``metal_sublattice="auto"`` both assignments are tried and the one under which the model gives the higher
mean log-probability to sublattice-consistent classes (metal sites: M or D; chalcogen sites: X2, VacX,
VacX2) is kept. The features do not depend on that choice (the site-symmetry flags follow brightness), so
the model runs once.
"""
from __future__ import annotations

import csv
import dataclasses
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from contract.classes import (
    CHALCOGEN_SITE_CLASSES,
    CLASS_COLOURS,
    CLASS_IDS,
    CLASS_NAMES,
    DEFECT_CLASS_IDS,
    METAL,
    METAL_SITE_CLASSES,
    SUBLATTICES,
)
from contract.context import absent_classes
from contract.errors import InputError, UnseenContextError
from contract.features import SITE_SYMMETRY_RULE_VERSION
from contract.jsonio import json_text
from features.site_symmetry import central_intensity, typical_intensities

from .calibration import choose_pixel_size
from .checks import class_order_check, describe_violations, site_symmetry_check
from .class_figure import write_class_figure
from .lattice import border_flags, check_image, clip_outliers, lattice_constant_candidates_px, locate_columns
from .patches import cut_patches, patch_half_width_px, site_features

SQRT3 = 3 ** 0.5

HIGH_ENTROPY_NATS = 0.5
"""A site whose posterior entropy exceeds this (two classes at about 80/20, or a three-way split) is
uncertain; ``summary.json`` reports the fraction of such sites (the demo context models average 0.04 nats on
their test set, MLP-NoContext 0.63: seed paper 003, Table 1)."""
UNRELIABLE_FRACTION = 0.25
"""Above this fraction of uncertain sites the summary and the overlay say the answer is unreliable."""

MIN_COLUMNS = 20
"""Fewest columns (with a peak) for a lattice worth classifying."""
MIN_LATTICE_AREA_FRACTION = 0.10
"""Smallest fraction of the image that must be lattice area. Measured values: docs/classify.md, "Refusals" (noise,
amorphous-like texture and a square lattice give no honeycomb or a few per mille of the image, the real MoS2
frame 0.99). Tested: tests/test_inference_fuzz.py refuses those no-lattice images, tests/test_inference_real.py
checks the real frame's fraction."""
MAX_CATALOG_DEVIATION = 0.15
"""A lattice constant (from the image and a known pixel size) further than this from every catalog host is not
a 1H-MX2 lattice at that pixel size: refused. Real calibrations are off by up to ~5 %; the hosts span
3.16-3.72 Å."""


@dataclass
class Sites:
    """Sites of one image: (N, 2) (row, col) px, (N,) sublattice index from geometry (0/1), (N,) has_peak,
    (N,) on_border; (N, 2, 2) local lattice transforms; (H, W) lattice mask; the lattice estimates."""

    positions: np.ndarray
    fitted_sublattice: np.ndarray
    has_peak: np.ndarray
    on_border: np.ndarray
    lattice_constant_px: float
    autocorrelation_lattice_constant_px: float
    angle_deg: float
    fit_rms_px: float
    timings_s: dict = field(default_factory=dict)
    transforms: np.ndarray | None = None
    lattice_mask: np.ndarray | None = None
    lattice_constant_px_range: tuple[float, float] | None = None
    stats: dict = field(default_factory=dict)

    @property
    def lattice_area_fraction(self) -> float:
        return float(self.lattice_mask.mean()) if self.lattice_mask is not None else 1.0


GOOD_LATTICE_AREA_FRACTION = 0.3
"""``locate_sites`` tries the next autocorrelation estimate of ``a`` unless the first gives lattice over at least
this fraction of the image."""


def locate_sites(image: np.ndarray, smooth_sigma_fraction: float = 0.08) -> Sites:
    """Lattice constant (autocorrelation: a first estimate), then columns, empty sites, sublattices and the
    lattice area from the local honeycomb (``inference.lattice.locate_columns``). When the most likely
    estimate of ``a`` finds lattice over less than ``GOOD_LATTICE_AREA_FRACTION`` of the image, the next ones are
    tried and the one covering most lattice kept. ``ValueError`` when there is no honeycomb at all."""
    image = check_image(image)
    t0 = time.perf_counter()
    estimates = lattice_constant_candidates_px(image)
    t1 = time.perf_counter()
    best, best_a0, error = None, None, None
    for a0 in estimates:
        try:
            lat = locate_columns(image, a0, smooth_sigma_fraction)
        except ValueError as err:
            error = error or err
            continue
        if best is None or lat.lattice_area_fraction > best.lattice_area_fraction:
            best, best_a0 = lat, a0
        if lat.lattice_area_fraction >= GOOD_LATTICE_AREA_FRACTION:
            break
    if best is None:
        raise error
    t2 = time.perf_counter()
    lat = best
    a = lat.lattice_constant_px
    return Sites(lat.positions, lat.sublattice, lat.has_peak, border_flags(lat.positions, image.shape,
                                                                            patch_half_width_px(a)),
                 a, best_a0, lat.angle_deg, lat.local_rms_px, {"lattice": t1 - t0, "columns": t2 - t1},
                 lat.transforms, lat.lattice_mask, lat.lattice_constant_px_range, lat.stats)


def lattice_refusal(sites: Sites, pixel_size_angstrom: float | None, catalog) -> str | None:
    """Why this image holds no lattice worth classifying, or None: too few columns, too little lattice area
    (no significant periodicity), or (with a known pixel size) a lattice constant far from every catalog
    host."""
    n_cols = int(sites.has_peak.sum())
    if n_cols < MIN_COLUMNS:
        return (f"no lattice: {n_cols} columns found (need at least {MIN_COLUMNS}); is this an atomic-resolution "
                "image of a 1H-MX2 layer?")
    frac = sites.lattice_area_fraction
    if frac < MIN_LATTICE_AREA_FRACTION:
        return (f"no lattice: only {100 * frac:.1f} % of the image shows a periodic honeycomb (need "
                f"{100 * MIN_LATTICE_AREA_FRACTION:.0f} %): noise, amorphous material or another structure?")
    if pixel_size_angstrom:
        a = sites.lattice_constant_px * pixel_size_angstrom
        dev = {name: a / h.lattice_constant_angstrom - 1 for name, h in catalog.hosts.items()}
        nearest = min(dev, key=lambda k: abs(dev[k]))
        if abs(dev[nearest]) > MAX_CATALOG_DEVIATION:
            return (f"lattice constant {a:.3f} Å ({sites.lattice_constant_px:.2f} px x {pixel_size_angstrom:.4g} Å) "
                    f"is {100 * dev[nearest]:+.0f} % from the nearest catalog host ({nearest}, "
                    f"{catalog.hosts[nearest].lattice_constant_angstrom} Å): wrong pixel size "
                    "(--pixel-size-angstrom), or not a 1H-MX2 image")
    return None


@dataclass
class Classifier:
    """A checkpoint ready for inference: the model, the stored feature columns it reads, its patch size, and
    the training cases it knows (None for an old checkpoint that does not list them)."""

    model: object
    feature_columns: list
    feature_set: str
    patch_size_px: int | None
    training_cases: list | None
    path: str
    normalisation: str | None = None
    site_symmetry_rule_version: int | None = None


def load_classifier(ckpt) -> Classifier:
    """``training.evaluate.read_checkpoint`` (refuses unsafe or wrong files) plus what inference needs from
    the checkpoint's metadata (``training.module.inference_metadata``); an older checkpoint without it gives
    the feature set of its datamodule hyperparameters and no patch size or cases."""
    from contract.features import feature_columns
    from training.evaluate import read_checkpoint

    model, data_hparams, meta = read_checkpoint(ckpt)
    if meta is None:
        fs = str(data_hparams.get("feature_set", "all"))
        try:
            cols = feature_columns(fs)
        except ValueError:
            raise InputError(f"checkpoint {Path(ckpt).name}: unknown feature set {fs!r}") from None
        return Classifier(model, cols, fs, None, None, str(ckpt))
    return Classifier(model, list(meta["feature_columns"]), str(meta["feature_set"]), meta.get("patch_size_px"),
                      list(meta.get("training_cases") or []), str(ckpt), meta.get("normalisation"),
                      meta.get("site_symmetry_rule_version"))


def _case_key(c: dict) -> tuple:
    return (str(c["host"]), str(c["dopant"]), int(c["beam_energy_kev"]), str(c["detector"]).upper())


CONTEXT_NEAR = 0.08
"""Material-context distance (Euclidean, over the shell-occupancy fractions of metal, chalcogen and dopant: the
first 18 context values) up to which the context carried to a host the model never saw. Measured by
``bench/generalise.py`` (leave-one-host-out on ``configs/dataset/hosts.yaml``, 80 keV): the 10 held-out hosts
whose nearest training host lay within 0.08 kept 97.8-100 % test accuracy with MLP-Simple and attn-4k; the 3 at
0.28-0.36 (WTe2, MoTe2, VSe2) fell to 14-97 % (attn-4k 18-79 %), below MLP-NoContext on two of them."""


def material_distance(ctx: dict, cases: list) -> tuple[float, dict] | None:
    """(distance, case) of the training case whose material context (metal, chalcogen, dopant shell fractions)
    is nearest to ``ctx``'s; None without cases or when an element is not known. Cheap: the shell fractions are
    cached per element."""
    from features.context import material_vector

    def vector(metal, chalcogen, dopant):
        return material_vector(str(metal), str(chalcogen), str(dopant))

    try:
        target = vector(ctx["metal"], ctx["chalcogen"], ctx["dopant"])
    except (KeyError, ValueError):
        return None
    ranked = []
    for c in cases:
        try:
            ranked.append((float(np.linalg.norm(vector(c["metal"], c["chalcogen"], c["dopant"]) - target)), c))
        except (KeyError, ValueError):  # a case without element names (an older checkpoint) is left out
            continue
    return min(ranked, key=lambda dc: dc[0]) if ranked else None


def _distance_note(ctx: dict, cases: list) -> str:
    near = material_distance(ctx, cases)
    if near is None:
        return ""
    d, c = near
    if d == 0:
        return (f"; the material ({c['host']}+{c['dopant']}) is known, at another beam energy or detector: the "
                "held-out-host benchmark does not measure how far the context carries there")
    verdict = (f"within {CONTEXT_NEAR}: in the held-out-host benchmark such hosts kept 97.8-100 % accuracy"
               if d <= CONTEXT_NEAR else
               f"beyond {CONTEXT_NEAR}: in the held-out-host benchmark hosts at 0.28-0.36 fell to 18-79 % "
               "(attn-4k), on two of three below a model without context")
    return f"; material-context distance to the nearest trained material ({c['host']}+{c['dopant']}) {d:.3f}, {verdict}"


def context_check(ctx: dict, cases: list | None, allow_unseen: bool) -> str | None:
    """None when the context (host, dopant, beam energy, detector) is one of the training ``cases``; otherwise
    ``UnseenContextError`` naming the nearest cases the model knows and the material-context distance to the
    nearest trained material, graded by ``CONTEXT_NEAR``, or (``allow_unseen``) that as a warning."""
    label = f"{ctx['host']}+{ctx['dopant']} {ctx['beam_energy_kev']} keV {ctx['detector']}"
    if cases is None:
        msg = (f"the checkpoint does not list its training cases (written before they were recorded), so "
               f"{label} cannot be checked against them")
    else:
        key = _case_key(ctx)
        if any(_case_key(c) == key for c in cases):
            return None
        ranked = sorted(cases, key=lambda c: (sum(a != b for a, b in zip(_case_key(c), key)), -c.get("n_rows", 0)))
        near = "; ".join(f"{c['host']}+{c['dopant']} {c['beam_energy_kev']} keV {c['detector']} "
                         f"({c.get('n_rows', '?')} rows)" for c in ranked[:3])
        msg = f"the model was never trained on {label}; nearest cases it knows: {near}{_distance_note(ctx, cases)}"
    if allow_unseen:
        return f"UNSEEN CONTEXT: {msg}; classified anyway (--allow-unseen-context): treat the classes with caution"
    raise UnseenContextError(f"{msg}. Retrain with this case, or rerun with --allow-unseen-context to classify "
                             "anyway (the answer is then flagged)")


def predict_probabilities(model, features: np.ndarray, batch_size: int = 65536, masked_classes=()) -> np.ndarray:
    """(N, k) -> (N, 5) softmax probabilities (eval mode; the models are batch independent there).
    ``masked_classes``: class ids that cannot occur (D in an undoped sample): probability exactly 0, the rest
    renormalised (their logits set to -inf before the softmax, so no row can underflow to all zeros)."""
    import torch

    from training.evaluate import predict_logits

    logits = predict_logits(model, features, batch_size, "cpu")
    if len(masked_classes):
        logits[:, list(masked_classes)] = float("-inf")
    return torch.softmax(logits, dim=1).numpy()


def choose_metal_sublattice(probs: np.ndarray, fitted_sublattice: np.ndarray) -> int:
    """The fitted sublattice index (0/1) that is the metal one: higher mean log-probability of
    sublattice-consistent classes."""
    p_metal = probs[:, list(METAL_SITE_CLASSES)].sum(axis=1).clip(1e-12, 1)
    p_chal = probs[:, list(CHALCOGEN_SITE_CLASSES)].sum(axis=1).clip(1e-12, 1)
    score = [np.where(fitted_sublattice == m, np.log(p_metal), np.log(p_chal)).mean() for m in (0, 1)]
    return int(np.argmax(score))


def classify_sites(image: np.ndarray, sites: Sites, model, context: dict, patch_size_px: int,
                   metal_sublattice: str = "auto", feature_columns=None) -> dict:
    """Features and probabilities of every site. ``feature_columns``: the stored columns the model reads
    (default all 31). ``metal_sublattice``: ``auto`` (module docstring), ``brighter`` or ``dimmer``. Returns a
    dict of arrays: sublattice (0 metal, 1 chalcogen), probs (N, 5), label (N,), entropy (N,) nats, the 31
    features, plus timings and ``masked_classes`` (names). An undoped context (dopant ``"none"``) masks the
    dopant class: its probability is 0 and the other four are renormalised, so no site is called D."""
    if metal_sublattice not in ("auto", "brighter", "dimmer"):
        raise ValueError(f"metal_sublattice must be auto, brighter or dimmer, got {metal_sublattice!r}")
    t0 = time.perf_counter()
    patches = cut_patches(image, sites.positions, sites.lattice_constant_px, patch_size_px, sites.transforms)
    t1 = time.perf_counter()
    # the flags depend only on which sites are brighter, so sublattice 0/1 of the geometry can stand in here
    feats = site_features(patches, sites.fitted_sublattice, metal=context["metal"], chalcogen=context["chalcogen"],
                          dopant=context["dopant"], detector=context["detector"],
                          beam_energy_kev=context["beam_energy_kev"])
    t2 = time.perf_counter()
    x = feats if feature_columns is None else np.ascontiguousarray(feats[:, list(feature_columns)])
    masked = [CLASS_IDS[n] for n in absent_classes(context["dopant"])]  # D when undoped
    probs = predict_probabilities(model, x, masked_classes=masked)
    t3 = time.perf_counter()
    centre = central_intensity(patches)
    if metal_sublattice == "auto":
        metal = choose_metal_sublattice(probs, sites.fitted_sublattice)
    else:  # the sublattice of the brighter typical column (the site-symmetry rule's)
        bright = int(np.argmax(typical_intensities(centre, sites.fitted_sublattice)))
        metal = bright if metal_sublattice == "brighter" else 1 - bright
    sublattice = np.where(sites.fitted_sublattice == metal, METAL, 1 - METAL)
    entropy = -(probs * np.log(probs.clip(1e-30))).sum(axis=1)
    return {"sublattice": sublattice, "probs": probs, "label": probs.argmax(axis=1), "entropy": entropy,
            "features": feats, "centre": centre, "patches": patches,
            "masked_classes": [CLASS_NAMES[c] for c in masked],
            "timings_s": {"patches": t1 - t0, "features": t2 - t1, "model": t3 - t2}}


def summarise(sites: Sites, result: dict, image_shape, pixel_size_angstrom: float) -> dict:
    """Per-class counts and defect densities (per nm²) over the sites not on the border; the counted area is
    the lattice area minus the border margin. The uncertainty: mean entropy and the fraction of counted sites
    above ``HIGH_ENTROPY_NATS``."""
    inner = ~sites.on_border
    counts = {name: int((result["label"][inner] == c).sum()) for c, name in enumerate(CLASS_NAMES)}
    margin = patch_half_width_px(sites.lattice_constant_px)
    h, w = image_shape
    m = int(np.ceil(margin))
    mask = sites.lattice_mask if sites.lattice_mask is not None else np.ones(image_shape, bool)
    px_nm2 = (pixel_size_angstrom / 10) ** 2
    area_nm2 = float(mask[m:h - m, m:w - m].sum()) * px_nm2 if h > 2 * m and w > 2 * m else 0.0
    density = {name: (counts[name] / area_nm2 if area_nm2 > 0 else None)
               for c, name in enumerate(CLASS_NAMES) if c in DEFECT_CLASS_IDS}
    ent = result["entropy"][inner]
    # a NaN entropy counts as uncertain (NaN > t is False); NaN (no counted site) is written as null
    frac = float((~(ent <= HIGH_ENTROPY_NATS)).mean()) if len(ent) else float("nan")
    return {"n_sites": int(len(inner)), "n_counted": int(inner.sum()), "n_border": int((~inner).sum()),
            "n_sites_without_peak": int((~sites.has_peak).sum()), "counts": counts,
            "defect_density_per_nm2": density, "counted_area_nm2": area_nm2,
            "lattice_area_nm2": float(mask.sum()) * px_nm2, "masked_area_nm2": float((~mask).sum()) * px_nm2,
            "masked_area_fraction": float((~mask).mean()),
            "uncertainty": {"entropy_threshold_nats": HIGH_ENTROPY_NATS, "fraction_above_threshold": frac,
                            "mean_entropy_nats": float(ent.mean()) if len(ent) else float("nan"),
                            "max_possible_entropy_nats": float(np.log(len(CLASS_NAMES))),
                            "unreliable": bool(frac > UNRELIABLE_FRACTION)}}


def frame_checks(sites: Sites, result: dict, ctx: dict, training_cases: list | None) -> dict:
    """``class_order`` and ``site_symmetry_check`` (``inference.checks``) of the counted sites."""
    inner = ~sites.on_border
    key = _case_key(ctx)
    case = next((c for c in training_cases or [] if _case_key(c) == key), None)
    return {"class_order": class_order_check(result["centre"][inner], result["label"][inner], metal=ctx["metal"],
                                             dopant=ctx.get("dopant"), detector=ctx["detector"]),
            "site_symmetry_check": site_symmetry_check(result["centre"][inner], result["sublattice"][inner], case)}


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
        from matplotlib.colors import ListedColormap

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
    for line in warnings:
        title += "\n" + line
    ax.set_title(title, fontsize=9, color="red" if summary.get("unseen_context") or warnings else "k")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_axis_off()
    ax.set_xlim(-0.5, w_ - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95)
    fig.savefig(out / "overlay.png", dpi=100)
    plt.close(fig)
    inner = ~sites.on_border
    write_class_figure(out / "classes.png", result["patches"][inner], result["centre"][inner],
                       result["label"][inner], summary)
    (out / "summary.json").write_text(json_text(summary, indent=2))
    return {k: str(out / f) for k, f in (("csv", "sites.csv"), ("overlay", "overlay.png"), ("classes", "classes.png"),
                                         ("summary", "summary.json"))}


def report_warnings(summary: dict) -> list[str]:
    """The short warnings that the overlay title and the command line's last line carry: uncertain classes,
    class means out of physical order, a sublattice brightness other than the model's."""
    out = []
    unc = summary.get("uncertainty", {})
    if unc.get("unreliable"):
        out.append(f"UNRELIABLE: {100 * unc['fraction_above_threshold']:.0f} % of sites above "
                   f"{unc['entropy_threshold_nats']} nats entropy")
    order = summary.get("class_order") or {}
    if order and not order.get("ok", True):
        out.append("CLASS ORDER: " + "; ".join(f"{v['dimmer']} not dimmer than {v['brighter']}"
                                               for v in order["violations"]))
    if (summary.get("site_symmetry_check") or {}).get("agree") is False:
        chk = summary["site_symmetry_check"]
        out.append(f"SITE SYMMETRY: the frame's brighter sublattice is the {chk['frame_brighter_sublattice']}, "
                   f"the model's the {chk['model_brighter_sublattice']}")
    return out


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move the finished report files from ``tmp`` into ``out_dir`` (created now, not before)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        shutil.move(str(f), str(out_dir / f.name))


def run_classify(image_path, ckpt, out_dir, *, host=None, dopant=None, beam_energy_kev=None, detector=None,
                 pixel_size_angstrom=None, patch_size_px=None, metal_sublattice="auto", catalog=None,
                 allow_unseen_context=False, model_card=None) -> dict:
    """Load, check, locate, classify, write. Returns the summary dict (also in ``summary.json``).
    ``catalog``: a catalog YAML (default: the shipped ``contract/catalog.yaml``). Nothing is written to
    ``out_dir`` unless the whole run succeeds."""
    from contract.catalog import load_catalog

    from .io import read_image, resolve_context

    t_start = time.perf_counter()
    name = Path(image_path).name
    cat = load_catalog(catalog)
    f = read_image(image_path)
    image = f.image
    ctx = resolve_context(f.values, {"host": host, "dopant": dopant, "beam_energy_kev": beam_energy_kev,
                                     "detector": detector, "pixel_size_angstrom": pixel_size_angstrom},
                          cat, f.sources)
    clf = load_classifier(ckpt)
    p = patch_size_px or clf.patch_size_px
    if p is None:
        raise InputError(f"checkpoint {Path(ckpt).name} does not record its patch size: give --patch-size-px "
                         "(the training store's patch_size_px, e.g. 33)")
    unseen_note = context_check(ctx, clf.training_cases, allow_unseen_context)
    near = material_distance(ctx, clf.training_cases or [])  # (distance, case) for the summary
    t_load = time.perf_counter()
    image, n_clipped = clip_outliers(image)
    try:
        sites = locate_sites(image)
    except ValueError as err:
        raise InputError(f"{name}: {err}") from None
    # only the user's pixel size can refuse the lattice: a file's calibration is checked against it below
    reason = lattice_refusal(sites, pixel_size_angstrom, cat)
    if reason:
        raise InputError(f"{name}: {reason}")
    a_cat = ctx["catalog_lattice_constant_angstrom"]
    notes = list(f.notes)
    if n_clipped:
        notes.append(f"{n_clipped} outlier pixel(s) (hot pixels, cosmic rays, damaged data?) clipped to "
                     "20 robust deviations from the median before classifying")
    if unseen_note:
        notes.append(unseen_note)
    if clf.site_symmetry_rule_version != SITE_SYMMETRY_RULE_VERSION:
        notes.append(f"the model was trained on site-symmetry flags of rule version {clf.site_symmetry_rule_version} "
                     f"(this version: {SITE_SYMMETRY_RULE_VERSION}, the brighter sublattice judged by its intact "
                     "columns); where the chalcogen pair outshines the metal (MAADF) its X2 and M may be swapped: "
                     "re-encode its store (`python -m features encode`) and retrain")
    if patch_size_px and clf.patch_size_px and patch_size_px != clf.patch_size_px:
        notes.append(f"--patch-size-px {patch_size_px} overrides the model's {clf.patch_size_px}")
    calibration = choose_pixel_size(
        sites.lattice_constant_px, a_cat, option_pixel_size_angstrom=pixel_size_angstrom, host=ctx["host"],
        file_pixel_size_angstrom=None if pixel_size_angstrom is not None else ctx["pixel_size_angstrom"],
        file_source=ctx["sources"].get("pixel_size_angstrom"))
    pixel = calibration.pixel_size_angstrom
    if calibration.source == "lattice":
        ctx["sources"]["pixel_size_angstrom"] = "inferred from the catalog lattice constant and the image lattice"
        if calibration.file_pixel_size_angstrom is None:
            notes.append(f"pixel size inferred from the catalog lattice constant {a_cat} Å and the image lattice "
                         f"({sites.lattice_constant_px:.3f} px): {pixel:.5f} Å")
    if calibration.warning:
        notes.append(calibration.warning)
    a_img = sites.lattice_constant_px * pixel
    result = classify_sites(image, sites, clf.model, ctx, p, metal_sublattice, clf.feature_columns)
    lo, hi = sites.lattice_constant_px_range or (sites.lattice_constant_px,) * 2
    summary = {"image": str(image_path), "model": str(ckpt), "feature_set": clf.feature_set,
               # the registry's card when the model was chosen from it (inference/registry.py), else None
               "model_card": dataclasses.asdict(model_card) if model_card is not None else None,
               "context": {k: v for k, v in ctx.items() if k not in ("pixel_size_angstrom", "sources")},
               "context_sources": ctx["sources"], "unseen_context": bool(unseen_note),
               "material_context_distance_to_training": (near or (None,))[0],
               "pixel_size_angstrom": pixel, "pixel_size_source": calibration.source,
               "pixel_size_reason": calibration.reason, "calibration": calibration.as_dict(),
               "image_intensity": f.intensity,
               "image_shape": list(image.shape), "patch_size_px": int(p),
               "lattice_constant_angstrom_image": a_img, "lattice_constant_angstrom_catalog": a_cat,
               "lattice_constant_ratio_image_to_catalog": a_img / a_cat,
               "lattice_constant_px": sites.lattice_constant_px,
               "lattice_constant_px_local_5_95": [lo, hi],
               "lattice_constant_px_autocorrelation": sites.autocorrelation_lattice_constant_px,
               "lattice_angle_deg": sites.angle_deg, "lattice_fit_rms_px": sites.fit_rms_px,
               "lattice_area_fraction": sites.lattice_area_fraction, "lattice": sites.stats,
               "n_outlier_pixels_clipped": n_clipped,
               "metal_sublattice_rule": metal_sublattice,
               "border_margin_px": patch_half_width_px(sites.lattice_constant_px), "notes": notes}
    summary.update(summarise(sites, result, image.shape, pixel))
    summary.update(frame_checks(sites, result, ctx, clf.training_cases))
    if not summary["class_order"]["ok"]:
        notes.append(describe_violations(summary["class_order"]))
    sym = summary["site_symmetry_check"]
    if sym["agree"] is False:
        notes.append(f"SITE SYMMETRY: the frame's brighter typical column is on the {sym['frame_brighter_sublattice']} "
                     f"sublattice (metal/chalcogen {sym['frame_metal_to_chalcogen_intensity']:.2f}), the model was "
                     f"trained with the {sym['model_brighter_sublattice']} brighter for this context: the detector, "
                     "beam energy or sublattice assignment (--metal-sublattice) may be wrong")
    summary["masked_classes"] = result["masked_classes"]
    if result["masked_classes"]:
        notes.append(f"undoped sample (--dopant none): class {', '.join(result['masked_classes'])} masked, the "
                     "probabilities renormalised over the other classes")
    if summary["uncertainty"]["unreliable"]:
        notes.append(f"{100 * summary['uncertainty']['fraction_above_threshold']:.0f} % of the sites have a "
                     f"posterior entropy above {HIGH_ENTROPY_NATS} nats: the classes are unreliable")
    t_write = time.perf_counter()
    summary["timings_s"] = {"load": t_load - t_start, **sites.timings_s, **result["timings_s"]}
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent) as tmp:
        write_report(tmp, image, sites, result, summary)
        summary["timings_s"]["write"] = time.perf_counter() - t_write
        (Path(tmp) / "summary.json").write_text(json_text(summary, indent=2))
        _publish(Path(tmp), out_dir)
    return summary
