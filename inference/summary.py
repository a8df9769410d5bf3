"""What ``summary.json`` says about the classified sites: counts, defect densities and uncertainty
(``summarise``), the frame checks (``frame_checks``) and the short warnings (``report_warnings``)."""
from __future__ import annotations

import numpy as np

from contract.classes import CLASS_NAMES, DEFECT_CLASS_IDS
from contract.context import Case
from kernels.patches import patch_half_width_px

from .checks import CONTRAST_SPREAD_LOG, class_order_check, site_symmetry_check
from .sites import Sites

HIGH_ENTROPY_NATS = 0.5
"""A site whose posterior entropy exceeds this (two classes at about 80/20, or a three-way split) is
uncertain; ``summary.json`` reports the fraction of such sites (the demo context models average 0.04 nats on
their test set, MLP-NoContext 0.63: seed paper 003, Table 1)."""
UNRELIABLE_FRACTION = 0.25
"""Above this fraction of uncertain sites the summary and the overlay say the answer is unreliable."""


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


def frame_checks(sites: Sites, result: dict, ctx: Case, trained_case: dict | None) -> dict:
    """``class_order`` and ``site_symmetry_check`` (``inference.checks``) of the counted sites; ``trained_case``:
    the model's training case of this context (None when unseen)."""
    inner = ~sites.on_border
    # the level between columns: the 1st percentile of the counted sites' patches (HAADF only, checks.py)
    background = (float(np.percentile(result["patches"][inner], 1))
                  if ctx.detector == "HAADF" and inner.any() else None)
    return {"class_order": class_order_check(result["centre"][inner], result["label"][inner], metal=ctx.metal,
                                             dopant=ctx.dopant, detector=ctx.detector),
            "site_symmetry_check": site_symmetry_check(result["centre"][inner], result["sublattice"][inner],
                                                       trained_case, background=background)}


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
    chk = summary.get("site_symmetry_check") or {}
    if chk.get("contrast_within_simulated_spread") is False:
        out.append(f"CONTRAST: the frame's metal/chalcogen column ratio above background is "
                   f"{chk['frame_metal_to_chalcogen_above_background']:.2f}, the model's "
                   f"{chk['model_metal_to_chalcogen_intensity']:.2f} (simulated frames stay within "
                   f"x{np.exp(CONTRAST_SPREAD_LOG):.2f}): X2 and VacX, which rest on that contrast, may be shifted; "
                   "read the chalcogen histogram")
    return out
