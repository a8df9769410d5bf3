"""Multislice convergence: column intensities with the production slicing against uniform 1 Å (the old default)
and a fine-sliced reference, and what static (no frozen phonons) costs in contrast, in one run.

    python bench/slicing.py [--hosts WSe2 MoS2 TaSe2] [--energies 60 80 100] [--fine 0.1] [--phonons 6]

For each host, a pristine metal column (environment 12: M with three X2 neighbours) on the demo's 3 x 2
supercell; the probe sits exactly on the metal column and on one chalcogen-pair column (four probe positions,
so each run is cheap). Intensities are fractions of the incident beam, HAADF 68-280 and MAADF 30-120 mrad at
31 mrad convergence. The reference is ``uniform`` slicing of ``--fine`` Å; the last column is ``planes`` with
``--phonons`` frozen-phonon configurations (rms 0.08 Å), the static-vs-thermal contrast. ``--finite``: the same
structure with abTEM's finite projection (the 3D potential integrated over each slice) on fine slices, the limit
that the multislice converges to as slices get thin; the infinite projection (each atom a single phase grating,
what production uses) cannot reach it by thinner slicing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import print_table, write_result  # noqa: E402

DETECTORS = {"HAADF": {"inner_mrad": 68.0, "outer_mrad": 280.0}, "MAADF": {"inner_mrad": 30.0, "outer_mrad": 120.0}}
REPEATS = (3, 2)
VACUUM_ANGSTROM = 2.0


def column_intensities(host: dict, energy_kev: float, slicing: str, slice_thickness_angstrom: float | None,
                       frozen_phonons: int = 0, seed: int = 0, projection: str = "infinite") -> dict[str, dict[str, float]]:
    """{detector: {"M": intensity at the metal column, "X2": at a chalcogen-pair column}}."""
    import abtem

    from simulate import multislice
    from contract.environments import ENVIRONMENTS
    from simulate.optics import gpts_reaching
    from simulate.structures import build_environment

    atoms = build_environment(host, "Cr", ENVIRONMENTS[12], REPEATS, VACUUM_ANGSTROM)
    m_xy = np.asarray(atoms.info["centre_xy_angstrom"])
    # the chalcogen-pair neighbour that is off both scan axes (a 2 x 2 grid scan needs a positive extent)
    x_xy = next(np.asarray(xy) for xy in atoms.info["neighbour_xy_angstrom"]
                if (np.abs(np.asarray(xy) - m_xy) > 0.5).all())
    extent = tuple(np.diag(atoms.cell)[:2])
    source = atoms
    if frozen_phonons:
        source = abtem.FrozenPhonons(atoms, num_configs=frozen_phonons, sigmas=0.08, seed=seed)
    # a 2 x 2 scan whose opposite corners are the metal and the chalcogen column ([row, col] = [y, x])
    start, end = np.minimum(m_xy, x_xy), np.maximum(m_xy, x_xy)
    m_px, x_px = ((m_xy > x_xy).astype(int)[::-1], (x_xy > m_xy).astype(int)[::-1])
    images = multislice.scan_images(
        source, start=tuple(start), end=tuple(end), n_px=2, endpoint=True, beam_energy_kev=energy_kev,
        gpts=gpts_reaching(extent, energy_kev, 280.0), convergence_semiangle_mrad=31.0, detectors=DETECTORS,
        slicing=slicing, slice_thickness_angstrom=slice_thickness_angstrom, projection=projection)
    return {det: {"M": float(im[tuple(m_px)]), "X2": float(im[tuple(x_px)])} for det, im in images.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", nargs="+", default=["WSe2", "MoS2", "TaSe2"])
    ap.add_argument("--energies", nargs="+", type=int, default=[60, 80, 100])
    ap.add_argument("--fine", type=float, default=0.1, help="reference slice thickness [Å]")
    ap.add_argument("--phonons", type=int, default=16, help="frozen-phonon configurations (0: skip)")
    ap.add_argument("--finite", type=float, default=0.05,
                    help="slice thickness [Å] of a finite-projection run, the physical limit (0: skip)")
    args = ap.parse_args()

    from contract.catalog import load_catalog
    from simulate import multislice

    hosts = load_catalog().raw["hosts"]
    multislice.configure_abtem("cpu", "FFTW_ESTIMATE")
    ref_name = f"uniform {args.fine} A (reference)"
    variants = {"uniform 1 A (old)": ("uniform", 1.0, 0, "infinite"), "planes (new)": ("planes", None, 0, "infinite"),
                ref_name: ("uniform", args.fine, 0, "infinite")}
    if args.finite:
        variants[f"finite projection {args.finite} A"] = ("uniform", args.finite, 0, "finite")
    if args.phonons:
        variants[f"planes + {args.phonons} frozen phonons"] = ("planes", None, args.phonons, "infinite")
    rows, records = [], []
    for host_name in args.hosts:
        host = hosts[host_name]
        for energy in args.energies:
            values, seconds = {}, {}
            for name, (slicing, thickness, phonons, projection) in variants.items():
                t0 = time.perf_counter()
                values[name] = column_intensities(host, energy, slicing, thickness, phonons, projection=projection)
                seconds[name] = time.perf_counter() - t0
            ref = values[ref_name]
            for det in DETECTORS:
                row = {"host": host_name, "keV": energy, "detector": det}
                for name in variants:
                    v = values[name][det]
                    row[f"M/X2 {name}"] = f"{v['M'] / v['X2']:.3f}"
                for name in ("uniform 1 A (old)", "planes (new)"):
                    v = values[name][det]
                    err = max(abs(v[c] / ref[det][c] - 1) for c in ("M", "X2"))
                    row[f"max |err| {name.split(' (')[0]}"] = f"{100 * err:.2f} %"
                if args.finite:  # the infinite projection's own error, against the finite-projection limit
                    v, f = values["planes (new)"][det], values[f"finite projection {args.finite} A"][det]
                    row["planes vs finite M, X2"] = f"{100 * (v['M'] / f['M'] - 1):+.1f} %, {100 * (v['X2'] / f['X2'] - 1):+.1f} %"
                rows.append(row)
            records.append({"host": host_name, "beam_energy_kev": energy, "intensities": values, "seconds": seconds})
            print(f"{host_name} {energy} keV done ({', '.join(f'{k}: {v:.1f} s' for k, v in seconds.items())})",
                  flush=True)
    print_table(rows, list(rows[0]))
    path = write_result("slicing", {"hosts": args.hosts, "energies_kev": args.energies, "fine_angstrom": args.fine,
                                    "frozen_phonons": args.phonons, "finite_angstrom": args.finite,
                                    "supercell_repeats": REPEATS,
                                    "vacuum_angstrom": VACUUM_ANGSTROM, "records": records, "table": rows})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
