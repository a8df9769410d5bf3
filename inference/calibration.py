"""Which pixel size to classify with: the file's calibration, the command line's, or the one the lattice gives.

Real files carry calibrations that are missing or stale (docs/real-frames.md, "Calibration"): a field of view
carried over from another magnification, ImageJ scales about 11 % off, hand-typed fields of view up to 38 % off. The
image itself measures the lattice constant in pixels; with the catalog lattice constant of the host the user named,
that is a pixel size too. The rule (``choose_pixel_size``, pure):

* ``--pixel-size-angstrom`` is the user's word: used; a warning when the lattice disagrees by more than
  ``PIXEL_SIZE_TOLERANCE``.
* A file's pixel size is used when the lattice constant it gives is within ``PIXEL_SIZE_TOLERANCE`` of the
  catalog's; otherwise the lattice-derived pixel size is used and a note says so.
* Neither: the lattice-derived pixel size.

``summary.json`` records the choice (``pixel_size_source``: ``option``, ``file`` or ``lattice``; a
``pixel_size_reason``; and the ``calibration`` dict of ``PixelSizeChoice.as_dict``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["PIXEL_SIZE_TOLERANCE", "PixelSizeChoice", "choose_pixel_size"]

PIXEL_SIZE_TOLERANCE = 0.03
"""Largest relative difference between the lattice constant a calibration gives and the catalog's that still
counts as agreement. Measured (docs/real-frames.md): the lattice constant is found to 0.04 % on rendered
honeycombs at 0.08-0.2 Å/px and any angle; on the real MoS2 .dm3 the local lattice constants spread ±0.9 %
(5-95 %) about the fitted one; monolayer, doped and strained lattices differ from the catalog's bulk values by
about 1 %. The file calibrations seen to be wrong were 5.8 % (temul-toolkit MoS2, Gatan DigiScan) and 11-15 %
(Nion Swift ImageJ exports of WSe2) off: 3 % separates the two with room on both sides."""


@dataclass(frozen=True)
class PixelSizeChoice:
    """The pixel size used and why: ``source`` is ``option``, ``file`` or ``lattice``; ``reason`` one sentence;
    ``deviation`` the relative difference of the lattice constant at the file's (or option's) pixel size from the
    catalog's (None without one); ``warning`` a note for the report (None when there is nothing to say)."""

    pixel_size_angstrom: float
    source: str
    reason: str
    lattice_pixel_size_angstrom: float
    file_pixel_size_angstrom: float | None = None
    option_pixel_size_angstrom: float | None = None
    deviation: float | None = None
    tolerance: float = PIXEL_SIZE_TOLERANCE
    warning: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def choose_pixel_size(lattice_constant_px: float, catalog_lattice_constant_angstrom: float, *,
                      file_pixel_size_angstrom: float | None = None, file_source: str | None = None,
                      option_pixel_size_angstrom: float | None = None, host: str = "the host",
                      tolerance: float = PIXEL_SIZE_TOLERANCE) -> PixelSizeChoice:
    """The module docstring's rule. ``lattice_constant_px``: the lattice constant measured on the image;
    ``file_source``: where the file's pixel size was read (a tag path), for the reason string."""
    if not lattice_constant_px > 0 or not catalog_lattice_constant_angstrom > 0:
        raise ValueError("lattice constants must be > 0")
    a_cat = catalog_lattice_constant_angstrom
    lattice_px = a_cat / lattice_constant_px
    common = {"lattice_pixel_size_angstrom": lattice_px, "file_pixel_size_angstrom": file_pixel_size_angstrom,
              "option_pixel_size_angstrom": option_pixel_size_angstrom, "tolerance": tolerance}

    def deviation(px: float) -> float:
        return lattice_constant_px * px / a_cat - 1

    def disagreement(px: float, what: str) -> str:
        return (f"the lattice constant from the image at {what} {px:.5g} Å/px, {lattice_constant_px * px:.4f} Å, "
                f"differs from the catalog's {a_cat} Å ({host}) by {100 * deviation(px):+.1f} %, more than "
                f"{100 * tolerance:g} %")

    if option_pixel_size_angstrom is not None:
        dev = deviation(option_pixel_size_angstrom)
        warning = None
        if abs(dev) > tolerance:
            warning = (f"{disagreement(option_pixel_size_angstrom, '--pixel-size-angstrom')}: used as given (the "
                       f"user's word), but the lattice gives {lattice_px:.5f} Å/px; check the pixel size or --host")
        return PixelSizeChoice(option_pixel_size_angstrom, "option", "given on the command line "
                               "(--pixel-size-angstrom)", deviation=dev, warning=warning, **common)
    if file_pixel_size_angstrom is not None:
        dev = deviation(file_pixel_size_angstrom)
        where = f"the file's calibration ({file_source})" if file_source else "the file's calibration"
        if abs(dev) <= tolerance:
            return PixelSizeChoice(file_pixel_size_angstrom, "file",
                                   f"{where}: its lattice constant is within {100 * dev:+.1f} % of the catalog's "
                                   f"{a_cat} Å ({host}), inside the {100 * tolerance:g} % tolerance",
                                   deviation=dev, **common)
        reason = (f"{disagreement(file_pixel_size_angstrom, where)}: a stale or wrong calibration, so the pixel size "
                  f"is derived from the lattice ({lattice_constant_px:.3f} px = {a_cat} Å): {lattice_px:.5f} Å/px")
        return PixelSizeChoice(lattice_px, "lattice", reason, deviation=dev, warning=reason, **common)
    return PixelSizeChoice(lattice_px, "lattice",
                           f"no pixel size in the file or on the command line: derived from the catalog lattice "
                           f"constant {a_cat} Å ({host}) and the image lattice ({lattice_constant_px:.3f} px): "
                           f"{lattice_px:.5f} Å/px", **common)
