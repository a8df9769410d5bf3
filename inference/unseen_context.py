"""Is the image's context (host, dopant, beam energy, detector) one the model was trained on? ``context_check``
refuses an unseen context (``UnseenContextError``) or, when allowed, returns the warning; ``material_distance``
grades how far the material is from the nearest trained one (``CONTEXT_NEAR``)."""
from __future__ import annotations

import numpy as np

from contract.context import Case, case_key, case_value
from contract.errors import UnseenContextError
from contract.physical_context import N_COLUMN_VALUES
from kernels.context import material_vector, physical_context_vector


CONTEXT_NEAR = 0.08
"""Material-context distance (Euclidean, over the shell-occupancy fractions of metal, chalcogen and dopant: the
first 18 context values) up to which the context carried to a host the model never saw. Measured by
``bench/generalise.py`` (leave-one-host-out on ``configs/dataset/hosts.yaml``, 80 keV): the 10 held-out hosts
whose nearest training host lay within 0.08 kept 97.8-100 % test accuracy with MLP-Simple and attn-4k; the 3 at
0.28-0.36 (WTe2, MoTe2, VSe2) fell to 14-97 % (attn-4k 18-79 %), below MLP-NoContext on two of them."""


CONTEXT_NEAR_PHYSICAL = 0.7
"""The same for a model of the physical context encoding (``contract.physical_context``): Euclidean distance over
the five column-contrast values, to the nearest training case of the same beam energy and detector. Measured by
``bench/generalise.py`` (2026-12-07, ``configs/dataset/hosts.yaml``, 80 keV; per held-out host or dopant and
detector, MLP-Simple and attn-4k with the physical encoding): every group within 0.7 kept 95.4-100 %; at
0.77-1.04 87.5-100 % (MoTe2 MAADF 87.5 % with attn-4k); at 1.05-2.06 66-95 % (MoS2+Re, whose dopant is brighter
than the metal in a host whose chalcogen pair is darker, a combination no training host has; V held out of every
host)."""

MATERIAL_KEYS = ("host", "metal", "chalcogen", "dopant", "detector", "beam_energy_kev")


def material_context(ctx: Case | dict, encoding: str = "shells") -> np.ndarray:
    """The material part of a case's context in ``encoding``: the 18 shell fractions, or the 5 column-contrast
    values of the physical encoding (which depend on the beam energy and detector too)."""
    if encoding == "physical":
        host, metal, chalcogen, dopant, detector, energy = (case_value(ctx, k) for k in MATERIAL_KEYS)
        return physical_context_vector(str(host), str(metal), str(chalcogen), str(dopant), str(detector),
                                       energy)[:N_COLUMN_VALUES].astype(np.float64)
    return material_vector(*(str(case_value(ctx, k)) for k in ("metal", "chalcogen", "dopant")))


def material_distance(ctx: Case | dict, cases: list, encoding: str = "shells") -> tuple[float, dict] | None:
    """(distance, case) of the training case whose material context (``material_context`` in ``encoding``) is
    nearest to ``ctx``'s (a ``FrameContext`` or a training case's dict); None without cases or when an element is
    not known. With the physical encoding only training cases of ``ctx``'s beam energy and detector are compared
    (all cases when none has them). Cheap: the values are cached per element."""
    try:
        target = material_context(ctx, encoding)
    except (KeyError, ValueError):
        return None
    if encoding == "physical":
        same = [c for c in cases if (c.get("detector"), c.get("beam_energy_kev")) ==
                (case_value(ctx, "detector"), case_value(ctx, "beam_energy_kev"))]
        cases = same or cases
    ranked = []
    for c in cases:
        try:
            ranked.append((float(np.linalg.norm(material_context(c, encoding) - target)), c))
        except (KeyError, ValueError):  # a case without element names (an older checkpoint) is left out
            continue
    return min(ranked, key=lambda dc: dc[0]) if ranked else None


DISTANCE_GRADES = {
    "shells": (CONTEXT_NEAR, "in the held-out-host benchmark such hosts kept 97.8-100 % accuracy",
               "in the held-out-host benchmark hosts at 0.28-0.36 fell to 18-79 % (attn-4k), on two of three below "
               "a model without context"),
    "physical": (CONTEXT_NEAR_PHYSICAL, "in the held-out host and dopant benchmark such cases kept 95.4-100 % accuracy",
                 "in the held-out host and dopant benchmark cases at 0.77-1.04 kept 87.5-100 %, at 1.05-2.06 "
                 "66-95 %"),
}
"""Per context encoding: (threshold, what the benchmark measured within it, what it measured beyond it)."""


def _distance_note(ctx: Case | dict, cases: list, encoding: str = "shells") -> str:
    near = material_distance(ctx, cases, encoding)
    if near is None:
        return ""
    d, c = near
    if d == 0:
        return (f"; the material ({c['host']}+{c['dopant']}) is known, at another beam energy or detector: the "
                "held-out-host benchmark does not measure how far the context carries there")
    limit, within, beyond = DISTANCE_GRADES[encoding]
    verdict = f"within {limit}: {within}" if d <= limit else f"beyond {limit}: {beyond}"
    what = "column-contrast" if encoding == "physical" else "material-context"
    return f"; {what} distance to the nearest trained material ({c['host']}+{c['dopant']}) {d:.3f}, {verdict}"


def context_check(ctx: Case | dict, cases: list | None, allow_unseen: bool, encoding: str = "shells") -> str | None:
    """None when the context (host, dopant, beam energy, detector) is one of the training ``cases``; otherwise
    ``UnseenContextError`` naming the nearest cases the model knows and the distance to the nearest trained
    material in the model's context ``encoding``, graded by ``DISTANCE_GRADES``, or (``allow_unseen``) that as a
    warning."""
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
        msg = f"the model was never trained on {label}; nearest cases it knows: {near}{_distance_note(ctx, cases, encoding)}"
    if allow_unseen:
        return f"UNSEEN CONTEXT: {msg}; classified anyway (--allow-unseen-context): treat the classes with caution"
    raise UnseenContextError(f"{msg}. Retrain with this case, or rerun with --allow-unseen-context to classify "
                             "anyway (the answer is then flagged)")
