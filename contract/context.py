"""The context axes (paper section 3): detectors, beam energies, electron shells, and the ``Case``.

A *case* is the context one patch or micrograph was recorded in: host (metal + chalcogen), dopant, beam
energy and detector. The 23-value context vector that encodes it is computed in ``kernels.context``; its
column layout is in ``contract.features``.

An undoped sample is a case whose dopant is ``NO_DOPANT`` (``"none"``): see ``NO_DOPANT_SHELL_FRACTIONS`` for
its encoding and ``docs/context.md`` for the reasoning.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Detector:
    """An annular dark-field detector: collection semi-angles in mrad."""

    name: str
    inner_mrad: float
    outer_mrad: float

    def as_config(self) -> dict:
        return {"inner_mrad": self.inner_mrad, "outer_mrad": self.outer_mrad}


DETECTORS = {
    "HAADF": Detector("HAADF", 68.0, 280.0),
    "MAADF": Detector("MAADF", 30.0, 120.0),
}
"""The detectors the context vector one-hot encodes, in one-hot order, with the paper's angles (section 8.2)."""
DETECTOR_NAMES = tuple(DETECTORS)

BEAM_ENERGIES_KEV = (60, 80, 100)
"""The beam energies (keV) the context vector one-hot encodes, in one-hot order."""

CONVERGENCE_SEMIANGLE_MRAD = 31.0
"""Probe convergence semi-angle of the paper's simulations (section 8.2)."""

SHELLS = ("K", "L", "M", "N", "O", "P")
"""Electron shells whose occupation / Z enters the context vector."""
ROLES = ("metal", "chalcogen", "dopant")
"""The three elements of a case, in context-vector order."""

CONTEXT_SIZE = len(ROLES) * len(SHELLS) + len(DETECTOR_NAMES) + len(BEAM_ENERGIES_KEV)  # 23

NO_DOPANT = "none"
"""The dopant of an undoped sample (``--dopant none``, ``[host, none]`` in dataset configs, case-insensitive on
input, always written lower-case)."""

NO_DOPANT_SHELL_FRACTIONS = (0.0,) * len(SHELLS)
"""The dopant's six shell-occupancy fractions of an undoped case: all zero.

Every element's fractions are electrons per shell / Z and sum to exactly 1, so the zero vector (sum 0) is no
element's and cannot be confused with a real dopant; it reads as "a dopant of weight zero" (the fractions
scaled by the dopant's presence), and a model's first linear layer sees no dopant input at all (W @ 0 = 0)
rather than the signature of some element. Alternatives considered (docs/context.md): the host metal's own
fractions (an "M substituted by M" context: collides with nothing trained, but claims a substitution and puts
undoped cases next to same-row dopants, the hardest ones to tell apart) and an extra presence flag (a 24th
value: changes the paper's 31-column layout and every stored feature set for a fact the zero vector carries).
"""


def is_undoped(dopant) -> bool:
    """Whether ``dopant`` names no dopant (``"none"``, any case, surrounding blanks ignored)."""
    return isinstance(dopant, str) and dopant.strip().lower() == NO_DOPANT


def canonical_dopant(dopant) -> str:
    """``NO_DOPANT`` for any spelling of "none"; otherwise the symbol, blanks stripped (not checked here: the
    catalog checks elements)."""
    return NO_DOPANT if is_undoped(dopant) else str(dopant).strip()


def absent_classes(dopant) -> tuple[str, ...]:
    """Class names no column of a sample with ``dopant`` can have: ``("D",)`` when undoped, else none. The
    classifier masks them; an undoped store holds no row of them."""
    return ("D",) if is_undoped(dopant) else ()


def check_detector(name) -> str:
    """The canonical detector name (case-insensitive match), or ``ValueError`` listing the known ones."""
    key = str(name).strip().upper()
    if key not in DETECTORS:
        raise ValueError(f"unsupported detector {name!r}; supported detectors: {', '.join(DETECTOR_NAMES)}")
    return key


def check_beam_energy(beam_energy_kev) -> int:
    """The beam energy as one of ``BEAM_ENERGIES_KEV`` (int), or ``ValueError``."""
    try:
        e = float(beam_energy_kev)
    except (TypeError, ValueError):
        e = float("nan")
    if not any(abs(e - v) < 1e-6 for v in BEAM_ENERGIES_KEV):
        raise ValueError(f"unsupported beam_energy_kev {beam_energy_kev!r}; supported values (keV): "
                         f"{', '.join(str(v) for v in BEAM_ENERGIES_KEV)}")
    return int(round(e))


@dataclass(frozen=True)
class Case:
    """One context case. Stores keep cases as dicts (``attrs["cases"]``) with more keys (angles, sampling,
    task); ``from_dict`` reads the ones that define the context."""

    host: str
    metal: str
    chalcogen: str
    dopant: str
    beam_energy_kev: int
    detector: str

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        missing = [k for k in ("host", "metal", "chalcogen", "dopant", "beam_energy_kev", "detector") if k not in d]
        if missing:
            raise ValueError(f"case is missing field(s) {missing}: {d}")
        return cls(str(d["host"]), str(d["metal"]), str(d["chalcogen"]), canonical_dopant(d["dopant"]),
                   check_beam_energy(d["beam_energy_kev"]), check_detector(d["detector"]))

    def as_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """``WSe2+Cr 60 keV HAADF`` (``WSe2+none ...`` when undoped)."""
        return f"{self.host}+{self.dopant} {self.beam_energy_kev} keV {self.detector}"
