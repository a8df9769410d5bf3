"""Is the image's context (host, dopant, beam energy, detector) one the model was trained on? ``context_check``
refuses an unseen context (``UnseenContextError``) or, when allowed, returns the warning; ``material_distance``
grades how far the material is from the nearest trained one (``CONTEXT_NEAR``)."""
from __future__ import annotations

import numpy as np

from contract.context import Case, case_key, case_value
from contract.errors import UnseenContextError
from kernels.context import material_vector


CONTEXT_NEAR = 0.08
"""Material-context distance (Euclidean, over the shell-occupancy fractions of metal, chalcogen and dopant: the
first 18 context values) up to which the context carried to a host the model never saw. Measured by
``bench/generalise.py`` (leave-one-host-out on ``configs/dataset/hosts.yaml``, 80 keV): the 10 held-out hosts
whose nearest training host lay within 0.08 kept 97.8-100 % test accuracy with MLP-Simple and attn-4k; the 3 at
0.28-0.36 (WTe2, MoTe2, VSe2) fell to 14-97 % (attn-4k 18-79 %), below MLP-NoContext on two of them."""


def material_distance(ctx: Case | dict, cases: list) -> tuple[float, dict] | None:
    """(distance, case) of the training case whose material context (metal, chalcogen, dopant shell fractions)
    is nearest to ``ctx``'s (a ``FrameContext`` or a training case's dict); None without cases or when an element is not known. Cheap: the shell fractions are
    cached per element."""

    def vector(metal, chalcogen, dopant):
        return material_vector(str(metal), str(chalcogen), str(dopant))

    try:
        target = vector(*(case_value(ctx, k) for k in ("metal", "chalcogen", "dopant")))
    except (KeyError, ValueError):
        return None
    ranked = []
    for c in cases:
        try:
            ranked.append((float(np.linalg.norm(vector(c["metal"], c["chalcogen"], c["dopant"]) - target)), c))
        except (KeyError, ValueError):  # a case without element names (an older checkpoint) is left out
            continue
    return min(ranked, key=lambda dc: dc[0]) if ranked else None


def _distance_note(ctx: Case | dict, cases: list) -> str:
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


def context_check(ctx: Case | dict, cases: list | None, allow_unseen: bool) -> str | None:
    """None when the context (host, dopant, beam energy, detector) is one of the training ``cases``; otherwise
    ``UnseenContextError`` naming the nearest cases the model knows and the material-context distance to the
    nearest trained material, graded by ``CONTEXT_NEAR``, or (``allow_unseen``) that as a warning."""
    host, dopant, energy, detector = (case_value(ctx, k) for k in ("host", "dopant", "beam_energy_kev", "detector"))
    label = f"{host}+{dopant} {energy} keV {detector}"
    if cases is None:
        msg = (f"the checkpoint does not list its training cases (written before they were recorded), so "
               f"{label} cannot be checked against them")
    else:
        key = case_key(ctx)
        if any(case_key(c) == key for c in cases):
            return None
        ranked = sorted(cases, key=lambda c: (sum(a != b for a, b in zip(case_key(c), key)), -c.get("n_rows", 0)))
        near = "; ".join(f"{c['host']}+{c['dopant']} {c['beam_energy_kev']} keV {c['detector']} "
                         f"({c.get('n_rows', '?')} rows)" for c in ranked[:3])
        msg = f"the model was never trained on {label}; nearest cases it knows: {near}{_distance_note(ctx, cases)}"
    if allow_unseen:
        return f"UNSEEN CONTEXT: {msg}; classified anyway (--allow-unseen-context): treat the classes with caution"
    raise UnseenContextError(f"{msg}. Retrain with this case, or rerun with --allow-unseen-context to classify "
                             "anyway (the answer is then flagged)")
