"""The column-signal table of the physical context encoding (``contract.physical_context``): the detector signal
of one isolated atomic column with the probe on it, for every transition metal and chalcogen atom and every
catalog host's chalcogen pair, at every beam energy and detector of the context.

    python -m simulate column-signals [--out contract/column_signals.json]

One single-position multislice run per (column, beam energy) gives both detectors; the whole table is ~280 runs,
about a minute on one core. The settings are the simulation's: Lobato parametrisation, aberration-free probe of
``CONVERGENCE_SEMIANGLE_MRAD``, static potential, slices at the atomic planes, the infinite projection.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from contract.catalog import load_catalog
from contract.context import BEAM_ENERGIES_KEV, CONVERGENCE_SEMIANGLE_MRAD, DETECTORS
from contract.elements import is_transition_metal
from contract.jsonio import json_text
from contract.physical_context import PHYSICAL_CONTEXT_VERSION, default_table_path

from .multislice import configure_abtem, slice_thicknesses

CELL_ANGSTROM = 12.0
"""Side of the square cell around the column: the probe tails at the cell corner (8.5 Å away) are < 1e-4 of
the column's signal."""
GPTS = 384
"""Grid points per side: 0.031 Å, reaching 520 mrad at 60 keV (beyond HAADF's 280 mrad)."""
CHALCOGENS = ("S", "Se", "Te")


def transition_metals() -> list[str]:
    from ase.data import chemical_symbols

    return [s for s in chemical_symbols[1:87] if is_transition_metal(s)]


def column_atoms(symbol: str, n_atoms: int, spacing_angstrom: float = 0.0):
    """An isolated column of ``n_atoms`` atoms (1 or 2, the pair ``spacing_angstrom`` apart along the beam) at the
    centre of a ``CELL_ANGSTROM`` cell with 2 Å of vacuum above and below."""
    from ase import Atoms

    z = [2.0 + i * spacing_angstrom for i in range(n_atoms)]
    c = CELL_ANGSTROM / 2
    return Atoms([symbol] * n_atoms, positions=[(c, c, zi) for zi in z],
                 cell=(CELL_ANGSTROM, CELL_ANGSTROM, max(z) + 2.0), pbc=True)


def detector_signals(measurement) -> dict:
    """{detector: signal} of a ``FlexibleAnnularDetector`` measurement of one probe position."""
    return {name: float(np.asarray(measurement.integrate_radial(d.inner_mrad, d.outer_mrad).array,
                                   dtype=np.float64).ravel()[0]) for name, d in DETECTORS.items()}


def vacuum_signals(beam_energy_kev: int) -> dict:
    """{detector: signal} of the probe with no specimen, on the columns' grid: the bright-field disc's rim that a
    detector whose inner angle is below the convergence angle collects (MAADF), ~0 for HAADF."""
    import abtem

    probe = abtem.Probe(energy=beam_energy_kev * 1e3, semiangle_cutoff=CONVERGENCE_SEMIANGLE_MRAD,
                        extent=CELL_ANGSTROM, gpts=GPTS)
    return detector_signals(abtem.FlexibleAnnularDetector().detect(probe.build().compute()).compute())


def probe_signals(atoms, beam_energy_kev: int) -> dict:
    """{detector: signal with the probe on the column}, fractions of the beam."""
    import abtem
    import dask

    potential = abtem.Potential(atoms, gpts=(GPTS, GPTS), slice_thickness=slice_thicknesses(atoms, "planes", None),
                                projection="infinite", parametrization="lobato")
    probe = abtem.Probe(energy=beam_energy_kev * 1e3, semiangle_cutoff=CONVERGENCE_SEMIANGLE_MRAD)
    probe.grid.match(potential)
    reach = min(probe.cutoff_angles)
    if max(d.outer_mrad for d in DETECTORS.values()) > reach:
        raise ValueError(f"grid reaches {reach:.0f} mrad at {beam_energy_kev} keV: raise GPTS")
    c = CELL_ANGSTROM / 2
    scan = abtem.CustomScan(np.array([[c, c]]))
    with dask.config.set(scheduler="synchronous"):
        measurement = probe.scan(potential.build(lazy=False), scan=scan,
                                 detectors=abtem.FlexibleAnnularDetector()).compute()
    return detector_signals(measurement)


def excess(on: dict, vacuum: dict) -> dict:
    return {d: on[d] - vacuum[d] for d in on}


def compute_table(energies=BEAM_ENERGIES_KEV, elements=None, catalog=None, progress=print) -> dict:
    """The table ``contract.physical_context.read_column_signals`` reads (see there for its layout)."""
    configure_abtem("cpu", "FFTW_ESTIMATE")
    catalog = catalog or load_catalog()
    elements = list(elements or transition_metals() + list(CHALCOGENS))
    table = {"version": PHYSICAL_CONTEXT_VERSION, "parametrization": "lobato",
             "convergence_semiangle_mrad": CONVERGENCE_SEMIANGLE_MRAD,
             "detectors": {n: d.as_config() for n, d in DETECTORS.items()},
             "cell_angstrom": CELL_ANGSTROM, "gpts": GPTS, "units": "fraction of the incident beam above the vacuum "
             "signal (vacuum: the signal itself)", "vacuum": {}, "atoms": {}, "pairs": {}}
    started = time.perf_counter()
    for energy in energies:
        key = str(int(energy))
        table["vacuum"][key] = vacuum = vacuum_signals(energy)
        for symbol in elements:
            table["atoms"].setdefault(symbol, {})[key] = excess(probe_signals(column_atoms(symbol, 1), energy), vacuum)
        for name, host in sorted(catalog.hosts.items()):
            pair = column_atoms(host.chalcogen, 2, host.thickness_angstrom)
            table["pairs"].setdefault(name, {})[key] = excess(probe_signals(pair, energy), vacuum)
        progress(f"column-signals: {energy} keV done ({time.perf_counter() - started:.0f} s)")
    return table


def write_table(out: str | Path | None = None, progress=print) -> Path:
    path = Path(out) if out else default_table_path()
    path.write_text(json_text(compute_table(progress=progress)))
    progress(f"column-signals: wrote {path}")
    return path
