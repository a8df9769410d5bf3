"""Reading micrographs and their metadata; resolving the context the classifier needs.

Formats: ``.npy`` (metadata from a ``<name>.json`` beside it, as ``simulate fullfield`` writes), ``.tif``/
``.tiff`` (``tifffile``: a JSON ImageDescription, or ImageJ/TIFF resolution tags with a length unit) and
``.dm3``/``.dm4``/``.emd`` through ``rosettasciio`` when it is installed (axes scale and units, beam energy,
detector name where the file records them). The command line overrides file metadata.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from contract.context import BEAM_ENERGIES_KEV, DETECTOR_NAMES, check_detector
from contract.errors import InputError

from .lattice import check_image

_UNIT_TO_ANGSTROM = {"nm": 10.0, "nanometer": 10.0, "nanometre": 10.0, "Å": 1.0, "A": 1.0, "angstrom": 1.0,
                     "pm": 0.01, "um": 1e4, "µm": 1e4, "micron": 1e4}
CONTEXT_KEYS = ("host", "dopant", "beam_energy_kev", "detector")


__all__ = ["InputError", "load_image", "resolve_context"]


def load_image(path) -> tuple[np.ndarray, dict]:
    """``(image (H, W) float64, metadata dict)``. Metadata keys when known: ``pixel_size_angstrom``,
    ``beam_energy_kev``, ``detector``, ``host``, ``dopant``. Raises ``InputError`` naming the reason."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        data = np.load(path, allow_pickle=False)
        side = path.with_suffix(".json")
        meta = json.loads(side.read_text()) if side.is_file() else {}
    elif suffix in (".tif", ".tiff"):
        data, meta = _read_tiff(path)
    elif suffix in (".dm3", ".dm4", ".emd"):
        data, meta = _read_rsciio(path, suffix)
    else:
        raise InputError(f"{path.name}: unsupported format {suffix!r}; use .npy, .tif, .dm3, .dm4 or .emd")
    try:
        image = check_image(data)
    except ValueError as err:
        raise InputError(f"{path.name}: {err}") from None
    return image, {k: meta[k] for k in ("pixel_size_angstrom", *CONTEXT_KEYS) if meta.get(k) is not None}


def _read_tiff(path: Path) -> tuple[np.ndarray, dict]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        data = tif.asarray()
        page = tif.pages[0]
        meta: dict = {}
        desc = page.tags.get("ImageDescription")
        if desc is not None:
            try:
                parsed = json.loads(desc.value)
                if isinstance(parsed, dict):
                    meta.update(parsed)
            except (ValueError, TypeError):
                pass
        ij = tif.imagej_metadata or {}
        unit = ij.get("unit") or meta.get("unit")
        xres = page.tags.get("XResolution")
        if "pixel_size_angstrom" not in meta and unit in _UNIT_TO_ANGSTROM and xres is not None:
            num, den = xres.value
            if num > 0:
                meta["pixel_size_angstrom"] = den / num * _UNIT_TO_ANGSTROM[unit]
    return data, meta


def _read_rsciio(path: Path, suffix: str) -> tuple[np.ndarray, dict]:
    try:
        if suffix == ".emd":
            from rsciio.emd import file_reader
        else:
            from rsciio.digitalmicrograph import file_reader
    except ImportError:
        raise InputError(f"{path.name}: reading {suffix} needs the 'rosettasciio' package "
                         "(pip install rosettasciio)") from None
    signals = [s for s in file_reader(str(path)) if np.asarray(s["data"]).ndim == 2]
    if not signals:
        raise InputError(f"{path.name}: no 2-D image in the file")
    sig = signals[0]
    meta: dict = {}
    axes = sig.get("axes", [])
    if axes:
        unit, scale = str(axes[-1].get("units", "")), axes[-1].get("scale")
        if unit in _UNIT_TO_ANGSTROM and scale:
            meta["pixel_size_angstrom"] = float(scale) * _UNIT_TO_ANGSTROM[unit]
    md = sig.get("metadata", {})
    energy = md.get("Acquisition_instrument", {}).get("TEM", {}).get("beam_energy")
    if energy:
        meta["beam_energy_kev"] = float(energy)
    title = str(md.get("General", {}).get("title", "")).upper()
    for det in DETECTOR_NAMES:
        if det in title:
            meta["detector"] = det
    return np.asarray(sig["data"]), meta


def resolve_context(file_meta: dict, overrides: dict, catalog) -> dict:
    """Merge file metadata with command-line ``overrides`` (non-None values win) and check every value.

    ``catalog``: a ``contract.catalog.Catalog``. Returns host, metal, chalcogen, dopant, beam_energy_kev, detector, catalog lattice constant and
    ``pixel_size_angstrom`` (None when neither source gives it: then it is inferred from the lattice).
    Raises ``InputError`` listing every missing value with the option that provides it.
    """
    ctx = {**file_meta, **{k: v for k, v in overrides.items() if v is not None}}
    options = {"host": "--host (e.g. WSe2)", "dopant": "--dopant (e.g. Cr)",
               "beam_energy_kev": "--energy-kev (60, 80 or 100)", "detector": "--detector (HAADF or MAADF)"}
    missing = [options[k] for k in CONTEXT_KEYS if ctx.get(k) in (None, "")]
    if missing:
        raise InputError("missing required value(s), not in the file's metadata: " + ", ".join(missing))
    if ctx["host"] not in catalog.hosts:
        raise InputError(f"--host {ctx['host']!r} is not in the catalog; known hosts: "
                         f"{', '.join(sorted(catalog.hosts))}")
    host = catalog.hosts[ctx["host"]]
    try:
        energy = float(ctx["beam_energy_kev"])
    except (TypeError, ValueError):
        raise InputError(f"--energy-kev must be a number, got {ctx['beam_energy_kev']!r}") from None
    if int(round(energy)) not in BEAM_ENERGIES_KEV or abs(energy - round(energy)) > 1e-6:
        raise InputError(f"--energy-kev {energy:g}: the model knows {', '.join(map(str, BEAM_ENERGIES_KEV))} keV")
    try:
        detector = check_detector(ctx["detector"])
    except ValueError:
        raise InputError(f"--detector {ctx['detector']!r}: the model knows {', '.join(DETECTOR_NAMES)}") from None
    pixel = ctx.get("pixel_size_angstrom")
    if pixel is not None:
        pixel = float(pixel)
        if not np.isfinite(pixel) or pixel <= 0:
            raise InputError(f"--pixel-size-angstrom must be > 0, got {pixel}")
    return {"host": ctx["host"], "metal": host.metal, "chalcogen": host.chalcogen,
            "dopant": str(ctx["dopant"]), "beam_energy_kev": int(round(energy)), "detector": detector,
            "catalog_lattice_constant_angstrom": host.lattice_constant_angstrom,
            "pixel_size_angstrom": pixel}
