"""Benchmark of the dense symmetry maps: all seven maps of a 256 x 256 image (target < 0.2 s on CPU, < 10 ms on a
GPU), against motif-learn 0.1.2 (``ZPs(n_max, k).transform(image)`` then ``rot_maps([2, 3, 4, 6])`` and
``mirror_map()``: the same maps without the axis channels) in the same run.

Candidates, timed round-robin (one call of each per round) so that load from other processes hits them alike;
the best of ``--repeats`` is the least disturbed run, the median is reported too:

* ``project float32``: ``symmetry_maps(image, k)`` (zero-mean kernels, refined axis), float32;
* ``project float64``: the same in float64;
* ``project motif convention``: ``symmetry_maps(..., convention="motif")`` float64 (motif-learn's numbers);
* ``motif-learn``: the reference library;
* ``fft floor``: only the part no implementation of this method avoids: the forward FFT of the padded image and
  the K = 50 inverse FFTs (one per moment with |m| >= 2, n <= 10), float32 - the limit of FFT-based dense
  moments at this size on this machine.

CPU candidates run with ``--blas-threads`` BLAS threads (default 1, as in a Dask worker of the feature stage;
a second BLAS thread busy-waits on a shared 2-core machine) and report wall time and process CPU time (the time
an otherwise idle core would need). With CuPy and a CUDA device the float32 maps are also timed on the GPU (data
already on the device, synchronised).
Writes ``bench/results/symmetry-<utc date>.json`` (machine incl. load average, versions, date, times, ratios).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._report import print_table, versions, write_result  # noqa: E402
from kernels.symmetry import _fft_shape, _kernel_spectra, symmetry_maps  # noqa: E402


def lattice_image(size: int = 256, seed: int = 0) -> np.ndarray:
    """A noisy two-species hexagonal lattice (a = 11 px), Poisson counts + offset, float64."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size].astype(float)
    img = np.zeros((size, size))
    a1, a2 = 11 * np.array([np.cos(0.4), np.sin(0.4)]), 11 * np.array([np.cos(0.4 + 2.0944), np.sin(0.4 + 2.0944)])
    n = size // 9 + 3
    for i in range(-n, n + 1):
        for j in range(-n, n + 1):
            for (u, v), amp in (((0, 0), 1.0), ((1 / 3, 2 / 3), 0.6)):
                p = np.array([size / 2, size / 2]) + (i + u) * a1 + (j + v) * a2
                if -5 < p[0] < size + 5 and -5 < p[1] < size + 5:
                    img += amp * np.exp(-((x - p[0]) ** 2 + (y - p[1]) ** 2) / (2 * 1.4 ** 2))
    return rng.poisson(img * 30).astype(np.float64) + 200.0


def timed(candidates: dict, repeats: int) -> dict:
    for fn in candidates.values():
        fn()
    times = {k: [] for k in candidates}
    cpu = {k: [] for k in candidates}
    for _ in range(repeats):
        for k, fn in candidates.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            times[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    return {k: {"best_s": min(v), "median_s": float(np.median(v)), "cpu_best_s": min(cpu[k])}
            for k, v in times.items()}


def fft_floor(image32: np.ndarray, k: int):
    shape = _fft_shape(image32.shape, k)
    spectra = _kernel_spectra(k, 10, "zero-mean", shape, np.float32, None)
    half = (k - 1) // 2
    padded = np.pad(image32, half, mode="reflect")

    def run():
        f = np.fft.rfft2(padded, s=shape)
        return np.fft.irfft2(f[None] * spectra, s=shape)

    return run


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--kernels", type=int, nargs="+", default=[15, 25, 41])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--no-motif", action="store_true", help="skip motif-learn (not installed)")
    p.add_argument("--blas-threads", type=int, default=1)
    a = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=a.blas_threads):
        run(a)


def run(a) -> None:
    image = lattice_image(a.size)
    image32 = image.astype(np.float32)
    rows, results = [], {}
    try:
        from mtflearn.features import ZPs
    except ImportError:
        ZPs = None
    for k in a.kernels:
        cands = {
            "project float32": lambda k=k: symmetry_maps(image32, k, 10, "zero-mean", np.float32),
            "project float64": lambda k=k: symmetry_maps(image, k, 10, "zero-mean", np.float64),
            "project motif convention": lambda k=k: symmetry_maps(image, k, 10, "motif", np.float64),
            "fft floor": fft_floor(image32, k),
        }
        if ZPs is not None and not a.no_motif:
            import warnings

            warnings.simplefilter("ignore")
            zps = ZPs(n_max=10, size=k)  # basis built once, outside the timing

            def motif(zps=zps):
                z = zps.transform(image)
                return z.rot_maps([2, 3, 4, 6]), z.mirror_map()

            cands["motif-learn"] = motif
        res = timed(cands, a.repeats)
        results[str(k)] = res
        ref = res.get("motif-learn", {}).get("best_s")
        for name, r in res.items():
            rows.append({"kernel_px": k, "candidate": name, "best_ms": f"{r['best_s'] * 1e3:.1f}",
                         "median_ms": f"{r['median_s'] * 1e3:.1f}", "cpu_ms": f"{r['cpu_best_s'] * 1e3:.1f}",
                         "motif/this": f"{ref / r['best_s']:.1f}" if ref else "",
                         "< 0.2 s": "yes" if r["best_s"] < 0.2 else "no"})
    gpu = gpu_times(image32, a.kernels, a.repeats)
    for k, r in gpu.items():
        rows.append({"kernel_px": k, "candidate": "project float32 GPU", "best_ms": f"{r['best_s'] * 1e3:.2f}",
                     "median_ms": f"{r['median_s'] * 1e3:.2f}", "< 0.2 s": "", "motif/this": ""})
    print(f"all 7 symmetry maps of a {a.size} x {a.size} image (n_max 10); machine shared: see load_average_1m")
    print_table(rows, ["kernel_px", "candidate", "best_ms", "median_ms", "cpu_ms", "motif/this", "< 0.2 s"])
    path = write_result("symmetry", {
        "image_px": [a.size, a.size], "n_max": 10, "repeats": a.repeats, "blas_threads": a.blas_threads,
        "cpu": results, "gpu": gpu,
        "targets": {"cpu_s": 0.2, "gpu_s": 0.01},
        "note": "best of round-robin repeats on a shared machine (other jobs running: see machine.load_average_1m); "
                "'fft floor' = rfft2 of the padded image + 50 inverse FFTs, the limit of FFT-based dense moments",
        "versions": versions("numpy", "scipy", "motif-learn", "cupy-cuda12x", "torch", "stem-context")})
    print(f"written: {path}")


def gpu_times(image32: np.ndarray, kernels, repeats: int) -> dict:
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return {}
    except Exception:
        return {}
    img = cupy.asarray(image32)
    out = {}
    for k in kernels:
        def run(k=k):
            symmetry_maps(img, k, 10, "zero-mean", np.float32)
            cupy.cuda.Device().synchronize()

        out[str(k)] = timed({"gpu": run}, repeats)["gpu"]
    return out


if __name__ == "__main__":
    main()
