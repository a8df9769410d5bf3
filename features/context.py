"""The 23-value context vector (paper section 3, Fig. 3a) and the names of all 31 feature columns.

Layout (stored order):

* 0-17: electron count per shell K, L, M, N, O, P of the ground-state configuration divided by Z, for the
  host metal M (0-5), the chalcogen X (6-11) and the dopant D (12-17). Shell counts come from the
  ``mendeleev`` element data (not a hand table), so irregular fillings are right: Mo is 2, 8, 18, 13, 1.
  Tungsten gives 2, 8, 18, 32, 12, 2 / 74 = 0.027, 0.108, 0.243, 0.432, 0.162, 0.027. The paper's text
  prints the fifth value as 0.108 (from a mistaken 2, 8, 18, 32, 18, 8 configuration, which sums to 86
  electrons, not 74); that is wrong and is not reproduced here.
* 18-19: detector one-hot (HAADF, MAADF).
* 20-22: beam-energy one-hot (60, 80, 100 keV).

Then the contrast columns: 23-28 the Zernike ``a_n0`` for n = 0, 2, ..., 10 (``features.zernike``), 29-30 the
site-symmetry one-hot (brighter sublattice, dimmer sublattice; ``features.site_symmetry``).
"""
from __future__ import annotations

import functools

import numpy as np

SHELLS = ("K", "L", "M", "N", "O", "P")
DETECTORS = ("HAADF", "MAADF")
BEAM_ENERGIES_KEV = (60, 80, 100)
CONTEXT_SIZE = 3 * len(SHELLS) + len(DETECTORS) + len(BEAM_ENERGIES_KEV)  # 23
ROLES = ("metal", "chalcogen", "dopant")


@functools.lru_cache(maxsize=None)
def shell_fractions(symbol: str) -> tuple[float, ...]:
    """Electrons in shells K..P of the ground-state configuration of ``symbol``, divided by Z (6 floats).

    Cached per element (the ``mendeleev`` lookup costs about a second).
    """
    if not isinstance(symbol, str) or not symbol.strip():
        raise ValueError(f"element symbol must be a non-empty string, got {symbol!r}")
    from mendeleev import element  # slow import; only needed here
    try:
        el = element(symbol.strip())
    except Exception as exc:
        raise ValueError(f"unknown element {symbol!r}: give a chemical symbol such as 'W', 'Se' or 'Mo'") from exc
    per_shell = el.ec.electrons_per_shell()
    extra = set(per_shell) - set(SHELLS)
    if extra:
        raise ValueError(f"element {symbol!r} occupies shells {sorted(extra)} beyond K-P; supported shells: "
                         f"{', '.join(SHELLS)}")
    z = el.atomic_number
    counts = [per_shell.get(s, 0) for s in SHELLS]
    if sum(counts) != z:
        raise ValueError(f"element {symbol!r}: shell counts {counts} do not sum to Z = {z}")
    return tuple(c / z for c in counts)


def detector_one_hot(detector: str) -> np.ndarray:
    """(2,) float32: HAADF -> [1, 0], MAADF -> [0, 1] (case-insensitive)."""
    key = str(detector).upper()
    if key not in DETECTORS:
        raise ValueError(f"unsupported detector {detector!r}; supported detectors: {', '.join(DETECTORS)}")
    out = np.zeros(len(DETECTORS), dtype=np.float32)
    out[DETECTORS.index(key)] = 1
    return out


def beam_energy_one_hot(beam_energy_kev) -> np.ndarray:
    """(3,) float32 one-hot over 60, 80, 100 keV."""
    try:
        e = float(beam_energy_kev)
    except (TypeError, ValueError):
        e = None
    if e is None or e not in BEAM_ENERGIES_KEV:
        raise ValueError(f"unsupported beam_energy_kev {beam_energy_kev!r}; supported values (keV): "
                         f"{', '.join(str(v) for v in BEAM_ENERGIES_KEV)}")
    out = np.zeros(len(BEAM_ENERGIES_KEV), dtype=np.float32)
    out[BEAM_ENERGIES_KEV.index(int(e))] = 1
    return out


def context_vector(metal: str, chalcogen: str, dopant: str, detector: str, beam_energy_kev) -> np.ndarray:
    """The 23-value context vector (float32) of one case; layout in the module docstring."""
    # check the cheap fields first so that a bad detector/energy fails before any element lookup
    det = detector_one_hot(detector)
    energy = beam_energy_one_hot(beam_energy_kev)
    shells = [np.asarray(shell_fractions(s), dtype=np.float32) for s in (metal, chalcogen, dopant)]
    return np.concatenate(shells + [det, energy]).astype(np.float32)


def case_context(case: dict) -> np.ndarray:
    """Context vector of one row of a store's ``attrs["cases"]`` (keys metal, chalcogen, dopant, detector,
    beam_energy_kev)."""
    missing = [k for k in ("metal", "chalcogen", "dopant", "detector", "beam_energy_kev") if k not in case]
    if missing:
        raise ValueError(f"case is missing field(s) {missing}: {case}")
    return context_vector(case["metal"], case["chalcogen"], case["dopant"], case["detector"],
                          case["beam_energy_kev"])


def feature_names() -> list[str]:
    """Names of the 31 stored feature columns, in order (context 23, Zernike 6, site symmetry 2)."""
    from .zernike import CONTRAST_ORDERS

    names = [f"{role}_shell_{s}_per_z" for role in ROLES for s in SHELLS]
    names += [f"detector_{d.lower()}" for d in DETECTORS]
    names += [f"beam_energy_{e}kev" for e in BEAM_ENERGIES_KEV]
    names += [f"zernike_n{n}_m0" for n in CONTRAST_ORDERS]
    names += ["site_brighter_sublattice", "site_dimmer_sublattice"]
    return names
