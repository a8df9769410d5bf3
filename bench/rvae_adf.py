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

    python bench/rvae_adf.py [--max-epochs N] [--decoder spatial|canonical] [--out runs/rvae-adf]

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

WINDOW_ANGSTROM = 6.5
PERIOD = 3
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


def scores(features: np.ndarray, t: dict, sel: np.ndarray, away: np.ndarray) -> dict:
    from rvae.metrics import best_correlation, label_predictability

    metal_or_chalcogen = sel & np.isin(t["site"], (0, 1))
    metal = sel & (t["site"] == 0)
    return {
        "grain_leak_balanced_accuracy": label_predictability(features[sel & away], t["grain"][sel & away]),
        "site_balanced_accuracy": label_predictability(features[metal_or_chalcogen], t["site"][metal_or_chalcogen]),
        "thickness_all_sites": best_correlation(features[sel], t["thickness"][sel]),
        "thickness_metal_sites": best_correlation(features[metal], t["thickness"][metal]),
    }


def figure(image, atoms, t, fi, ti, angle_aligned, z, pca, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(13, 8.5))
    pos = np.c_[atoms["y"][fi], atoms["x"][fi]]
    for a, values, title in ((ax[0, 0], PERIOD * t["orientation_rad"][ti], "truth: 3 x local orientation"),
                             (ax[0, 1], PERIOD * angle_aligned, "rVAE: 3 x angle (offset, sign aligned)")):
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
    ax[1, 2].set_title("colour: site type (M, X2, D, VacX)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "runs" / "rvae-adf"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=None, help="default: configs/rvae/adf.yaml")
    p.add_argument("--decoder", choices=("spatial", "canonical"), default=None)
    p.add_argument("--fresh", action="store_true", help="delete --out first (otherwise a finished fit is resumed)")
    a = p.parse_args(argv)
    from contract.store import PATCHES
    from rvae.data import open_items
    from rvae.encode import load_module
    from rvae.fit import fit_image
    from rvae.metrics import aligned_angle_agreement, grain_angle_errors
    from rvae.synthetic import SITE_TYPES, FieldSpec, read_truth, write_field

    out = Path(a.out)
    if a.fresh and out.exists():
        shutil.rmtree(out)
    spec = FieldSpec()
    field = write_field(out / "field", seed=a.seed, spec=spec)
    overrides = ["--model.period", str(PERIOD)]
    if a.max_epochs is not None:
        overrides += ["--trainer.max_epochs", str(a.max_epochs)]
    if a.decoder:
        overrides += ["--model.decoder", a.decoder]
    started, cpu_started = time.perf_counter(), cpu_seconds()
    result = fit_image(field / "image.npy", out / "fit", window_angstrom=WINDOW_ANGSTROM, overrides=overrides)
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    atoms, truth = result["atoms"], read_truth(field / "truth.csv")
    fi, ti = match(atoms, truth, 0.5 / spec.pixel_size_angstrom)
    t = {k: v[ti] for k, v in truth.items()}
    interior = atoms["border"][fi] == 0
    away = t["boundary_distance_angstrom"] > WINDOW_ANGSTROM / 2
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
    # metal and chalcogen sub-images have canonical images of their own, each with its own angle offset:
    # aligned per site type as well
    rows.update({f"away_{SITE_TYPES[s]}_sites": interior & away & (t["site"] == s) for s in (0, 1)})
    angle_scores = {name: aligned_angle_agreement(angle[m], t["orientation_rad"][m], PERIOD)
                    for name, m in rows.items()}
    # issue 25's targets: per grain <= 5 deg and per atom <= 10 deg for every site type (one offset, no sign
    # choice: the model's angle and the truth turn the same way)
    grain_errors = {SITE_TYPES[s]: grain_angle_errors(angle[m], t["orientation_rad"][m], t["grain"][m], PERIOD)
                    for s in (0, 1) for m in [interior & away & (t["site"] == s)]}
    rvae = {"angle": angle_scores, "angle_errors_per_site_type": grain_errors, **scores(z, t, interior, away)}
    baseline = {f"pca_{k}": scores(pca[fi], t, interior, away), "pca_10": scores(pca10[fi], t, interior, away)}
    best = angle_scores["all"]
    aligned = best["sign"] * angle + best["offset_rad"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = out / "benchmark.png"
    figure(np.load(field / "image.npy"), atoms, truth, fi[interior], ti[interior], aligned[interior], z[interior],
           pca[fi][interior], png)
    table = []
    for name, s in (("rVAE z", rvae), (f"PCA {k}", baseline[f"pca_{k}"]), ("PCA 10", baseline["pca_10"])):
        m, x2 = angle_scores["away_M_sites"], angle_scores["away_X2_sites"]
        table.append({"encoding": name,
                      "angle corr M / X2": "n/a" if name != "rVAE z" else
                      f"{m['circular_correlation']:.3f} / {x2['circular_correlation']:.3f}",
                      "angle MRL M / X2": "n/a" if name != "rVAE z" else
                      f"{m['mean_resultant_length']:.3f} / {x2['mean_resultant_length']:.3f}",
                      "angle err deg M / X2": "n/a" if name != "rVAE z" else
                      f"{m['median_abs_error_deg']:.1f} / {x2['median_abs_error_deg']:.1f}",
                      "per grain (max) / per atom deg M; X2": "n/a" if name != "rVAE z" else "; ".join(
                          f"{grain_errors[k]['max_grain_deg']:.1f} / {grain_errors[k]['per_atom_median_deg']:.1f}"
                          for k in ("M", "X2")),
                      "grain leak (chance 0.5)": f"{s['grain_leak_balanced_accuracy']:.3f}",
                      "M/X2 separation": f"{s['site_balanced_accuracy']:.3f}",
                      "thickness |r| (all / M)": f"{s['thickness_all_sites']['abs_r']:.3f} / "
                                                 f"{s['thickness_metal_sites']['abs_r']:.3f}"})
    print_table(table, list(table[0]))
    print(f"fit-image: {seconds:.0f} s for a {spec.size_px} x {spec.size_px} frame ({result['n_columns']} columns)"
          f" = {seconds / BUDGET_SECONDS:.2f} x the 15 min budget; {cpu:.0f} CPU-seconds; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    payload = {"field": {k: v for k, v in vars(spec).items()}, "window_angstrom": WINDOW_ANGSTROM, "period": PERIOD,
               "fresh": a.fresh,  # False: a fit found in --out was resumed, its time is not a training time
               "n_columns_found": result["n_columns"], "n_truth": int(len(truth["x_px"])),
               "n_matched": int(len(fi)), "n_scored": int(interior.sum()), "rvae": rvae, "baselines": baseline,
               "fit_image_seconds": seconds, "fit_image_cpu_seconds": cpu, "budget_seconds": BUDGET_SECONDS,
               "budget_ratio": seconds / BUDGET_SECONDS, "load_average_end": os.getloadavg()[0],
               "checkpoint_hparams": dict(module.hparams), "figure": "this file's name with .png",
               "versions": versions("torch", "pytorch-lightning", "numpy", "scikit-learn", "zarr")}
    path = write_result("rvae-adf", payload)
    shutil.copy(png, path.with_suffix(".png"))
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return payload


if __name__ == "__main__":
    main()
