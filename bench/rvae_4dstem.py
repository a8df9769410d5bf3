"""The 4D-STEM demo and benchmark of the rVAE (seed 004) against the centre-of-mass (COM) family, from the same
stored patterns in the same run, at two or more doses.

Data: ``configs/dataset/fourdstem.yaml`` (simulated once with ``python -m simulate fourdstem`` into
``data/fourdstem.zarr`` and reused): graphene (84 x 72 probe positions, 41 x 41 patterns, one vacancy, one Si
dopant) and zincblende GaAs [001] (84 x 84, one As vacancy, one In on a Ga site), 80 keV, 25 mrad, Poisson
counts at 1e4, 1e5 and 1e6 e-/Å² (~410, 4 100, 41 000 electrons per pattern).

For each scan and dose: ``python -m rvae fit-4dstem`` (purely rotational rVAE, fitted to that scan's own
patterns), and the COM family (COM vector, |COM|, divergence, iCOM; ``kernels.com``) of the same patterns. Every
map goes through the same periodic-residual anomaly score (``rvae.maps``: deviation from the lattice-periodic
median over the supercell's cells), raw and after the same Gaussian smoothing of one scan step (``... smoothed``;
iCOM is already an integral over the whole scan, which averages noise). Localisation of the defects by each map:
* ROC AUC of positions within 1 Å of a defect (positives) against positions beyond 3 Å (negatives);
* distance from the map's strongest response to the nearest defect, and per defect the distance of the
  strongest response in its own half of the scan.
Angle: the rVAE angle (after the best offset and sign) and the COM direction against the direction from the
probe to the nearest column, at probe positions 0.2-0.8 Å from a column and 1.5 Å or more from a defect.
The COM family of the noise-free patterns is reported as the reference (every method finds a vacancy there).

    python bench/rvae_4dstem.py [--doses 10000 100000] [--scans graphene zincblende] [--max-epochs N]

Writes ``bench/results/rvae-4dstem-<utc date>.json`` and ``.png``.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._report import RESULTS, print_table, versions, write_result  # noqa: E402

BUDGET_SECONDS = 15 * 60
POSITIVE_WITHIN, NEGATIVE_BEYOND = 1.0, 3.0


def cpu_seconds() -> float:
    """User + system CPU time of this process (see bench/rvae_adf.py)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def ensure_store(config: Path, store: Path) -> None:
    from simulate.fourdstem_run import simulate_fourdstem

    if store.exists():
        from simulate.fourdstem_store import done_tasks

        if done_tasks(store).all():
            return
    simulate_fourdstem(config, store, resume=store.exists())


def com_scores(com: dict, fold, smooth_px: float = 0.0) -> dict[str, np.ndarray]:
    from rvae.maps import anomaly_score

    return {"com_vector": anomaly_score(np.stack([com["com_x"], com["com_y"]], -1), fold, smooth_px),
            "com_magnitude": anomaly_score(com["com_magnitude"], fold, smooth_px),
            "com_divergence": anomaly_score(com["com_divergence"], fold, smooth_px),
            "icom": anomaly_score(com["icom"], fold, smooth_px)}


def rvae_scores(maps: dict, k: int, period: int, fold, smooth_px: float = 0.0) -> dict[str, np.ndarray]:
    from rvae.maps import anomaly_score, circular_channels

    z = np.stack([maps[f"z{j + 1}"] for j in range(k)], -1)
    angle = circular_channels(maps["angle"] / period, period, maps["angle_std"])  # uncertain angles count less
    return {"rvae_anomaly": anomaly_score(np.concatenate([z, angle], -1), fold, smooth_px),
            "rvae_latents": anomaly_score(z, fold, smooth_px),
            "rvae_reconstruction": anomaly_score(maps["reconstruction_error"], fold, smooth_px)}


SMOOTH_PX = 1.0  # one scan step (~0.2 Å): every map is also scored after the same smoothing


def evaluate(score_maps: dict, truth: dict, meta) -> dict:
    from rvae.metrics import defect_localisation

    defects = np.array([[d["x_angstrom"], d["y_angstrom"]] for d in meta.defects])
    extent = tuple(meta.attrs["extent_angstrom"])
    return {name: defect_localisation(m, truth["defect_distance"], POSITIVE_WITHIN, NEGATIVE_BEYOND,
                                      truth["position"], defects, extent) for name, m in score_maps.items()}


def angle_scores(angle: np.ndarray | None, com_direction: np.ndarray, truth: dict) -> dict:
    from rvae.metrics import aligned_angle_agreement

    ring = (truth["atom_distance"] > 0.2) & (truth["atom_distance"] < 0.8) & (truth["defect_distance"] > 1.5)
    out = {"com_direction": aligned_angle_agreement(com_direction.ravel()[ring], truth["atom_direction"][ring])}
    if angle is not None:
        out["rvae_angle"] = aligned_angle_agreement(angle.ravel()[ring], truth["atom_direction"][ring])
    out["n_positions"] = int(ring.sum())
    return out


def figure(panels: list[tuple[str, dict, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["rVAE angle", "rvae_anomaly", "icom", "com_vector", "com_magnitude"]
    fig, axes = plt.subplots(len(panels), len(names), figsize=(3.0 * len(names), 2.9 * len(panels)), squeeze=False)
    for row, (label, maps, markers) in zip(axes, panels):
        for ax, name in zip(row, names):
            m = maps.get(name)
            if m is None:
                ax.set_axis_off()
                continue
            kw = {"cmap": "twilight", "vmin": -np.pi, "vmax": np.pi} if name == "rVAE angle" else {"cmap": "magma"}
            ax.imshow(m, interpolation="nearest", **kw)
            ax.scatter(markers[:, 1], markers[:, 0], s=50, facecolors="none", edgecolors="cyan", linewidths=1)
            ax.set_title(f"{label}\n{name}", fontsize=8)
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(REPO / "configs" / "dataset" / "fourdstem.yaml"))
    p.add_argument("--store", default=str(REPO / "data" / "fourdstem.zarr"))
    p.add_argument("--out", default=str(REPO / "runs" / "rvae-4dstem"))
    p.add_argument("--scans", nargs="+", default=["graphene", "zincblende"])
    p.add_argument("--doses", nargs="+", type=float, default=[1e4, 1e5])
    p.add_argument("--max-epochs", type=int, default=None, help="default: configs/rvae/fourdstem.yaml")
    p.add_argument("--fresh", action="store_true", help="delete --out first (otherwise finished fits are resumed)")
    a = p.parse_args(argv)
    if len(a.doses) < 2:
        p.error("give at least two doses: a comparison with COM means something only against dose")
    import zarr

    from contract import fourdstem as schema
    from contract.fourdstem import pattern_path, read_scan_meta
    from rvae.fit import com_maps_streaming, fit_4dstem
    from simulate.optics import wavelength_angstrom

    store, out = Path(a.store), Path(a.out)
    if a.fresh and out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    ensure_store(Path(a.config), store)
    simulate_seconds = time.perf_counter() - started
    root = zarr.open_group(str(store), mode="r")
    overrides = [] if a.max_epochs is None else ["--trainer.max_epochs", str(a.max_epochs)]
    results, rows, panels = {}, [], []
    for scan in a.scans:
        meta = read_scan_meta(store, scan)
        ny, nx = meta.scan_shape
        g = root[scan]
        truth = {"defect_distance": g[schema.DEFECT_DISTANCE][:].astype(np.float64),
                 "atom_distance": g[schema.NEAREST_ATOM_DISTANCE][:].astype(np.float64),
                 "atom_direction": g[schema.NEAREST_ATOM_DIRECTION][:].astype(np.float64),
                 "position": g[schema.POSITION][:].astype(np.float64)}
        markers = np.array([[d["y_angstrom"] / meta.scan_sampling_angstrom[1],
                             d["x_angstrom"] / meta.scan_sampling_angstrom[0]] for d in meta.defects])
        wl = wavelength_angstrom(meta.beam_energy_kev)
        clean_com = com_maps_streaming(str(store), pattern_path(scan), meta.scan_shape, meta.angular_sampling_mrad,
                                       meta.scan_sampling_angstrom, wl, periodic=True)
        results[f"{scan}/clean"] = {"dose_e_per_angstrom2": None,
                                    "localisation": evaluate(com_scores(clean_com, meta.fold_period_px), truth,
                                                             meta),
                                    "angle": angle_scores(None, clean_com["com_direction"], truth)}
        for dose in a.doses:
            array = pattern_path(scan, dose)
            t0, c0 = time.perf_counter(), cpu_seconds()
            res = fit_4dstem(store, out / f"{scan}-{schema.dose_array_name(dose)}", array=array, overrides=overrides)
            fit_seconds, fit_cpu = time.perf_counter() - t0, cpu_seconds() - c0
            maps, com = res["maps"], res["com"]
            fold, k, n = meta.fold_period_px, res["n_latent"], res["period"]
            score_maps = {**rvae_scores(maps, k, n, fold), **com_scores(com, fold)}
            smoothed = {**rvae_scores(maps, k, n, fold, SMOOTH_PX), **com_scores(com, fold, SMOOTH_PX)}
            score_maps.update({f"{name} smoothed": m for name, m in smoothed.items()})
            results[f"{scan}/{schema.dose_array_name(dose)}"] = {
                "dose_e_per_angstrom2": dose, "electrons_per_pattern": dose * np.prod(meta.scan_sampling_angstrom),
                "fit_4dstem_seconds": fit_seconds, "fit_4dstem_cpu_seconds": fit_cpu, "n_patterns": ny * nx,
                "pattern_size_px": meta.pattern_size_px,
                "localisation": evaluate(score_maps, truth, meta),
                "angle": angle_scores(maps["angle"], com["com_direction"], truth)}
            panels.append((f"{scan} {dose:.0e}", {"rVAE angle": maps["angle"], **score_maps}, markers))
            del res
    for key, r in results.items():
        for name, s in r["localisation"].items():
            rows.append({"scan/dose": key, "map": name, "AUC": f"{s['roc_auc']:.3f}",
                         "strongest (A)": f"{s['strongest_distance_angstrom']:.2f}",
                         "per defect (A)": " ".join(f"{d:.2f}" for d in s.get("per_defect_distance_angstrom", []))})
    print_table(rows, ["scan/dose", "map", "AUC", "strongest (A)", "per defect (A)"])
    angle_rows = [{"scan/dose": key, "source": src, "corr": f"{v['circular_correlation']:.3f}",
                   "median err (deg)": f"{v['median_abs_error_deg']:.1f}", "sign": v["sign"]}
                  for key, r in results.items() for src, v in r["angle"].items() if isinstance(v, dict)]
    print_table(angle_rows, ["scan/dose", "source", "corr", "median err (deg)", "sign"])
    png = out / "benchmark.png"
    out.mkdir(parents=True, exist_ok=True)
    figure(panels, png)
    fits = {k: v["fit_4dstem_seconds"] for k, v in results.items() if "fit_4dstem_seconds" in v}
    for key, s in fits.items():
        print(f"fit-4dstem {key}: {s:.0f} s = {s / BUDGET_SECONDS:.2f} x the 15 min budget "
              f"({results[key]['n_patterns']} patterns of {results[key]['pattern_size_px']} px); "
              f"{results[key]['fit_4dstem_cpu_seconds']:.0f} CPU-seconds")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    payload = {"store": str(store), "config": a.config, "simulate_seconds_this_run": simulate_seconds,
               "fresh": a.fresh,  # False: fits found in --out were resumed, their times are not training times
               "positive_within_angstrom": POSITIVE_WITHIN, "negative_beyond_angstrom": NEGATIVE_BEYOND,
               "results": results, "budget_seconds": BUDGET_SECONDS, "figure": "this file's name with .png",
               "versions": versions("torch", "pytorch-lightning", "abtem", "numpy", "scikit-learn", "zarr")}
    path = write_result("rvae-4dstem", payload)
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return payload


if __name__ == "__main__":
    main()
