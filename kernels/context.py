"""The 23-value context vector (paper section 3, Fig. 3a). The axes (shells, detectors, beam energies) and
the column names are defined in ``contract.context`` and ``contract.features``.

Layout (stored order):

* 0-17: electron count per shell K, L, M, N, O, P of the ground-state configuration divided by Z, for the
  host metal M (0-5), the chalcogen X (6-11) and the dopant D (12-17). Shell counts come from the
  ``mendeleev`` element data (not a hand table), so irregular fillings are right: Mo is 2, 8, 18, 13, 1.
  Tungsten gives 2, 8, 18, 32, 12, 2 / 74 = 0.027, 0.108, 0.243, 0.432, 0.162, 0.027. The paper's text
  prints the fifth value as 0.108 (from a mistaken 2, 8, 18, 32, 18, 8 configuration, which sums to 86
  electrons, not 74); that is wrong and is not reproduced here.
  An undoped case (dopant ``"none"``) has the dopant block all zero (``contract.context.NO_DOPANT_SHELL_FRACTIONS``;
  every element's block sums to 1, so no element is encoded like it).
* 18-19: detector one-hot (HAADF, MAADF).
* 20-22: beam-energy one-hot (60, 80, 100 keV).

Then the contrast columns: 23-28 the Zernike ``a_n0`` for n = 0, 2, ..., 10 (``kernels.zernike``), 29-30 the
site-symmetry one-hot (brighter sublattice, dimmer sublattice; ``kernels.site_symmetry``).

The physical encoding (``contract.physical_context``: column contrasts from the isolated-column signal table) is
``physical_context_vector``; ``model_inputs`` assembles what a model of either encoding reads from stored rows.
"""
from __future__ import annotations

import functools

import numpy as np

from contract.context import (
    BEAM_ENERGIES_KEV,
    DETECTOR_NAMES,
    NO_DOPANT_SHELL_FRACTIONS,
    SHELLS,
    Case,
    check_beam_energy,
    check_detector,
    is_undoped,
)
from contract.features import FEATURE_NAMES
from contract.physical_context import check_context_encoding, column_signal, read_column_signals


@functools.lru_cache(maxsize=None)
def shell_fractions(symbol: str) -> tuple[float, ...]:
    """Electrons in shells K..P of the ground-state configuration of ``symbol``, divided by Z (6 floats).

    Cached per element (the ``mendeleev`` lookup costs about a second).
    """
    if not isinstance(symbol, str) or not symbol.strip():
        raise ValueError(f"element symbol must be a non-empty string, got {symbol!r}")
    from mendeleev import element  # deferred: slow import (about a second or more); only this lookup needs it
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


def dopant_shell_fractions(dopant: str) -> tuple[float, ...]:
    """The dopant block of the context vector: ``shell_fractions(dopant)``, or all zeros for ``"none"``."""
    return NO_DOPANT_SHELL_FRACTIONS if is_undoped(dopant) else shell_fractions(dopant)


def material_vector(metal: str, chalcogen: str, dopant: str) -> np.ndarray:
    """(18,) float64: the shell fractions of metal, chalcogen and dopant (the first 18 context values)."""
    return np.asarray(shell_fractions(metal) + shell_fractions(chalcogen) + dopant_shell_fractions(dopant))


def detector_one_hot(detector: str) -> np.ndarray:
    """(2,) float32 one-hot in ``contract.context.DETECTOR_NAMES`` order (case-insensitive name)."""
    out = np.zeros(len(DETECTOR_NAMES), dtype=np.float32)
    out[DETECTOR_NAMES.index(check_detector(detector))] = 1
    return out


def beam_energy_one_hot(beam_energy_kev) -> np.ndarray:
    """(3,) float32 one-hot in ``contract.context.BEAM_ENERGIES_KEV`` order."""
    out = np.zeros(len(BEAM_ENERGIES_KEV), dtype=np.float32)
    out[BEAM_ENERGIES_KEV.index(check_beam_energy(beam_energy_kev))] = 1
    return out


def context_vector(metal: str, chalcogen: str, dopant: str, detector: str, beam_energy_kev) -> np.ndarray:
    """The 23-value context vector (float32) of one case; layout in the module docstring."""
    # check the cheap fields first so that a bad detector/energy fails before any element lookup
    det = detector_one_hot(detector)
    energy = beam_energy_one_hot(beam_energy_kev)
    return np.concatenate([material_vector(metal, chalcogen, dopant), det, energy]).astype(np.float32)


def case_context(case: dict | Case) -> np.ndarray:
    """Context vector of a ``Case`` or of one row of a store's ``attrs["cases"]``."""
    c = case if isinstance(case, Case) else Case.from_dict(case)
    return context_vector(c.metal, c.chalcogen, c.dopant, c.detector, c.beam_energy_kev)


def feature_names() -> list[str]:
    """Names of the 31 stored feature columns (``contract.features.FEATURE_NAMES``)."""
    return list(FEATURE_NAMES)


def physical_context_vector(host: str, metal: str, chalcogen: str, dopant: str, detector: str, beam_energy_kev,
                            table: dict | None = None) -> np.ndarray:
    """The 10-value physical context (float32) of one case; layout and meaning in ``contract.physical_context``.
    ``host`` names the chalcogen pair's row of the column-signal table (its layer thickness); ``table`` defaults
    to the shipped one. ``ValueError`` for an element or host the table lacks."""
    det = detector_one_hot(detector)
    energy = beam_energy_one_hot(beam_energy_kev)
    detector, beam_energy_kev = check_detector(detector), check_beam_energy(beam_energy_kev)
    table = table if table is not None else read_column_signals()

    def signal(kind, key):
        return column_signal(table, kind, key, beam_energy_kev, detector)

    i_metal = signal("atoms", metal)
    undoped = is_undoped(dopant)
    values = [np.log(signal("pairs", host) / i_metal), np.log(signal("atoms", chalcogen) / i_metal),
              0.0 if undoped else np.log(signal("atoms", dopant) / i_metal), 0.0 if undoped else 1.0,
              signal("vacuum", "") / i_metal]
    return np.concatenate([np.asarray(values), det, energy]).astype(np.float32)


def case_physical_context(case: dict | Case) -> np.ndarray:
    """``physical_context_vector`` of a ``Case`` or of one row of a store's ``attrs["cases"]``."""
    c = case if isinstance(case, Case) else Case.from_dict(case)
    return physical_context_vector(c.host, c.metal, c.chalcogen, c.dopant, c.detector, c.beam_energy_kev)


def case_model_context(case: dict | Case, encoding: str) -> np.ndarray | None:
    """The context block a model of ``encoding`` reads for ``case``: None for ``shells`` (the stored 23 columns
    are read as they are), the physical vector for ``physical``."""
    return None if check_context_encoding(encoding) == "shells" else case_physical_context(case)


def model_inputs(stored: np.ndarray, columns, context: np.ndarray | None) -> np.ndarray:
    """What a model reads, (N, k) float32: the ``columns`` of the stored (N, 31) features, after the physical
    context block ``context`` ((10,) for every row or (N, 10); None for the paper's encoding, whose context is
    among the stored columns)."""
    stored = np.asarray(stored, dtype=np.float32)
    x = stored[:, list(columns)]
    if context is None:
        return np.ascontiguousarray(x)
    context = np.asarray(context, dtype=np.float32)
    context = np.broadcast_to(context, (stored.shape[0], context.shape[-1]))
    return np.ascontiguousarray(np.concatenate([context, x], axis=1))
