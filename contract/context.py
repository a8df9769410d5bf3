"""The context axes (paper section 3): detectors, beam energies, electron shells, and the ``Case``.

A *case* is the context one patch or micrograph was recorded in: host (metal + chalcogen), dopant, beam
energy and detector. The 23-value context vector that encodes it is computed in ``kernels.context``; its
column layout is in ``contract.features``.

A *frame's* context (``FrameContext``) is a case plus what a micrograph adds: its pixel size, the catalog's
lattice constant of its host and where each value came from. ``FrameContext.from_mapping`` is the one place a
context given as a mapping (file tags merged with command-line options, a labelling project's image) is
checked and coerced; the borders (``inference``, ``labelling``) pass the typed value, and ``as_dict`` writes it
(summary.json, model cards, the labelling database).

An undoped sample is a case whose dopant is ``NO_DOPANT`` (``"none"``): see ``NO_DOPANT_SHELL_FRACTIONS`` for
its encoding and ``docs/context.md`` for the reasoning.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from .errors import InputError


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


CONTEXT_FIELDS = ("host", "dopant", "beam_energy_kev", "detector")
"""The values a frame's context is given by (metal, chalcogen and the lattice constant follow from the host)."""
OPTIONS = {"host": "--host", "dopant": "--dopant", "beam_energy_kev": "--energy-kev", "detector": "--detector",
           "pixel_size_angstrom": "--pixel-size-angstrom"}
"""The command-line option that gives each value (named in every message about it)."""


def _from(source) -> str:
    return f" ({source})" if source else ""


def _brief(value) -> str:
    return repr(str(value)[:40]) if not isinstance(value, str) else repr(value[:40]) if len(value) > 40 else repr(value)


def _check_host(value, catalog, source=None) -> str:
    if not isinstance(value, str) or value not in catalog.hosts:
        raise InputError(f"--host {_brief(value)}{_from(source)} is not in the catalog; known hosts: "
                         f"{', '.join(sorted(catalog.hosts))}")
    return value


def _check_dopant(value, catalog, source=None, known_dopants: bool = False) -> str:
    """``NO_DOPANT`` for any spelling of none, else an element symbol; with ``known_dopants`` one of the
    catalog's dopants (a labelling project), else any element (inference: a dopant no model was trained on is
    refused afterwards as an unseen context, exit 4)."""
    if not isinstance(value, str):
        raise InputError(f"--dopant {_brief(value)}{_from(source)} is not a dopant name")
    dopant = canonical_dopant(value)
    if is_undoped(dopant):
        return dopant
    if known_dopants:
        if dopant not in catalog.dopants:
            raise InputError(f"--dopant {_brief(value)}{_from(source)} is not in the catalog; known dopants: "
                             f"{', '.join(catalog.dopants)}, or none for an undoped sample")
        return dopant
    from .elements import atomic_number  # deferred: pulls ase (heavy); features --help imports this module

    try:
        atomic_number(dopant)
    except ValueError:
        raise InputError(f"--dopant {_brief(value)}{_from(source)} is not an element: give a chemical symbol such as "
                         "Cr, or none for an undoped sample") from None
    return dopant


def _check_energy(value, source=None) -> int:
    try:
        energy = float(value)
    except (TypeError, ValueError):
        raise InputError(f"--energy-kev must be a number, got {_brief(value)}{_from(source)}") from None
    try:
        return check_beam_energy(energy)
    except ValueError:
        raise InputError(f"unsupported beam energy {energy:g} keV{_from(source)}; supported values (keV): "
                         f"{', '.join(str(v) for v in BEAM_ENERGIES_KEV)}") from None


def _check_detector(value, source=None) -> str:
    try:
        return check_detector(value)
    except ValueError:
        raise InputError(f"unsupported detector {_brief(value)}{_from(source)}; supported detectors: "
                         f"{', '.join(DETECTOR_NAMES)}") from None


def _check_pixel_size(value, source=None) -> float:
    try:
        pixel = float(value)
    except (TypeError, ValueError):
        pixel = float("nan")
    if not math.isfinite(pixel) or pixel <= 0:
        raise InputError(f"pixel size must be > 0 Å, got {value!r}{_from(source)}")
    return pixel


@dataclass(frozen=True)
class FrameContext(Case):
    """The context of one micrograph (or labelling image): the ``Case`` fields, checked against the catalog, plus
    ``catalog_lattice_constant_angstrom`` (the host's), ``pixel_size_angstrom`` (None when no source gives it:
    then it is inferred from the lattice) and ``sources`` (value name -> where it came from: ``option --host``,
    a file tag, ``file``, ``inferred ...``). Build it with ``from_mapping``; ``as_dict`` is the dict every
    written file holds. A *partial* context (a labelling image) keeps a missing value as None."""

    catalog_lattice_constant_angstrom: float | None = None
    pixel_size_angstrom: float | None = None
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "sources", MappingProxyType(dict(self.sources)))

    @classmethod
    def from_mapping(cls, values: Mapping, catalog, *, sources: Mapping | None = None, partial: bool = False,
                     known_dopants: bool = False) -> "FrameContext":
        """Check and coerce ``values`` (host, dopant, beam_energy_kev, detector, optional pixel_size_angstrom;
        other keys ignored), one rule per value, each raising ``InputError`` that names the value's option and
        source: the host must be in ``catalog`` (a ``contract.catalog.Catalog``); the dopant is ``"none"`` (any
        spelling) or an element (``known_dopants``: one of the catalog's); the beam energy one of
        ``BEAM_ENERGIES_KEV``; the detector one of ``DETECTORS`` (any case); the pixel size > 0. A missing value
        (None or "") is an error unless ``partial``."""
        sources = dict(sources or {})
        given = {k: values.get(k) for k in (*CONTEXT_FIELDS, "pixel_size_angstrom")}
        given = {k: (None if v is None or (isinstance(v, str) and v == "") else v) for k, v in given.items()}
        missing = [OPTIONS[k] for k in CONTEXT_FIELDS if given[k] is None]
        if missing and not partial:
            raise InputError(f"missing context value(s): {', '.join(missing)}")
        src = sources.get
        host = None if given["host"] is None else _check_host(given["host"], catalog, src("host"))
        h = catalog.hosts[host] if host is not None else None
        return cls(
            host=host, metal=h.metal if h else None, chalcogen=h.chalcogen if h else None,
            dopant=None if given["dopant"] is None else _check_dopant(given["dopant"], catalog, src("dopant"),
                                                                      known_dopants),
            beam_energy_kev=None if given["beam_energy_kev"] is None else _check_energy(given["beam_energy_kev"],
                                                                                        src("beam_energy_kev")),
            detector=None if given["detector"] is None else _check_detector(given["detector"], src("detector")),
            catalog_lattice_constant_angstrom=h.lattice_constant_angstrom if h else None,
            pixel_size_angstrom=None if given["pixel_size_angstrom"] is None else
            _check_pixel_size(given["pixel_size_angstrom"], src("pixel_size_angstrom")),
            sources=sources)

    def with_source(self, key: str, source: str) -> "FrameContext":
        """The same context with ``sources[key]`` set to ``source``."""
        return replace(self, sources={**self.sources, key: source})

    def case(self) -> Case:
        """The ``Case`` view (host, metal, chalcogen, dopant, beam energy, detector)."""
        return Case(self.host, self.metal, self.chalcogen, self.dopant, self.beam_energy_kev, self.detector)

    def as_dict(self) -> dict:
        """host, metal, chalcogen, dopant, beam_energy_kev, detector, catalog_lattice_constant_angstrom,
        pixel_size_angstrom, sources (a plain dict): the keys ``summary.json`` and the model cards were written
        with before this type existed."""
        d = {k: getattr(self, k) for k in ("host", "metal", "chalcogen", "dopant", "beam_energy_kev", "detector",
                                           "catalog_lattice_constant_angstrom", "pixel_size_angstrom")}
        d["sources"] = dict(self.sources)
        return d


def case_key(case) -> tuple:
    """(host, dopant, beam energy in keV, detector) of a ``Case``/``FrameContext`` or of a training case's dict:
    what makes two contexts the same."""
    return (str(case_value(case, "host")), str(case_value(case, "dopant")),
            int(round(float(case_value(case, "beam_energy_kev")))), str(case_value(case, "detector")).upper())


def case_value(case, key: str):
    """``case.key`` of a ``Case``/``FrameContext``, ``case[key]`` of a training case's dict (checkpoints and model
    cards keep those as dicts); ``KeyError`` when absent."""
    if isinstance(case, Case):
        if not hasattr(case, key):
            raise KeyError(key)
        return getattr(case, key)
    return case[key]
