"""The 4D-STEM benchmark of the rVAE (seed 004) against the centre-of-mass (COM) family, from the same patterns in
the same run, at several doses and seeds (issue 25 items 1-2).

Data: ``configs/dataset/fourdstem.yaml`` (simulated once with ``python -m simulate fourdstem`` into
``data/fourdstem.zarr`` and reused): graphene (84 x 72 probe positions, 41 x 41 patterns, one vacancy, Si and N
dopants) and zincblende GaAs [001] (84 x 84, one As vacancy, one In on a Ga site), 80 keV, 25 mrad, Poisson
counts at 1e3, 1e4, 1e5 and 1e6 e-/Å² (~41, 410, 4 100, 41 000 electrons per pattern). Seed 0 is the store's
own counts; seed s > 0 draws new counts from the store's clean patterns (``simulate.fourdstem.poisson_counts``,
seed from the config seed, s, and the scan's and dose's indices in the store) and fits with ``seed_everything``
s: every seed is a new noise realisation and a new fit.

For each scan, dose and seed: ``python -m rvae fit-4dstem`` (purely rotational rVAE on the bright-field window
about the undeflected beam, the mean pattern subtracted, fitted to that scan's own patterns), and the COM family
(COM vector, |COM|, divergence, iCOM; ``kernels.com``) of the same patterns. Every
map goes through the same periodic-residual anomaly score (``rvae.maps``: deviation from the lattice-periodic
median over the supercell's cells), raw and after the same Gaussian smoothing of one scan step (``... smoothed``;
iCOM is already an integral over the whole scan, which averages noise). Localisation of the defects by each map:
* ROC AUC of positions within 1 Å of a defect (positives) against positions beyond 3 Å (negatives);
* distance from the map's strongest response to the nearest defect, and per defect the distance of the
  strongest response in its own half of the scan.
Angle: the rVAE angle (after the best offset and sign) and the COM direction against the direction from the
probe to the nearest column, at probe positions 0.2-0.8 Å from a column and 1.5 Å or more from a defect.
The COM family of the noise-free patterns is reported as the reference (every method finds a vacancy there).
Limit of any per-pattern direction estimate: the oracle that knows every clean pattern of the scan and gives each
noisy pattern the posterior circular mean of the true direction over all probe positions (Poisson likelihood,
uniform prior). Per defect (vacancy, each dopant) the AUC of its own neighbourhood against the same negatives.
Per method: the lowest dose at which its ROC AUC (mean over seeds) reaches 0.9.

    python bench/rvae_4dstem.py [--doses 1000 10000 100000 1000000] [--seeds 0 1] [--scans graphene zincblende]
        [--max-epochs N] [--window bright_field|whole]

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
    """Per map: ``defect_localisation`` over all defects, and ``roc_auc_per_defect``: the same AUC with the
    positives of one defect only (the same negatives), in the order of the scan's defects."""
    from kernels.geometry import periodic_delta
    from rvae.metrics import defect_localisation

    defects = np.array([[d["x_angstrom"], d["y_angstrom"]] for d in meta.defects])
    extent = tuple(meta.attrs["extent_angstrom"])
    dd = truth["defect_distance"]
    excluded = 0.5 * (POSITIVE_WITHIN + NEGATIVE_BEYOND)  # neither positive nor negative
    own = [np.hypot(*periodic_delta(truth["position"], q[None], extent).T) for q in defects]
    one_defect = [np.where(d_k <= POSITIVE_WITHIN, d_k, np.where(dd > NEGATIVE_BEYOND, dd, excluded)) for d_k in own]
    out = {}
    for name, m in score_maps.items():
        out[name] = defect_localisation(m, dd, POSITIVE_WITHIN, NEGATIVE_BEYOND, truth["position"], defects, extent)
        out[name]["roc_auc_per_defect"] = [defect_localisation(m, d, POSITIVE_WITHIN, NEGATIVE_BEYOND)["roc_auc"]
                                           for d in one_defect]
    return out


def angle_scores(angle: np.ndarray | None, com_direction: np.ndarray, truth: dict) -> dict:
    from rvae.metrics import aligned_angle_agreement

    ring = (truth["atom_distance"] > 0.2) & (truth["atom_distance"] < 0.8) & (truth["defect_distance"] > 1.5)
    out = {"com_direction": aligned_angle_agreement(com_direction.ravel()[ring], truth["atom_direction"][ring])}
    if angle is not None:
        out["rvae_angle"] = aligned_angle_agreement(angle.ravel()[ring], truth["atom_direction"][ring])
    out["n_positions"] = int(ring.sum())
    return out


def redraw_counts(clean: np.ndarray, dose: float, step_area_angstrom2: float, entropy: list[int]) -> np.ndarray:
    """A new Poisson realisation of a scan's counts at ``dose`` from its clean (N, P, P) patterns."""
    from simulate.fourdstem import poisson_counts

    return poisson_counts(clean, dose, step_area_angstrom2, np.random.default_rng(np.random.SeedSequence(entropy)))


def oracle_direction(counts: np.ndarray, clean: np.ndarray, dose: float, step_area_angstrom2: float,
                     direction: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """For the patterns ``rows`` of ``counts`` (N, P, P): the posterior circular mean of the true direction, over
    every probe position of the scan (uniform prior), with the Poisson likelihood of the pattern given that
    position's clean pattern. An estimator that knows the whole clean scan: what any per-pattern direction
    estimate can reach at this dose, near enough. ``direction`` (N,) the true direction per position."""
    lam = clean.reshape(len(clean), -1).astype(np.float64)
    lam = lam / lam.sum(1, keepdims=True) * dose * step_area_angstrom2
    n = counts.reshape(len(counts), -1)[rows].astype(np.float64)
    out = np.empty(len(rows))
    log_lam, total, unit = np.log(lam + 1e-12).T, lam.sum(1), np.exp(1j * direction)
    for i in range(0, len(rows), 1024):  # (1024, N) log-likelihoods at a time
        ll = n[i:i + 1024] @ log_lam - total[None]
        w = np.exp(ll - ll.max(axis=1, keepdims=True))
        out[i:i + 1024] = np.angle(w @ unit)
    return out


def dose_to_reach(aucs: dict[float, float], target: float = 0.9) -> float | None:
    """The lowest dose whose AUC reaches ``target``, when every higher dose does too; None when none does."""
    reached = None
    for dose in sorted(aucs, reverse=True):
        if aucs[dose] >= target:
            reached = dose
        else:
            break
    return reached


def figure(panels: list[tuple[str, dict, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["rVAE angle", "COM direction", "z1", "z2", "rvae_anomaly", "icom", "com_vector"]
    fig, axes = plt.subplots(len(panels), len(names), figsize=(3.0 * len(names), 2.9 * len(panels)), squeeze=False)
    for row, (label, maps, markers) in zip(axes, panels):
        for ax, name in zip(row, names):
            m = maps.get(name)
            if m is None:
                ax.set_axis_off()
                continue
            kw = {"cmap": "twilight", "vmin": -np.pi, "vmax": np.pi} if "angle" in name or "direction" in name \
                else {"cmap": "magma"}
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
    p.add_argument("--doses", nargs="+", type=float, default=[1e3, 1e4, 1e5, 1e6])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--window", choices=("bright_field", "whole"), default="bright_field")
    p.add_argument("--max-epochs", type=int, default=None, help="default: configs/rvae/fourdstem.yaml")
    p.add_argument("--fresh", action="store_true", help="delete --out first (otherwise finished fits are resumed)")
    a = p.parse_args(argv)
    if len(a.doses) < 2:
        p.error("give at least two doses: a comparison with COM means something only against dose")
    import zarr

    from contract import fourdstem as schema
    from contract.fourdstem import pattern_path, read_scan_meta
    from contract.yamlsafe import read_yaml
    from rvae.fit import com_maps_streaming, fit_4dstem
    from rvae.metrics import aligned_angle_agreement
    from simulate.optics import wavelength_angstrom

    store, out = Path(a.store), Path(a.out)
    if a.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ensure_store(Path(a.config), store)
    simulate_seconds = time.perf_counter() - started
    config_seed = int(read_yaml(Path(a.config))["seed"])
    root = zarr.open_group(str(store), mode="r")
    results, rows, panels = {}, [], []
    for scan in a.scans:
        meta = read_scan_meta(store, scan)
        ny, nx = meta.scan_shape
        g = root[scan]
        truth = {"defect_distance": g[schema.DEFECT_DISTANCE][:].astype(np.float64),
                 "atom_distance": g[schema.NEAREST_ATOM_DISTANCE][:].astype(np.float64),
                 "atom_direction": g[schema.NEAREST_ATOM_DIRECTION][:].astype(np.float64),
                 "position": g[schema.POSITION][:].astype(np.float64)}
        ring = np.flatnonzero((truth["atom_distance"] > 0.2) & (truth["atom_distance"] < 0.8)
                              & (truth["defect_distance"] > 1.5))
        markers = np.array([[d["y_angstrom"] / meta.scan_sampling_angstrom[1],
                             d["x_angstrom"] / meta.scan_sampling_angstrom[0]] for d in meta.defects])
        wl = wavelength_angstrom(meta.beam_energy_kev)
        area = float(np.prod(meta.scan_sampling_angstrom))
        clean = root[pattern_path(scan)][:]
        clean_com = com_maps_streaming(str(store), pattern_path(scan), meta.scan_shape, meta.angular_sampling_mrad,
                                       meta.scan_sampling_angstrom, wl, periodic=True)
        results[f"{scan}/clean"] = {"dose_e_per_angstrom2": None,
                                    "localisation": evaluate(com_scores(clean_com, meta.fold_period_px), truth,
                                                             meta),
                                    "angle": angle_scores(None, clean_com["com_direction"], truth)}
        for dose in a.doses:
            for seed in a.seeds:
                name = f"{scan}-{schema.dose_array_name(dose)}-seed{seed}"
                overrides = ["--seed_everything", str(seed), "--data.seed", str(seed)]
                overrides += [] if a.max_epochs is None else ["--trainer.max_epochs", str(a.max_epochs)]
                if seed == 0:  # the store's own counts
                    data, array, calib = store, pattern_path(scan, dose), {}
                    counts = root[pattern_path(scan, dose)][:]
                else:  # a new realisation, handed to fit-4dstem as a user's (scan x, scan y, kx, ky) array
                    # indices in the store's own lists: the same draw whichever --scans and --doses are asked
                    key = [list(root.attrs["scans"]).index(scan), list(meta.doses_e_per_angstrom2).index(dose)]
                    counts = redraw_counts(clean, dose, area, [config_seed, 4, seed, *key])
                    data, array = out / f"{name}.npy", None
                    np.save(data, counts.reshape(ny, nx, *counts.shape[1:]).transpose(1, 0, 3, 2))
                    calib = {"fold_period_px": meta.fold_period_px,
                             "angular_sampling_mrad": meta.angular_sampling_mrad,
                             "scan_sampling_angstrom": meta.scan_sampling_angstrom}
                t0, c0 = time.perf_counter(), cpu_seconds()
                res = fit_4dstem(data, out / name, array=array, window=a.window, overrides=overrides, **calib)
                fit_seconds, fit_cpu = time.perf_counter() - t0, cpu_seconds() - c0
                maps, com = res["maps"], res["com"]
                fold, k, n = meta.fold_period_px, res["n_latent"], res["period"]
                score_maps = {**rvae_scores(maps, k, n, fold), **com_scores(com, fold)}
                smoothed = {**rvae_scores(maps, k, n, fold, SMOOTH_PX), **com_scores(com, fold, SMOOTH_PX)}
                score_maps.update({f"{m} smoothed": v for m, v in smoothed.items()})
                angle = angle_scores(maps["angle"], com["com_direction"], truth)
                oracle = oracle_direction(counts, clean, dose, area, truth["atom_direction"], ring)
                angle["oracle_direction"] = aligned_angle_agreement(oracle, truth["atom_direction"][ring])
                results[f"{scan}/{schema.dose_array_name(dose)}/seed{seed}"] = {
                    "scan": scan, "dose_e_per_angstrom2": dose, "seed": seed, "electrons_per_pattern": dose * area,
                    "fit_4dstem_seconds": fit_seconds, "fit_4dstem_cpu_seconds": fit_cpu, "n_patterns": ny * nx,
                    "pattern_size_px": meta.pattern_size_px, "window": a.window,
                    "rvae_item_size_px": res["item_size_px"], "localisation": evaluate(score_maps, truth, meta),
                    "angle": angle}
                if seed == a.seeds[0]:
                    panels.append((f"{scan} {dose:.0e}", {"rVAE angle": maps["angle"], "COM direction":
                                                          com["com_direction"], "z1": maps["z1"],
                                                          "z2": maps.get("z2"), **score_maps}, markers))
                del res, counts
                print(f"{name}: fitted in {fit_seconds:.0f} s", flush=True)
    summary = summarise(results, a.scans, a.doses)
    for key, r in results.items():
        for name, s in r["localisation"].items():
            rows.append({"scan/dose/seed": key, "map": name, "AUC": f"{s['roc_auc']:.3f}",
                         "strongest (A)": f"{s['strongest_distance_angstrom']:.2f}",
                         "per defect (A)": " ".join(f"{d:.2f}" for d in s.get("per_defect_distance_angstrom", []))})
    print_table(rows, ["scan/dose/seed", "map", "AUC", "strongest (A)", "per defect (A)"])
    angle_rows = [{"scan/dose/seed": key, "source": src, "corr": f"{v['circular_correlation']:.3f}",
                   "median err (deg)": f"{v['median_abs_error_deg']:.1f}", "sign": v["sign"]}
                  for key, r in results.items() for src, v in r["angle"].items() if isinstance(v, dict)]
    print_table(angle_rows, ["scan/dose/seed", "source", "corr", "median err (deg)", "sign"])
    print_table(summary["table"], list(summary["table"][0]))
    png = out / "benchmark.png"
    figure(panels, png)
    fits = {k: v["fit_4dstem_seconds"] for k, v in results.items() if "fit_4dstem_seconds" in v}
    for key, s in fits.items():
        print(f"fit-4dstem {key}: {s:.0f} s = {s / BUDGET_SECONDS:.2f} x the 15 min budget "
              f"({results[key]['n_patterns']} patterns of {results[key]['rvae_item_size_px']} px seen); "
              f"{results[key]['fit_4dstem_cpu_seconds']:.0f} CPU-seconds")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    payload = {"store": str(store), "config": a.config, "simulate_seconds_this_run": simulate_seconds,
               "fresh": a.fresh,  # False: fits found in --out were resumed, their times are not training times
               "seeds": a.seeds, "doses": a.doses, "window": a.window, "max_epochs": a.max_epochs,
               "positive_within_angstrom": POSITIVE_WITHIN, "negative_beyond_angstrom": NEGATIVE_BEYOND,
               "summary": summary, "results": results, "budget_seconds": BUDGET_SECONDS,
               "figure": "this file's name with .png",
               "versions": versions("torch", "pytorch-lightning", "abtem", "numpy", "scikit-learn", "zarr")}
    path = write_result("rvae-4dstem", payload)
    RESULTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return payload


MAPS = ("rvae_anomaly", "rvae_latents", "rvae_reconstruction", "com_vector", "com_magnitude", "com_divergence",
        "icom")
ANGLES = ("rvae_angle", "com_direction", "oracle_direction")


def summarise(results: dict, scans: list[str], doses: list[float]) -> dict:
    """Per scan, dose and map the ROC AUC over seeds (mean, min, max), raw and smoothed; per scan and angle source
    the Fisher-Lee correlation over seeds; per scan and map the lowest dose at which the mean AUC reaches 0.9."""
    table, reach = [], {}
    for scan in scans:
        runs = [r for r in results.values() if r.get("scan") == scan]
        for variant in ("", " smoothed"):
            for m in MAPS:
                aucs = {}
                for dose in doses:
                    v = [r["localisation"][m + variant]["roc_auc"] for r in runs if r["dose_e_per_angstrom2"] == dose]
                    aucs[dose] = float(np.mean(v))
                    table.append({"scan": scan, "quantity": f"AUC {m}{variant}", "dose": f"{dose:.0e}",
                                  "mean": f"{np.mean(v):.3f}", "min": f"{np.min(v):.3f}", "max": f"{np.max(v):.3f}",
                                  "seeds": len(v)})
                reach[f"{scan}/{m}{variant}"] = dose_to_reach(aucs)
        for src in ANGLES:
            for dose in doses:
                v = [r["angle"][src]["circular_correlation"] for r in runs if r["dose_e_per_angstrom2"] == dose]
                table.append({"scan": scan, "quantity": f"Fisher-Lee {src}", "dose": f"{dose:.0e}",
                              "mean": f"{np.mean(v):.3f}", "min": f"{np.min(v):.3f}", "max": f"{np.max(v):.3f}",
                              "seeds": len(v)})
    return {"table": table, "dose_for_auc_0.9": reach}


if __name__ == "__main__":
    main()
