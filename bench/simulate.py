"""Simulation benchmark: pipeline time per image against the bare abTEM call on the same structures, in one run.

    python bench/simulate.py [--config configs/dataset/demo.yaml] [--images 4] [--energy 60]

* bare abTEM: Potential -> build -> Probe.scan(GridScan, FlexibleAnnularDetector) -> integrate_radial twice,
  called directly here in this process (no project code in the timed part), one warm-up first;
* pipeline: the same structures as one task through ``simulate.run.simulate`` on a 1-worker LocalCluster
  (structure building, abTEM, noise, patch cutting, zarr writes, Dask), per image, from the task's own clock;
* FFT floor: the physical work of the multislice, 2 FFTs of gpts² per probe position per slice, timed with
  pyFFTW alone on the same batch shape. The bare/FFT ratio says how close abTEM itself is to that limit.

Target: pipeline / bare <= 1.1 on CPU. On a GPU (device: gpu), report images/s; the FFT floor there is about
20-25 ms per image on an H100.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# the repository first, so that `simulate` is the package and not this script (bench/ stays on the path for _report)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import print_table, versions, write_result  # noqa: E402


def bare_abtem_seconds(structures, cfg, energy, window, repeats: int) -> list[float]:
    import abtem
    import dask

    from simulate import multislice

    ms, imaging = cfg.multislice, cfg.imaging
    times = []
    for atoms in [structures[0]] + structures:  # the first is a warm-up (numba JIT, FFTW planning)
        t0 = time.perf_counter()
        thicknesses = multislice.slice_thicknesses(atoms, ms.slicing, ms.slice_thickness_angstrom)
        potential = abtem.Potential(atoms, gpts=ms.gpts[energy], slice_thickness=thicknesses,
                                    projection=ms.projection, parametrization=ms.parametrization)
        probe = abtem.Probe(energy=energy * 1e3, semiangle_cutoff=imaging.convergence_semiangle_mrad)
        probe.grid.match(potential)
        half = window.centre_px * window.sampling_angstrom
        cx, cy = atoms.info["centre_xy_angstrom"]
        scan = abtem.GridScan(start=(cx - half, cy - half), end=(cx + half, cy + half),
                              gpts=(window.n_px, window.n_px), endpoint=True)
        with dask.config.set(scheduler="synchronous"):
            potential = potential.build(lazy=False)
            m = probe.scan(potential, scan=scan, detectors=abtem.FlexibleAnnularDetector()).compute()
            for det in imaging.detectors.values():
                np.asarray(m.integrate_radial(det.inner_mrad, det.outer_mrad).array)
        times.append(time.perf_counter() - t0)
    return times[1:]


def fft_floor_seconds(gpts: int, n_positions: int, n_slices: int, batch: int = 16) -> float:
    """Seconds for 2 in-place FFTs of (batch, gpts, gpts) complex64 per slice, scaled to n_positions."""
    import pyfftw

    a = pyfftw.zeros_aligned((batch, gpts, gpts), dtype="complex64")
    a[:] = 1.0
    fwd = pyfftw.FFTW(a, a, axes=(-2, -1), direction="FFTW_FORWARD", threads=1, flags=("FFTW_ESTIMATE",))
    bwd = pyfftw.FFTW(a, a, axes=(-2, -1), direction="FFTW_BACKWARD", threads=1, flags=("FFTW_ESTIMATE",))
    fwd(), bwd()
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        fwd(), bwd()
    per_batch = (time.perf_counter() - t0) / reps
    return per_batch * n_slices * n_positions / batch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/dataset/demo.yaml")
    ap.add_argument("--images", type=int, default=4, help="environments (images) per measurement")
    ap.add_argument("--energy", type=int, default=60)
    args = ap.parse_args()

    from simulate import config, multislice
    from contract.environments import ENVIRONMENTS
    from simulate.run import simulate
    from simulate.structures import build_environment

    raw = config.load_yaml(args.config)
    raw = copy.deepcopy(raw)
    host_name, dopant = config.resolve(raw).combos[0]
    raw.update(selection={"combos": [[host_name, dopant]]}, environments=[0, 4, 12, 23, 8, 13][: args.images])
    raw["imaging"]["beam_energies_kev"] = [args.energy]
    cfg = config.resolve(raw)
    ms, host = cfg.multislice, cfg.materials["hosts"][host_name]
    window = multislice.scan_window(host["lattice_constant_angstrom"], args.energy,
                                    cfg.imaging.convergence_semiangle_mrad, ms.scan_margin_px)
    structures = [build_environment(host, dopant, ENVIRONMENTS[e], tuple(ms.supercell_repeats),
                                    ms.vacuum_angstrom) for e in cfg.environments]
    n_slices = len(multislice.slice_thicknesses(structures[0], ms.slicing, ms.slice_thickness_angstrom))

    multislice.configure_abtem("cpu", ms.fftw_planning_effort)
    bare = bare_abtem_seconds(structures, cfg, args.energy, window, repeats=1)

    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "bench.yaml"
        import yaml

        cfg_path.write_text(yaml.safe_dump(raw))
        from cluster import open_client

        quiet = open(os.devnull, "w")
        t0 = time.perf_counter()
        with open_client("local", n_workers=1) as client:
            # a cold run (a fresh worker pays numba JIT and FFTW planning once), then the same work warm
            cold = simulate(cfg_path, Path(tmp) / "cold.zarr", client=client, stream=quiet)
            wall = time.perf_counter() - t0
            warm = simulate(cfg_path, Path(tmp) / "warm.zarr", client=client, stream=quiet)
    pipeline_per_image = warm["task_seconds"][0] / len(structures)
    cold_per_image = cold["task_seconds"][0] / len(structures)
    bare_per_image = float(np.median(bare))
    floor = fft_floor_seconds(ms.gpts[args.energy], window.n_px**2, n_slices)

    rows = [
        {"measure": "FFT floor (pyFFTW, 2 per slice per position)", "s/image": f"{floor:.3f}", "ratio": "1.00 (of floor)"},
        {"measure": "bare abTEM (median)", "s/image": f"{bare_per_image:.3f}", "ratio": f"{bare_per_image / floor:.2f} (of floor)"},
        {"measure": "pipeline, per image inside the worker", "s/image": f"{pipeline_per_image:.3f}",
         "ratio": f"{pipeline_per_image / bare_per_image:.2f} (of bare)"},
        {"measure": "pipeline, first task of a fresh worker", "s/image": f"{cold_per_image:.3f}",
         "ratio": f"{cold_per_image / bare_per_image:.2f} (of bare)"},
        {"measure": "pipeline, wall incl. cluster start (cold)", "s/image": f"{wall / len(structures):.3f}",
         "ratio": f"{wall / len(structures) / bare_per_image:.2f} (of bare)"},
    ]
    print(f"{host_name}+{dopant}, {args.energy} keV, gpts {ms.gpts[args.energy]}, scan {window.n_px}x{window.n_px}, "
          f"{n_slices} slices, {len(structures)} images, patches/image {cfg.patches.patches_per_image} x 2 detectors")
    print_table(rows, ["measure", "s/image", "ratio"])
    overhead = pipeline_per_image / bare_per_image
    print(f"overhead ratio pipeline/bare = {overhead:.2f} (target <= 1.10)")
    path = write_result("simulate", {
        "config": args.config, "host": host_name, "dopant": dopant, "beam_energy_kev": args.energy,
        "gpts": ms.gpts[args.energy], "scan_px": window.n_px, "slices": n_slices, "images": len(structures),
        "bare_abtem_s_per_image": bare, "pipeline_s_per_image": pipeline_per_image,
        "pipeline_cold_s_per_image": cold_per_image, "pipeline_wall_s_per_image": wall / len(structures), "fft_floor_s_per_image": floor,
        "overhead_ratio": overhead, "bare_over_fft_floor": bare_per_image / floor, "target_overhead": 1.1,
        "versions": versions("abtem", "numpy", "pyFFTW", "dask", "distributed", "zarr"),
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
