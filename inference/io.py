"""Resolving the context the classifier needs: the values a micrograph's file holds (read by
``contract.images``, which documents the tags) merged with the command line's options and checked against the
catalog."""
from __future__ import annotations

from pathlib import Path

from contract.context import OPTIONS, FrameContext
from contract.errors import InputError
from contract.images import FORMATS, META_KEYS, CONTEXT_KEYS, ImageFile, detector_from_names, load_image, read_image

__all__ = ["InputError", "ImageFile", "FORMATS", "META_KEYS", "read_image", "load_image", "resolve_context",
           "detector_from_names", "FrameContext"]


def resolve_context(file_meta: dict, overrides: dict, catalog, sources: dict | None = None) -> FrameContext:
    """Merge file metadata with command-line ``overrides`` (non-None values win) and check every value
    (``FrameContext.from_mapping``, the one set of rules).

    ``catalog``: a ``contract.catalog.Catalog``; ``sources``: where each file value was read. Returns the
    ``FrameContext``: host, metal, chalcogen, dopant, beam_energy_kev, detector, the catalog lattice constant,
    ``pixel_size_angstrom`` (None when neither source gives it: then it is inferred from the lattice) and
    ``sources`` (each value: its file tag or ``--option``). The dopant is ``"none"`` (any spelling) for an undoped
    sample, else an element. Raises ``InputError`` listing every missing value with the option that
    provides it.
    """
    sources = dict(sources or {})
    given = {k: v for k, v in overrides.items() if v is not None}
    ctx = {**file_meta, **given}
    src = {k: (f"option {OPTIONS[k]}" if k in given else sources.get(k, "file")) for k in ctx if k in OPTIONS}
    hints = {"host": "--host (e.g. WSe2)", "dopant": "--dopant (e.g. Cr, or none for an undoped sample)",
             "beam_energy_kev": "--energy-kev (60, 80 or 100)", "detector": "--detector (HAADF or MAADF)"}
    missing = [hints[k] for k in CONTEXT_KEYS if ctx.get(k) in (None, "")]
    if missing:
        raise InputError("missing required value(s), not in the file's metadata: " + ", ".join(missing))
    return FrameContext.from_mapping(ctx, catalog, sources=src)


def image_folders(images, out_dir) -> list[tuple[Path, Path]]:
    """(image path, its output folder under ``out_dir``) per image: every file is checked to exist before any work
    (``InputError``), and two files with one stem keep both (``name``, ``name_``)."""
    paths = [Path(p) for p in images]
    for p in paths:
        if not p.is_file():
            raise InputError(f"image file {p} does not exist")
    used: set[str] = set()
    out = []
    for path in paths:
        name = path.stem
        while name in used:
            name = f"{name}_"
        used.add(name)
        out.append((path, Path(out_dir) / name))
    return out
