"""Benchmark of ``python -m inference classify`` on a 2048 x 2048 image (about 10^4 columns), split by step.

The image is a rendered honeycomb (not physics: Gaussian columns of Z^1.7 weight, WSe2 geometry at
a = 31 px, rotated 17°, 5 % dopants, 4 % single and 3 % double vacancies, Poisson noise), because a
full-field abTEM simulation of 2048^2 probe positions would take hours on 2 cores; the classify steps only
see an image and do not depend on where it came from. Steps: load (file + checkpoint), lattice
(autocorrelation), peaks, sites (fit + snapping), patches, features, model, write (CSV, PNG, JSON).
Baseline in the same run: one 2048^2 zero-padded FFT autocorrelation (the floor of the lattice step), so
``total / baseline`` is comparable across machines.

    python bench/inference.py [--model runs/demo/mlp-deep/checkpoints/last.ckpt] [--repeats 3]

Writes ``bench/results/inference-<utc date>.json``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
# this file's name shadows the inference package: the repository root must come before bench/
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.modules.pop("inference", None)

from bench._report import print_table, versions, write_result  # noqa: E402

STEPS = ("load", "lattice", "peaks", "sites", "patches", "features", "model", "write")


def render_field(size: int = 2048, a_px: float = 31.0, angle_deg: float = 17.0, seed: int = 0) -> tuple[np.ndarray, int]:
    """(size, size) float32 counts of a doped WSe2-like honeycomb, and its number of columns."""
    rng = np.random.default_rng(seed)
    t = np.radians(angle_deg)
    basis = a_px * np.array([[np.sin(t), np.sin(t + np.pi / 3)], [np.cos(t), np.cos(t + np.pi / 3)]])
    n = int(size * 1.5 / a_px)
    i, j = np.meshgrid(np.arange(-n, n), np.arange(-n, n), indexing="ij")
    ij = np.c_[i.ravel(), j.ravel()].astype(float)
    centre = np.array([size / 2, size / 2])
    metal = centre + ij @ basis.T
    chal = centre + (ij + 1 / 3) @ basis.T
    w_metal = np.where(rng.random(len(metal)) < 0.05, 24.0**1.7, 74.0**1.7)  # Cr in W
    u = rng.random(len(chal))
    w_chal = np.where(u < 0.03, 0.0, np.where(u < 0.07, 34.0**1.7, 2 * 34.0**1.7))  # VacX2, VacX, Se2
    pos, w = np.concatenate([metal, chal]), np.concatenate([w_metal, w_chal])
    inside = (pos >= 0).all(axis=1) & (pos <= size - 1).all(axis=1)
    pos, w = pos[inside], w[inside]
    img = np.zeros((size, size))
    r0, c0 = np.floor(pos).astype(int).T
    fr, fc = (pos - np.floor(pos)).T
    for dr, dc, wt in ((0, 0, (1 - fr) * (1 - fc)), (1, 0, fr * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 1, fr * fc)):
        np.add.at(img, (np.minimum(r0 + dr, size - 1), np.minimum(c0 + dc, size - 1)), w * wt)
    img = ndimage.gaussian_filter(img, a_px / 10) / w.max() * 200 + 5
    return rng.poisson(img).astype(np.float32), int(inside.sum())


def fft_floor(image: np.ndarray) -> float:
    t = time.perf_counter()
    h, w = image.shape
    f = np.fft.rfft2(image - image.mean(), s=(2 * h, 2 * w))
    np.fft.irfft2(np.abs(f) ** 2, s=(2 * h, 2 * w))
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "runs/demo/mlp-deep/checkpoints/last.ckpt"))
    p.add_argument("--patch-size-px", type=int, default=None)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if not Path(args.model).is_file():
        print(f"error: checkpoint {args.model} not found: run `make train` (or pass --model)", file=sys.stderr)
        return 2
    from inference.classify import run_classify

    image, n_columns = render_field(args.size)
    rows, runs, floors = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "field.npy"
        np.save(path, image)
        for k in range(args.repeats):
            floors.append(fft_floor(image))
            t = time.perf_counter()
            s = run_classify(path, args.model, Path(tmp) / f"out{k}", host="WSe2", dopant="Cr", beam_energy_kev=80,
                             detector="HAADF", pixel_size_angstrom=3.282 / 31.0, patch_size_px=args.patch_size_px)
            s["timings_s"]["total"] = time.perf_counter() - t
            runs.append(s)
    med = {step: statistics.median(r["timings_s"][step] for r in runs) for step in (*STEPS, "total")}
    floor = statistics.median(floors)
    for step in (*STEPS, "total"):
        rows.append({"step": step, "seconds": f"{med[step]:.3f}", "share": f"{med[step] / med['total']:.0%}"})
    rows.append({"step": "baseline: 2048^2 FFT autocorrelation", "seconds": f"{floor:.3f}",
                 "share": f"total = {med['total'] / floor:.0f} x baseline"})
    last = runs[-1]
    print(f"{args.size}^2 image, {n_columns} columns rendered, {last['n_sites']} sites found, "
          f"a = {last['lattice_constant_px']:.3f} px (rendered 31), patch {last['patch_size_px']} px, "
          f"median of {args.repeats}")
    print_table(rows, ["step", "seconds", "share"])
    out = write_result("inference", {
        "image_px": args.size, "columns_rendered": n_columns, "sites_found": last["n_sites"],
        "lattice_constant_px": last["lattice_constant_px"], "model": args.model, "patch_size_px": last["patch_size_px"],
        "repeats": args.repeats, "median_seconds": med, "baseline_fft_autocorrelation_s": floor,
        "total_over_baseline": med["total"] / floor, "all_runs": [r["timings_s"] for r in runs],
        "versions": versions("numpy", "scipy", "torch", "matplotlib")})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
