"""The ADF demo and benchmark of the rVAE (seed 002) on a rendered field with known truth, with PCA on the same
sub-images in the same run.

The field (``rvae.synthetic.two_grain_field``, 512 x 512 px at 0.16 Å/px): a WSe2-like honeycomb in two grains
8° and 38° (a wavy boundary along x), a thickness (intensity) gradient along x (x0.6 -> x1.4, independent of the
grain), 3 % dopants and 4 % single vacancies, probe blur, row jitter, Poisson counts, read noise, a DC offset.
``python -m rvae fit-image`` runs on it as a user would (columns found by the peak finder, 6.5 Å windows
resampled to 25 x 25 px, the rVAE fitted to the image's own sub-images, period 3: a 1H-MX2 site is 3-fold).

Scores (columns matched to the truth within 0.5 Å; border columns left out):
* angle: agreement of the rVAE angle with the local orientation, folded by the 3-fold symmetry, after the best
  offset and sign: Fisher–Lee circular correlation, mean resultant length of the residual (1: perfect) and
  median absolute error, over the columns farther than half a window from the grain boundary (windows there mix
  both grains), per site type (metal and chalcogen sub-images have canonical images of their own, each with its
  own angle offset; the table) and over all of them with one offset (the JSON). With two grains the truth takes
  two values per site type, so the sign (mirror) is not determined by the data and the correlation is that of
  two clusters; the residual's spread is the sharper measure;
* grain leak: balanced accuracy of a cross-validated logistic regression predicting the grain from the content
  latents z (chance 0.5; an invariant encoding stays near it) - and the same from PCA scores (which see the
  rotation, so they know the grain);
* site separation: the same for metal vs chalcogen sites (should be high);
* angle errors per site type (issue 25's targets: per grain <= 5°, per atom <= 10°): one offset per site type, no
  sign choice (``rvae.metrics.grain_angle_errors``), the |mean residual| per grain and the median |residual| per atom;
* thickness: the largest |Pearson r| of one latent (one PCA component) with the thickness factor, and the
  cross-validated R² of all of them, over all sites and over metal sites only.
Time: the whole ``fit-image`` (columns, sub-images, training, encoding, figures) against the issue's budget of
15 minutes on 2 cores for a 512 x 512 frame.

The second lattice (``--field perovskite``, ``rvae.synthetic.perovskite_field``): ABO3 [001] in three grains
5°, 25°, 62° (wavy boundaries along x), the same thickness gradient and noise chain, 384 x 384 px; 5.5 Å windows,
period 4 (A and B sites are 4-fold, O sites 2-fold: their angle is scored modulo 90°). ``--seeds`` and
``--finders`` repeat the whole run (render seed = training seed; ``new``: the peak finder's disk centroid, ``old``:
the Gaussian-weighted centroid, ``rvae.columns.find_columns``) and the table gives the angle errors per run and
site type.

    python bench/rvae_adf.py [--field honeycomb|perovskite] [--seeds 0 1 2] [--finders new old] [--size-px N]
                             [--max-epochs N] [--decoder spatial|canonical] [--out runs/rvae-adf]

Writes ``bench/results/rvae-adf-<utc date>.json`` and ``.png``.
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

FIELDS = {"honeycomb": {"window_angstrom": 6.5, "period": 3, "size_px": 512},
          "perovskite": {"window_angstrom": 5.5, "period": 4, "size_px": 384}}
BUDGET_SECONDS = 15 * 60


def cpu_seconds() -> float:
    """User + system CPU time of this process and its threads: on a loaded machine the wall time overstates
    what the work costs (the CPU time is what a quiet single core would need, at most)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def match(atoms: dict, truth: dict, max_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (found, truth) of columns matched within ``max_px``, one to one."""
    from scipy.spatial import cKDTree

    found = np.c_[atoms["y"], atoms["x"]]
    d, j = cKDTree(np.c_[truth["y_px"], truth["x_px"]]).query(found, distance_upper_bound=max_px)
    ok = np.isfinite(d)
    i, j = np.flatnonzero(ok), j[ok]
    _, first = np.unique(j, return_index=True)
    return i[first], j[first]


def scores(features: np.ndarray, t: dict, sel: np.ndarray, away: np.ndarray, sites: tuple[int, ...]) -> dict:
    """Grain leak, separation of the lattice's site types ``sites`` and thickness (all sites, first site type)."""
    from rvae.metrics import best_correlation, label_predictability

    lattice_sites = sel & np.isin(t["site"], sites)
    first = sel & (t["site"] == sites[0])
    return {
        "grain_leak_balanced_accuracy": label_predictability(features[sel & away], t["grain"][sel & away]),
        "site_balanced_accuracy": label_predictability(features[lattice_sites], t["site"][lattice_sites]),
        "thickness_all_sites": best_correlation(features[sel], t["thickness"][sel]),
        "thickness_metal_sites": best_correlation(features[first], t["thickness"][first]),
    }


def figure(image, atoms, t, fi, ti, angle_aligned, z, pca, path: Path, period: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(13, 8.5))
    pos = np.c_[atoms["y"][fi], atoms["x"][fi]]
    for a, values, title in ((ax[0, 0], period * t["orientation_rad"][ti], f"truth: {period} x local orientation"),
                             (ax[0, 1], period * angle_aligned, f"rVAE: {period} x angle (offset, sign aligned)")):
        a.imshow(image, cmap="gray")
        a.scatter(pos[:, 1], pos[:, 0], c=np.angle(np.exp(1j * values)), cmap="twilight", s=5, vmin=-np.pi,
                  vmax=np.pi)
        a.set_title(title)
        a.set_axis_off()
    best = int(np.argmax([abs(np.corrcoef(z[:, j], t["thickness"][ti])[0, 1]) for j in range(z.shape[1])]))
    ax[0, 2].imshow(image, cmap="gray")
    sc = ax[0, 2].scatter(pos[:, 1], pos[:, 0], c=z[:, best], s=5, cmap="viridis")
    fig.colorbar(sc, ax=ax[0, 2], fraction=0.046)
    ax[0, 2].set_title(f"rVAE z{best + 1} (thickness goes left -> right)")
    ax[0, 2].set_axis_off()
    for a, feats, name in ((ax[1, 0], z, "rVAE z"), (ax[1, 1], pca, "PCA")):
        for g, c in ((0, "tab:blue"), (1, "tab:orange")):
            m = t["grain"][ti] == g
            a.scatter(feats[m, 0], feats[m, 1], s=3, c=c, alpha=0.5, label=f"grain {g}")
        a.set_xlabel(f"{name} 1")
        a.set_ylabel(f"{name} 2")
        a.set_title(f"{name}, coloured by grain")
        a.legend(markerscale=4)
    ax[1, 2].scatter(t["thickness"][ti], z[:, best], s=3, c=t["site"][ti], cmap="tab10", vmin=0, vmax=9)
    ax[1, 2].set_xlabel("thickness factor (truth)")
    ax[1, 2].set_ylabel(f"rVAE z{best + 1}")
    ax[1, 2].set_title("colour: site type")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_one(field_name: str, seed: int, finder: str, out: Path, a) -> tuple[dict, dict]:
    """Render, ``fit_image``, score one (field, seed, finder). Returns (the run's JSON, figure inputs)."""
    from contract.store import PATCHES
    from rvae.data import open_items
    from rvae.encode import load_module
    from rvae.fit import fit_image
    from rvae.metrics import aligned_angle_agreement, grain_angle_errors
    from rvae.synthetic import PEROVSKITE_SITES, SITE_TYPES, FieldSpec, PerovskiteSpec, read_truth, write_field

    cfg = FIELDS[field_name]
    window, period = cfg["window_angstrom"], cfg["period"]
    size_px = a.size_px or cfg["size_px"]
    spec = PerovskiteSpec(size_px=size_px) if field_name == "perovskite" else FieldSpec(size_px=size_px)
    names, sites = (PEROVSKITE_SITES, (0, 1, 2)) if field_name == "perovskite" else (SITE_TYPES, (0, 1))
    if a.fresh and out.exists():
        shutil.rmtree(out)
    field = write_field(out / "field", seed=seed, spec=spec)
    overrides = ["--model.period", str(period), "--seed_everything", str(seed), "--data.seed", str(seed)]
    if a.max_epochs is not None:
        overrides += ["--trainer.max_epochs", str(a.max_epochs)]
    if a.decoder:
        overrides += ["--model.decoder", a.decoder]
    started, cpu_started = time.perf_counter(), cpu_seconds()
    result = fit_image(field / "image.npy", out / "fit", window_angstrom=window, overrides=overrides, finder=finder)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    atoms, truth = result["atoms"], read_truth(field / "truth.csv")
    fi, ti = match(atoms, truth, 0.5 / spec.pixel_size_angstrom)
    t = {k: v[ti] for k, v in truth.items()}
    interior = atoms["border"][fi] == 0
    away = t["boundary_distance_angstrom"] > window / 2
    k = result["n_latent"]
    z = np.stack([atoms[f"z{j + 1}"][fi] for j in range(k)], axis=1)
    # PCA on the very same sub-images, with the fit's own normalisation
    module, transform, _ = load_module(result["checkpoint"])
    from sklearn.decomposition import PCA

    items = transform(open_items(str(out / "fit" / "items.zarr"), PATCHES)[:])
    n_interior = items.shape[0]
    assert n_interior == int((atoms["border"] == 0).sum())
    pca = np.full((len(atoms["x"]), k), np.nan)
    pca[:n_interior] = PCA(n_components=k, random_state=0).fit_transform(items.reshape(n_interior, -1))
    pca10 = np.full((len(atoms["x"]), 10), np.nan)
    pca10[:n_interior] = PCA(n_components=10, random_state=0).fit_transform(items.reshape(n_interior, -1))
    angle = atoms["angle"][fi]
    rows = {"all": interior, "away_from_boundary": interior & away}
    # each site type's sub-images have a canonical image of their own, with its own angle offset: aligned per
    # site type as well
    rows.update({f"away_{names[s]}_sites": interior & away & (t["site"] == s) for s in sites})
    angle_scores = {name: aligned_angle_agreement(angle[m], t["orientation_rad"][m], period)
                    for name, m in rows.items()}
    # issue 25's targets: per grain <= 5 deg and per atom <= 10 deg for every site type (one offset, no sign
    # choice: the model's angle and the truth turn the same way)
    grain_errors = {names[s]: grain_angle_errors(angle[m], t["orientation_rad"][m], t["grain"][m], period)
                    for s in sites for m in [interior & away & (t["site"] == s)]}
    rvae = {"angle": angle_scores, "angle_errors_per_site_type": grain_errors, **scores(z, t, interior, away, sites)}
    baseline = {f"pca_{k}": scores(pca[fi], t, interior, away, sites),
                "pca_10": scores(pca10[fi], t, interior, away, sites)}
    best = angle_scores["all"]
    aligned = best["sign"] * angle + best["offset_rad"]
    run = {"field_name": field_name, "seed": seed, "finder": finder, "field": dict(vars(spec)),
           "window_angstrom": window, "period": period, "size_px": result["size_px"],
           "fresh": a.fresh,  # False: a fit found in --out was resumed, its time is not a training time
           "n_columns_found": result["n_columns"], "n_truth": int(len(truth["x_px"])), "n_matched": int(len(fi)),
           "n_scored": int(interior.sum()), "rvae": rvae, "baselines": baseline, "fit_image_seconds": seconds,
           "fit_image_cpu_seconds": cpu, "budget_seconds": BUDGET_SECONDS, "budget_ratio": seconds / BUDGET_SECONDS,
           "load_average_end": os.getloadavg()[0], "checkpoint_hparams": dict(module.hparams)}
    fig = {"image": np.load(field / "image.npy"), "atoms": atoms, "truth": truth, "fi": fi[interior],
           "ti": ti[interior], "aligned": aligned[interior], "z": z[interior], "pca": pca[fi][interior],
           "period": period}
    return run, fig


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "runs" / "rvae-adf"))
    p.add_argument("--field", choices=tuple(FIELDS), default="honeycomb")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="render and training seeds (one run each)")
    p.add_argument("--finders", choices=("new", "old"), nargs="+", default=["new"], help="column finders")
    p.add_argument("--size-px", type=int, default=None, help="field side in pixels (default: 512 honeycomb, "
                   "384 perovskite)")
    p.add_argument("--max-epochs", type=int, default=None, help="default: configs/rvae/adf.yaml")
    p.add_argument("--decoder", choices=("spatial", "canonical"), default=None)
    p.add_argument("--fresh", action="store_true", help="delete --out first (otherwise a finished fit is resumed)")
    a = p.parse_args(argv)
    runs, fig = [], None
    for seed in a.seeds:
        for finder in a.finders:
            sub = Path(a.out) if (len(a.seeds), len(a.finders)) == (1, 1) and a.field == "honeycomb" \
                else Path(a.out) / f"{a.field}-seed{seed}-{finder}"
            run, f = run_one(a.field, seed, finder, sub, a)
            runs.append(run)
            fig = fig or f
            e = run["rvae"]["angle_errors_per_site_type"]
            print(f"{a.field} seed {seed} {finder}: " + "; ".join(
                f"{s} {v['max_grain_deg']:.2f} / {v['per_atom_median_deg']:.2f}" for s, v in e.items())
                + f" (per grain / per atom, deg; {run['fit_image_seconds']:.0f} s)", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = Path(a.out) / f"benchmark-{a.field}.png"
    figure(fig["image"], fig["atoms"], fig["truth"], fig["fi"], fig["ti"], fig["aligned"], fig["z"], fig["pca"], png,
           fig["period"])
    table = []
    for run in runs:
        for site, e in run["rvae"]["angle_errors_per_site_type"].items():
            ok = e["max_grain_deg"] <= 5.0 and e["per_atom_median_deg"] <= 10.0
            table.append({"field": a.field, "seed": run["seed"], "finder": run["finder"], "site": site,
                          "per grain deg (max)": f"{e['max_grain_deg']:.2f}",
                          "per grain deg (each)": " ".join(f"{v:.2f}" for v in e["per_grain_deg"].values()),
                          "per atom deg (median)": f"{e['per_atom_median_deg']:.2f}",
                          "target (5 / 10)": "met" if ok else "MISSED", "n": e["n"]})
    print_table(table, list(table[0]))
    scores_table = []
    for run in runs:
        for name, s in (("rVAE z", run["rvae"]), ("PCA 2", next(v for k, v in run["baselines"].items() if k != "pca_10")),
                        ("PCA 10", run["baselines"]["pca_10"])):
            scores_table.append({"seed / finder": f"{run['seed']} / {run['finder']}", "encoding": name,
                                 "grain leak (chance 1 / grains)": f"{s['grain_leak_balanced_accuracy']:.3f}",
                                 "site separation": f"{s['site_balanced_accuracy']:.3f}",
                                 "thickness |r| (all / first site)": f"{s['thickness_all_sites']['abs_r']:.3f} / "
                                                                    f"{s['thickness_metal_sites']['abs_r']:.3f}"})
    print_table(scores_table, list(scores_table[0]))
    for run in runs:
        print(f"seed {run['seed']} {run['finder']}: fit-image {run['fit_image_seconds']:.0f} s for a "
              f"{run['field']['size_px']} x {run['field']['size_px']} frame ({run['n_columns_found']} columns) = "
              f"{run['budget_ratio']:.2f} x the 15 min budget; {run['fit_image_cpu_seconds']:.0f} CPU-seconds")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    payload = {"field_name": a.field, "seeds": a.seeds, "finders": a.finders, "angle_error_table": table,
               "targets_deg": {"per_grain": 5.0, "per_atom_median": 10.0},
               "all_targets_met": all(r["target (5 / 10)"] == "met" for r in table), "runs": runs,
               # the first run's fields at the top level, as before (one seed, one finder)
               **{k: runs[0][k] for k in ("field", "window_angstrom", "period", "n_columns_found", "n_scored",
                                          "rvae", "baselines", "fit_image_seconds", "budget_ratio")},
               "figure": "this file's name with .png (the first run)",
               "versions": versions("torch", "pytorch-lightning", "numpy", "scikit-learn", "zarr")}
    path = write_result(f"rvae-adf-{a.field}" if a.field != "honeycomb" else "rvae-adf", payload)
    shutil.copy(png, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return payload


if __name__ == "__main__":
    main()
