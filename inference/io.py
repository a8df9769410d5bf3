"""Resolving the context the classifier needs: the values a micrograph's file holds (read by
``contract.images``, which documents the tags) merged with the command line's options and checked against the
catalog."""
from __future__ import annotations

import numpy as np

from contract.context import BEAM_ENERGIES_KEV, DETECTOR_NAMES, canonical_dopant, check_detector, is_undoped
from contract.elements import atomic_number
from contract.errors import InputError
from contract.images import FORMATS, META_KEYS, CONTEXT_KEYS, ImageFile, detector_from_names, load_image, read_image

__all__ = ["InputError", "ImageFile", "FORMATS", "META_KEYS", "read_image", "load_image", "resolve_context",
           "detector_from_names"]


def resolve_context(file_meta: dict, overrides: dict, catalog, sources: dict | None = None) -> dict:
    """Merge file metadata with command-line ``overrides`` (non-None values win) and check every value.

    ``catalog``: a ``contract.catalog.Catalog``; ``sources``: where each file value was read. Returns host,
    metal, chalcogen, dopant, beam_energy_kev, detector, the catalog lattice constant, ``pixel_size_angstrom``
    (None when neither source gives it: then it is inferred from the lattice) and ``sources`` (each value:
    its file tag or ``--option``). The dopant is ``"none"`` (any spelling) for an undoped sample, else an
    element. Raises ``InputError`` listing every missing value with the option that
    provides it.
    """
    sources = dict(sources or {})
    given = {k: v for k, v in overrides.items() if v is not None}
    ctx = {**file_meta, **given}
    options = {"host": "--host", "dopant": "--dopant", "beam_energy_kev": "--energy-kev", "detector": "--detector",
               "pixel_size_angstrom": "--pixel-size-angstrom"}
    src = {k: (f"option {options[k]}" if k in given else sources.get(k, "file")) for k in ctx if k in options}
    hints = {"host": "--host (e.g. WSe2)", "dopant": "--dopant (e.g. Cr, or none for an undoped sample)",
             "beam_energy_kev": "--energy-kev (60, 80 or 100)", "detector": "--detector (HAADF or MAADF)"}
    missing = [hints[k] for k in CONTEXT_KEYS if ctx.get(k) in (None, "")]
    if missing:
        raise InputError("missing required value(s), not in the file's metadata: " + ", ".join(missing))
    if ctx["host"] not in catalog.hosts:
        raise InputError(f"--host {ctx['host']!r} is not in the catalog; known hosts: "
                         f"{', '.join(sorted(catalog.hosts))}")
    host = catalog.hosts[ctx["host"]]
    dopant = canonical_dopant(ctx["dopant"])
    if not is_undoped(dopant):
        try:
            atomic_number(dopant)
        except ValueError:
            raise InputError(f"--dopant {ctx['dopant']!r} ({src['dopant']}) is not an element: give a chemical symbol "
                             "such as Cr, or none for an undoped sample") from None
    try:
        energy = float(ctx["beam_energy_kev"])
    except (TypeError, ValueError):
        raise InputError(f"--energy-kev must be a number, got {ctx['beam_energy_kev']!r}") from None
    if int(round(energy)) not in BEAM_ENERGIES_KEV or abs(energy - round(energy)) > 1e-6:
        raise InputError(f"beam energy {energy:g} keV ({src['beam_energy_kev']}): the model knows "
                         f"{', '.join(map(str, BEAM_ENERGIES_KEV))} keV")
    try:
        detector = check_detector(ctx["detector"])
    except ValueError:
        raise InputError(f"--detector {ctx['detector']!r} ({src['detector']}): the model knows "
                         f"{', '.join(DETECTOR_NAMES)}") from None
    pixel = ctx.get("pixel_size_angstrom")
    if pixel is not None:
        try:
            pixel = float(pixel)
        except (TypeError, ValueError):
            pixel = float("nan")
        if not np.isfinite(pixel) or pixel <= 0:
            raise InputError(f"pixel size must be > 0 Å, got {ctx.get('pixel_size_angstrom')!r} "
                             f"({src['pixel_size_angstrom']})")
    return {"host": ctx["host"], "metal": host.metal, "chalcogen": host.chalcogen,
            "dopant": dopant, "beam_energy_kev": int(round(energy)), "detector": detector,
            "catalog_lattice_constant_angstrom": host.lattice_constant_angstrom,
            "pixel_size_angstrom": pixel, "sources": src}
