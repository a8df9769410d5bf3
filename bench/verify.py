"""How fast ``python -m simulate verify`` reads a store, against a plain zarr read of the same shards.

A store in the simulation's layout (with ``--keep-patches``: this bench times reading stored patches) is written
from a real dataset config (``demo.yaml`` with
``--patches-per-image`` patches per image, so no abTEM run is needed: the patches are Poisson counts, as
incompressible as real noisy patches), once with this version's codecs (zstd + crc32c per chunk) and once
with zarr's default codecs (zstd only). Rows: plain read of every ``patches`` shard with and without the
chunk checksum (the cost of crc32c), and the full ``verify_store`` (every array, every check). The physical
limit of verification is the plain decoding read: the ratio says what the checks add.

    python bench/verify.py [--patches-per-image 500]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import print_table, versions, write_result  # noqa: E402


def write_store(path: Path, cfg, checksums: bool) -> int:
    """A finished store of ``cfg`` with synthetic counts; returns its patch bytes (uncompressed)."""
    from contract import store as schema
    from simulate import store
    from simulate.config import config_hash
    from simulate.patches import max_scan_px, pad_scans, task_window
    from simulate.plan import make_plan
    from simulate.run import store_attrs
    from simulate.verify import expected_clean_rows, expected_rows

    plan = make_plan(cfg)
    if not checksums:  # the codecs of stores written before chunk checksums
        original = schema.chunk_compressors
        store.chunk_compressors = lambda: "auto"  # zarr's default: zstd, no checksum
    try:
        store.create_store(path, plan, store_attrs(cfg.as_mapping(), config_hash(cfg), plan), keep_patches=True,
                           scan_px=max_scan_px(plan, cfg))
    finally:
        if not checksums:
            store.chunk_compressors = original
    rng = np.random.default_rng(0)
    p = plan.patch_size_px
    for task in plan.tasks:
        for position in range(len(plan.environments_of(task))):
            rows = {k: v.astype(schema.ROW_ARRAYS[k]) for k, v in expected_rows(plan, task.index, position).items()}
            rows[schema.PATCHES] = rng.poisson(200.0, (plan.rows_per_shard, p, p)).astype(np.float32)
            store.write_shard(path, plan.shard_start(task, position), rows)
        clean = {k: v.astype(schema.ROW_ARRAYS[k]) for k, v in expected_clean_rows(plan, task.index).items()}
        clean[schema.PATCHES] = rng.random((plan.clean_rows_per_task, p, p), dtype=np.float32)
        side = task_window(task, cfg).n_px
        clean[schema.SCANS] = pad_scans(list(rng.random((plan.clean_rows_per_task, side, side), dtype=np.float32)),
                                        max_scan_px(plan, cfg))
        store.write_clean(path, task.index * plan.clean_rows_per_task, clean)
        store.mark_done(path, task.index)
    return plan.n_rows * p * p * 4


def read_every_shard(path: Path) -> float:
    import zarr

    array = zarr.open_group(str(path), mode="r")["patches"]
    step = array.shards[0]
    start = time.perf_counter()
    for a in range(0, array.shape[0], step):
        np.asarray(array[a:a + step])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patches-per-image", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from simulate.config import load_yaml, resolve
    from simulate.verify import verify_store

    raw = load_yaml(Path(__file__).resolve().parents[1] / "configs" / "dataset" / "demo.yaml")
    raw["patches"]["patches_per_image"] = args.patches_per_image
    cfg = resolve(raw)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        stores = {"crc32c": Path(tmp) / "crc.zarr", "zstd only": Path(tmp) / "plain.zarr"}
        sizes = {name: write_store(path, cfg, name == "crc32c") for name, path in stores.items()}
        mb = sizes["crc32c"] / 1e6
        timings = {}
        for name, path in stores.items():
            timings[f"read patches, {name}"] = min(read_every_shard(path) for _ in range(args.repeats))
        for name, path in stores.items():
            def verify(path=path):
                start = time.perf_counter()
                report, _ = verify_store(path)
                assert report.ok, report.lines()
                return time.perf_counter() - start
            timings[f"verify_store, {name}"] = min(verify() for _ in range(args.repeats))
        on_disk = {name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for name, p in stores.items()}
        shutil.rmtree(tmp, ignore_errors=True)
    base = timings["read patches, crc32c"]
    for name, seconds in timings.items():
        rows.append({"what": name, "seconds": f"{seconds:.3f}", "MB/s (patches)": f"{mb / seconds:.0f}",
                     "x plain read (crc32c)": f"{seconds / base:.2f}"})
    print(f"{cfg.name}: {args.patches_per_image} patches per image, {mb:.0f} MB of float32 patches "
          f"({on_disk['crc32c'] / 1e6:.0f} MB on disk with crc32c, {on_disk['zstd only'] / 1e6:.0f} MB without)")
    print_table(rows, ["what", "seconds", "MB/s (patches)", "x plain read (crc32c)"])
    path = write_result("verify", {"patches_per_image": args.patches_per_image, "patch_megabytes": mb,
                                   "bytes_on_disk": on_disk, "timings_s": timings, "rows": rows,
                                   "versions": versions("zarr", "numcodecs", "numpy", "crc32c")})
    print(f"-> {path}")


if __name__ == "__main__":
    main()
