"""Benchmark of ``python -m inference classify`` on a distorted 2048 x 2048 frame (about 10^4 columns), split
by step.

The specimen is a rendered honeycomb (not physics: Gaussian columns of Z^1.7 weight, WSe2 geometry at
a = 31 px, rotated 17°, 5 % dopants, 4 % single and 3 % double vacancies), because a full-field abTEM
simulation of 2048^2 probe positions would take hours on 2 cores; the classify steps only see an image. It is
scanned through the distortions of a real frame with ``simulate.fullfield.distort_scan`` (physical units: a 3 %
drift shear, a 1 px row wobble, two glitch bands shifted 3 px, a 2° non-orthogonal scan, a 15 Å hole and a
15 Å contamination blob), then Poisson noise and a DC offset of 1e6 counts, and the pixel size is recorded 5 %
too large. Steps: load (file + checkpoint), lattice (autocorrelation estimate of a), columns (the local
honeycomb: candidates, lattice vectors, sublattices, empty sites, mask), patches, features, model, write
(CSV, PNG, JSON). Baseline in the same run: one 2048^2 zero-padded FFT autocorrelation, so
``total / baseline`` is comparable across machines.

    python bench/inference.py --model CKPT [--patch-size-px 33] [--repeats 3]

The model's training cases need not include WSe2+Cr (the run allows an unseen context: only speed is
measured). Writes ``bench/results/inference-<utc date>.json``.
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

STEPS = ("load", "lattice", "columns", "patches", "features", "model", "write")


def render_field(size: int = 2048, a_px: float = 31.0, angle_deg: float = 17.0, seed: int = 0) -> tuple[np.ndarray, int]:
    """(size, size) float64 clean specimen image (arbitrary units) of a doped WSe2-like honeycomb, and its
    number of columns."""
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
    return ndimage.gaussian_filter(img, a_px / 10) / w.max(), int(inside.sum())


def distorted_frame(size: int = 2048, a_px: float = 31.0, seed: int = 0) -> tuple[np.ndarray, float, int]:
    """The rendered specimen scanned through a real frame's distortions (module docstring): (size, size)
    float32 counts, the *recorded* pixel size (5 % too large) and the number of columns rendered."""
    from simulate.fullfield import ScanDistortion, distort_scan

    pixel = 3.282 / a_px  # Å: WSe2
    dist = ScanDistortion(drift_shear=0.03, row_wobble_angstrom=pixel, row_wobble_period_angstrom=150 * pixel,
                          glitches=2, glitch_shift_angstrom=3 * pixel, glitch_height_angstrom=20 * pixel,
                          scan_skew_deg=2.0, hole_radius_angstrom=15.0, contamination_radius_angstrom=15.0,
                          dc_offset_counts=1e6, pixel_miscalibration=0.05)
    specimen, n_columns = render_field(int(size * 1.12), a_px, seed=seed)
    clean, _ = distort_scan(specimen, pixel, (size, size), pixel, dist, np.random.default_rng(seed), periodic=False)
    counts = np.random.default_rng(seed + 1).poisson(200 * clean + 5) + dist.dc_offset_counts
    return counts.astype(np.float32), pixel * (1 + dist.pixel_miscalibration), n_columns


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

    image, recorded_pixel, n_columns = distorted_frame(args.size)
    rows, runs, floors = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "field.npy"
        np.save(path, image)
        for k in range(args.repeats):
            floors.append(fft_floor(image))
            t = time.perf_counter()
            s = run_classify(path, args.model, Path(tmp) / f"out{k}", host="WSe2", dopant="Cr", beam_energy_kev=80,
                             detector="HAADF", pixel_size_angstrom=recorded_pixel, patch_size_px=args.patch_size_px,
                             allow_unseen_context=True)
            s["timings_s"]["total"] = time.perf_counter() - t
            runs.append(s)
    med = {step: statistics.median(r["timings_s"][step] for r in runs) for step in (*STEPS, "total")}
    floor = statistics.median(floors)
    for step in (*STEPS, "total"):
        rows.append({"step": step, "seconds": f"{med[step]:.3f}", "share": f"{med[step] / med['total']:.0%}"})
    rows.append({"step": "baseline: 2048^2 FFT autocorrelation", "seconds": f"{floor:.3f}",
                 "share": f"total = {med['total'] / floor:.0f} x baseline"})
    last = runs[-1]
    print(f"{args.size}^2 distorted frame ({n_columns} columns in the specimen), {last['n_sites']} sites found, "
          f"{100 * last['masked_area_fraction']:.1f} % masked, a = {last['lattice_constant_px']:.3f} px "
          f"(rendered 31; local 5-95 %: {last['lattice_constant_px_local_5_95'][0]:.2f}-"
          f"{last['lattice_constant_px_local_5_95'][1]:.2f}), patch {last['patch_size_px']} px, median of "
          f"{args.repeats}")
    print_table(rows, ["step", "seconds", "share"])
    out = write_result("inference", {
        "image_px": args.size, "columns_rendered": n_columns, "sites_found": last["n_sites"],
        "distortions": "drift 3 %, wobble 1 px, 2 glitches of 3 px, skew 2 deg, hole and blob of 15 A, DC 1e6, "
                       "pixel size 5 % off", "masked_area_fraction": last["masked_area_fraction"],
        "lattice_constant_px": last["lattice_constant_px"], "model": args.model, "patch_size_px": last["patch_size_px"],
        "repeats": args.repeats, "median_seconds": med, "baseline_fft_autocorrelation_s": floor,
        "total_over_baseline": med["total"] / floor, "all_runs": [r["timings_s"] for r in runs],
        "versions": versions("numpy", "scipy", "torch", "matplotlib")})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
