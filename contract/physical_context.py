"""The physical context encoding: how bright each class's central column is, under the case's beam and detector.

The paper's context (``kernels.context.context_vector``) describes the elements by their electron-shell
occupancy fractions. Those say how alike two elements' shells are, not which column is brighter under a given
beam energy and detector, which is what decides the classes (in WTe2 the Te2 column outscatters W; in MAADF the
Se2 column of WSe2 outshines W). The *physical* encoding gives the model that directly:

=====  ===========================  ==========================================================================
index  name                         meaning (dimensionless)
=====  ===========================  ==========================================================================
0      x2_over_metal_log            ln(I_X2 / I_M): chalcogen-pair column (class X2) against the host-metal column
1      x_over_metal_log             ln(I_X / I_M): single-chalcogen column (class VacX) against the metal column
2      dopant_over_metal_log        ln(I_D / I_M): dopant column (class D); 0 when undoped
3      dopant_present               1, or 0 for an undoped case (class D is then masked anyway)
4      background_over_metal        I_0 / I_M: the detector's signal with no atom under the probe (the bright-
                                    field disc's rim reaching a MAADF inner angle below the convergence angle)
5-6    detector_haadf, _maadf       detector one-hot (``contract.context.DETECTOR_NAMES`` order)
7-9    beam_energy_60kev, ...       beam-energy one-hot (``contract.context.BEAM_ENERGIES_KEV`` order)
=====  ===========================  ==========================================================================

``I_c`` is the signal of an *isolated* column c of that class, with the probe on it, above the vacuum signal
``I_0``, as a fraction of the incident beam, at the case's beam energy and detector: one single-position
multislice run per column with the simulation's own abTEM settings (Lobato parametrisation, 31 mrad aberration-
free probe, static potential, the host's layer thickness for the X2 pair). The values are in the table
``contract/column_signals.json`` (``python -m simulate column-signals`` writes it; ``tests/test_physical_context.py``
recomputes entries of it with abTEM). An isolated column is not a column in a lattice (the neighbours' probe
tails add to it), but it orders the columns as the simulated lattice does, in HAADF and MAADF, where the elastic
cross-section alone does not (WSe2 MAADF: cross-section ln ratio -0.56, isolated columns +0.30, lattice +0.24).
Measured against the clean lattice patches of ``configs/dataset/hosts.yaml`` (``bench/column_contrast.py``, 80 keV,
13 hosts): HAADF within 0.05 of the lattice's ln(I_X2/I_M) for every host, Spearman 1.00; MAADF Spearman 0.97, all
13 signs right, the isolated value larger (by up to 0.76 for VSe2, where the lattice's bright-field rim adds to
both columns).

Normalisation: every intensity is divided by the host metal's, and logs are taken, so the metal column is the
fixed point (0) of every host and a host's place is set by its contrasts, not by its elements' Z. A new host then
lies *between* training hosts whenever its contrasts do: WTe2 (Te2 about as bright as W) sits between the S hosts
of light metals and the Se hosts of heavy ones, where in shell-fraction space it lies beyond every training host.
"""
from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path

from .context import BEAM_ENERGIES_KEV, DETECTOR_NAMES

PHYSICAL_CONTEXT_VERSION = 1
"""Version of the encoding and its table, recorded in checkpoints (a model trained on another version's values
is refused)."""

COLUMN_NAMES = ("x2_over_metal_log", "x_over_metal_log", "dopant_over_metal_log", "dopant_present",
                "background_over_metal")
"""The five column-contrast values (the material part: what ``material distance`` compares)."""
PHYSICAL_CONTEXT_NAMES = COLUMN_NAMES + tuple(f"detector_{d.lower()}" for d in DETECTOR_NAMES) + tuple(
    f"beam_energy_{e}kev" for e in BEAM_ENERGIES_KEV)
PHYSICAL_CONTEXT_SIZE = len(PHYSICAL_CONTEXT_NAMES)  # 10
N_COLUMN_VALUES = len(COLUMN_NAMES)

CONTEXT_ENCODINGS = ("shells", "physical")
"""``shells``: the paper's 23 values (shell fractions, detector and energy one-hots; stored in the features).
``physical``: the 10 values above, computed per case from the table; the stored 23 are not read."""
DEFAULT_CONTEXT_ENCODING = "shells"

TABLE_FILE = "column_signals.json"


def check_context_encoding(encoding) -> str:
    if encoding not in CONTEXT_ENCODINGS:
        raise ValueError(f"context_encoding must be one of {CONTEXT_ENCODINGS}, got {encoding!r}")
    return encoding


def default_table_path() -> Path:
    return Path(str(resources.files("contract") / TABLE_FILE))


@functools.lru_cache(maxsize=4)
def read_column_signals(path: str | None = None) -> dict:
    """The column-signal table (``python -m simulate column-signals`` writes it): ``{"vacuum": {energy:
    {detector: I_0}}, "atoms": {element: {energy: {detector: I}}}, "pairs": {host: {energy: {detector: I}}}, ...}``
    with energies as strings (JSON keys) and intensities as fractions of the incident beam above the vacuum."""
    p = default_table_path() if path is None else Path(path)
    table = json.loads(p.read_text())
    if table.get("version") != PHYSICAL_CONTEXT_VERSION:
        raise ValueError(f"{p}: column-signal table version {table.get('version')}, this code reads "
                         f"{PHYSICAL_CONTEXT_VERSION}: rewrite it with `python -m simulate column-signals`")
    return table


def column_signal(table: dict, kind: str, key: str, beam_energy_kev: int, detector: str) -> float:
    """One entry of the table (``kind`` "atoms" keyed by element, "pairs" by host, "vacuum" by nothing);
    ``ValueError`` naming the command that adds a missing one."""
    try:
        entry = table[kind] if kind == "vacuum" else table[kind][key]
        return float(entry[str(int(beam_energy_kev))][detector])
    except KeyError:
        what = {"atoms": f"element {key!r}", "pairs": f"host {key!r} (its chalcogen pair)", "vacuum": "vacuum"}[kind]
        raise ValueError(f"the physical context has no column signal for {what} at {beam_energy_kev} keV {detector}: "
                         f"add it with `python -m simulate column-signals` (it covers the catalog's hosts and "
                         f"every transition metal)") from None
