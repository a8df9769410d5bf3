"""Classify every column of one image: lattice, columns, patches, features, model; then the report files.

``run_classify`` ties the steps to files; each step is its own module:

* ``inference.sites``: ``locate_sites`` (local lattice, columns, sublattices, lattice area: pure) and
  ``lattice_refusal`` (is there a lattice worth classifying?);
* ``inference.classifier``: ``load_classifier`` (the checkpoint) and ``predict_probabilities``;
* ``inference.unseen_context``: ``context_check`` (was the model trained on this context?) and
  ``material_distance``;
* ``inference.site_classes``: ``classify_sites`` (features + model) and ``choose_metal_sublattice`` (which of the
  two sublattices is the metal);
* ``inference.summary``: ``summarise`` (counts, densities, uncertainty), ``frame_checks`` and ``report_warnings``;
* ``inference.report``: ``write_report`` (CSV, overlay PNG, class figure, JSON summary) and ``publish``.

Every check that can refuse an input (the image, its context, the checkpoint, the model's training cases, the
lattice) runs before anything is written: a refused input leaves ``--out`` untouched, and the report files appear
together at the end. The names of those modules are re-exported here (``__all__``), where callers have always
imported them from.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

from contract.catalog import load_catalog
from contract.errors import InputError
from contract.features import SITE_SYMMETRY_RULE_VERSION
from contract.jsonio import json_text
from kernels.context import case_model_context
from kernels.lattice import clip_outliers
from kernels.patches import patch_half_width_px

from .calibration import choose_pixel_size
from .checks import describe_violations
from .classifier import Classifier, load_classifier, predict_probabilities
from .io import read_image, resolve_context
from .report import publish, write_report
from .site_classes import choose_metal_sublattice, classify_sites
from .sites import (
    GOOD_LATTICE_AREA_FRACTION,
    MAX_CATALOG_DEVIATION,
    MIN_COLUMNS,
    MIN_LATTICE_AREA_FRACTION,
    Sites,
    lattice_refusal,
    locate_sites,
)
from .summary import HIGH_ENTROPY_NATS, UNRELIABLE_FRACTION, frame_checks, report_warnings, summarise
from .unseen_context import CONTEXT_NEAR, case_key, context_check, material_distance

__all__ = [
    # inference.sites
    "GOOD_LATTICE_AREA_FRACTION", "MAX_CATALOG_DEVIATION", "MIN_COLUMNS", "MIN_LATTICE_AREA_FRACTION", "Sites",
    "lattice_refusal", "locate_sites",
    # inference.classifier
    "Classifier", "load_classifier", "predict_probabilities",
    # inference.unseen_context
    "CONTEXT_NEAR", "context_check", "material_distance",
    # inference.site_classes
    "choose_metal_sublattice", "classify_sites",
    # inference.summary
    "HIGH_ENTROPY_NATS", "UNRELIABLE_FRACTION", "frame_checks", "report_warnings", "summarise",
    # inference.report
    "write_report",
    # here
    "SQRT3", "run_classify",
]

SQRT3 = 3 ** 0.5
"""Unused here since before the split; kept because it was importable from this module."""


def run_classify(image_path, ckpt, out_dir, *, host=None, dopant=None, beam_energy_kev=None, detector=None,
                 pixel_size_angstrom=None, patch_size_px=None, metal_sublattice="auto", catalog=None,
                 allow_unseen_context=False, model_card=None) -> dict:
    """Load, check, locate, classify, write. Returns the summary dict (also in ``summary.json``).
    ``catalog``: a catalog YAML (default: the shipped ``contract/catalog.yaml``). Nothing is written to
    ``out_dir`` unless the whole run succeeds."""
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
    unseen_note = context_check(ctx, clf.training_cases, allow_unseen_context, clf.context_encoding)
    try:  # a physical-encoding model needs the frame's column signals: refuse an element the table lacks now
        case_model_context(ctx, clf.context_encoding)
    except ValueError as err:
        raise InputError(f"checkpoint {Path(ckpt).name} reads the physical context encoding: {err}") from None
    # (distance, case) for the summary, in the model's context encoding
    near = material_distance(ctx, clf.training_cases or [], clf.context_encoding)
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
    a_cat = ctx.catalog_lattice_constant_angstrom
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
        sites.lattice_constant_px, a_cat, option_pixel_size_angstrom=pixel_size_angstrom, host=ctx.host,
        file_pixel_size_angstrom=None if pixel_size_angstrom is not None else ctx.pixel_size_angstrom,
        file_source=ctx.sources.get("pixel_size_angstrom"))
    pixel = calibration.pixel_size_angstrom
    if calibration.source == "lattice":
        ctx = ctx.with_source("pixel_size_angstrom", "inferred from the catalog lattice constant and the image lattice")
        if calibration.file_pixel_size_angstrom is None:
            notes.append(f"pixel size inferred from the catalog lattice constant {a_cat} Å and the image lattice "
                         f"({sites.lattice_constant_px:.3f} px): {pixel:.5f} Å")
    if calibration.warning:
        notes.append(calibration.warning)
    a_img = sites.lattice_constant_px * pixel
    trained_case = next((c for c in clf.training_cases or [] if case_key(c) == case_key(ctx)), None)
    result = classify_sites(image, sites, clf.model, ctx, p, metal_sublattice, clf.feature_columns,
                            known_ratio=(trained_case or {}).get("metal_to_chalcogen_intensity"),
                            context_encoding=clf.context_encoding)
    lo, hi = sites.lattice_constant_px_range or (sites.lattice_constant_px,) * 2
    summary = {"image": str(image_path), "model": str(ckpt), "feature_set": clf.feature_set,
               "context_encoding": clf.context_encoding,
               # the registry's card when the model was chosen from it (inference/registry.py), else None
               "model_card": dataclasses.asdict(model_card) if model_card is not None else None,
               "metal_sublattice_source": result["metal_sublattice_source"],
               # counted sites whose model argmax was a class of the other sublattice (then restricted to its own)
               "n_counted_called_other_sublattice": int(result["off_sublattice"][~sites.on_border].sum()),
               # written as before the typed context: its dict less the pixel size (below) and the sources
               "context": {k: v for k, v in ctx.as_dict().items() if k not in ("pixel_size_angstrom", "sources")},
               "context_sources": ctx.as_dict()["sources"], "unseen_context": bool(unseen_note),
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
    summary.update(frame_checks(sites, result, ctx, trained_case))
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
        publish(Path(tmp), out_dir)
    return summary
