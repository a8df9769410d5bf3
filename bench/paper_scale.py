"""The paper's scale rehearsed on one machine: a store of the paper config's 54.8 M rows, its bytes per row, write,
verify and encode throughput, peak memory, and one epoch of attn-400k at batch 409 600 under DDP.

What is real and what is reused (said in the JSON too):

* **The store** is the paper config's own (configs/dataset/paper.yaml: 96 combos x 34 environments x 3 energies
  x 2 detectors x 2800 patches = 54 835 200 rows), created by ``simulate.store.create_store`` in layout 2 (no
  noisy patches), with the plan's labels, cases and environments, every task's clean patches, clean scans and
  done marker, so ``simulate verify`` checks it as any simulated store.
* **Clean scans** are real abTEM scans, but not one per (task, environment): a source store of one combo
  (``--source-combo``) at the paper's three energies and grid, one environment per class, static potential, is
  simulated once (a few minutes, resumable); every (task, environment, detector) of the paper plan reuses the
  source scan of its energy, detector and class, cropped or edge-padded to its own scan window.
* **Encode** runs the feature stage's own shard task (``features.encode.encode_shard``: noisy patches made from
  the scans, Zernike moments, site symmetry) on a sample of shards (every environment of ``--encode-tasks``
  tasks) on a 2-worker Dask cluster: its rows/s is measured there, not on all 54.8 M rows (at 0.3 ms per made
  patch that would take ~2 h of both cores alone). The other shards' feature rows reuse the sample's Zernike
  columns of the same environment, with their own context and site-symmetry columns, written shard by shard
  with digests and done markers as the encoder writes them (the feature write throughput).
* **Verify** is ``simulate verify`` and ``features verify`` of the whole store.
* **Training** is ``bench/paper_scale_train.py``: one epoch of attn-400k through the real data module, DDP
  (gloo) on 2 CPU processes, against the bare model step.

    python bench/paper_scale.py [--out /tmp/paper-scale] [--stages store,train] [--train-rows N]
"""
from __future__ import annotations

import argparse
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import yaml
import zarr

REPO = Path(__file__).resolve().parents[1]
# bench/ holds a features.py: the project's packages come first, bench/ (for _report) last
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"] + [str(REPO / "bench")]

from _report import print_table, versions, write_result  # noqa: E402
from cluster import open_client  # noqa: E402
from contract import store as schema  # noqa: E402
from contract.environments import ENVIRONMENTS  # noqa: E402
from contract.features import assemble_features  # noqa: E402
from features import encode  # noqa: E402
from features.verify import verify_features  # noqa: E402
from simulate import config as config_mod  # noqa: E402
from simulate import store  # noqa: E402
from simulate.patches import max_scan_px, pad_scans, shard_patches, task_window  # noqa: E402
from simulate.plan import make_plan, seed_entropy  # noqa: E402
from simulate.run import simulate, store_attrs  # noqa: E402
from simulate.verify import expected_clean_rows, expected_rows, verify_store  # noqa: E402

PAPER_CONFIG = REPO / "configs" / "dataset" / "paper.yaml"
PAPER_BYTES_PER_ROW = 123  # the paper's 6.8 GB for 55 M rows (issue 26)
GIB = 2**30


def peak_rss_gib(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss * 1024 / GIB  # ru_maxrss is in KiB on Linux


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def dir_allocated(path: Path) -> tuple[int, int]:
    """(bytes the file system allocated, files): small shard files each take at least a block."""
    files = [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_blocks * 512 for f in files), len(files)


# ------------------------------------------------------------------------------------------ source scans
def source_environments() -> list[int]:
    """One environment per class (the first of each label): the classes' scans that every shard reuses."""
    first = {}
    for env in ENVIRONMENTS:
        first.setdefault(env.label, env.id)
    return [first[label] for label in sorted(first)]


def simulate_source(out: Path, combo: tuple[str, str]) -> tuple[Path, dict]:
    """The paper config at one combo, one environment per class, static potential: real scans to reuse; returns
    (store, the run's summary: multislice runs and their compute seconds; empty when the store was there)."""
    cfg_path = out.parent / "source.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "base": str(PAPER_CONFIG), "name": "paper-scale-source", "selection": {"combos": [list(combo)]},
        "environments": source_environments(), "multislice": {"frozen_phonons": 0},
        "patches": {"patches_per_image": 8}}))
    summary = {}
    if not (out.exists() and bool(np.all(zarr.open_group(str(out), mode="r")[schema.TASK_DONE][:]))):
        summary = simulate(cfg_path, out, resume=out.exists(), n_workers=2)
    return out, summary


def source_scans(source: Path) -> dict[tuple[int, int, int], np.ndarray]:
    """(beam energy, detector index, class) -> the source's clean scan window (S, S) float32."""
    g = zarr.open_group(str(source), mode="r")
    cfg = config_mod.stored_config(config_mod.config_from_attrs(g.attrs[schema.ATTR_CONFIG]))
    plan = make_plan(cfg)
    scans, env, case = g["clean/scans"][:], g["clean/environment"][:], g["clean/case"][:]
    out = {}
    for row in range(len(env)):
        c = plan.cases[int(case[row])]
        side = task_window(plan.tasks[c["task"]], cfg).n_px
        det = plan.detectors.index(c["detector"])
        out[(c["beam_energy_kev"], det, ENVIRONMENTS[int(env[row])].label)] = scans[row, :side, :side]
    return out


def fit_window(scan: np.ndarray, side: int) -> np.ndarray:
    """Crop (centred) or edge-pad a square scan to ``side`` pixels (odd sides: the column stays centred)."""
    d = (scan.shape[0] - side) // 2
    if d >= 0:
        return scan[d:d + side, d:d + side]
    return np.pad(scan, -d, mode="edge")


# ------------------------------------------------------------------------------------------ stages
def write_store(path: Path, cfg, cfg_hash: str, plan, scans: dict) -> dict:
    """Create the paper store (layout 2) and write every task's rows, clean rows and marker."""
    side = max_scan_px(plan, cfg)
    started = time.perf_counter()
    store.create_store(path, plan, store_attrs(cfg.as_mapping(), cfg_hash, plan), keep_patches=False,
                       scan_px=side)
    n_det = len(plan.detectors)
    for task in plan.tasks:
        window = task_window(task, cfg)
        for position in range(len(plan.environments_of(task))):
            rows = {k: v.astype(schema.ROW_ARRAYS[k]) for k, v in expected_rows(plan, task.index, position).items()}
            store.write_shard(path, plan.shard_start(task, position), rows)
        clean = {k: v.astype(schema.ROW_ARRAYS[k]) for k, v in expected_clean_rows(plan, task.index).items()}
        task_scans = [fit_window(scans[(task.beam_energy_kev, d, ENVIRONMENTS[e].label)], window.n_px)
                      for e in plan.environments_of(task) for d in range(n_det)]
        clean[schema.PATCHES] = np.stack([_clean_patch(s, window, plan.patch_size_px) for s in task_scans])
        clean[schema.SCANS] = pad_scans(task_scans, side)
        store.write_clean(path, plan.clean_start(task), clean)
        store.mark_done(path, task.index)
        if task.index % 24 == 0:
            print(f"paper-scale: write: {task.index + 1}/{len(plan.tasks)} tasks, "
                  f"{time.perf_counter() - started:.0f} s", file=sys.stderr)
    return {"seconds": time.perf_counter() - started, "rows": plan.n_rows}


def _clean_patch(scan, window, patch_size_px):
    from kernels.noise import clean_patch

    return clean_patch(scan, centre_px=window.centre_px, half_width_px=window.patch_half_px,
                       patch_size_px=patch_size_px)


def encode_sample(path: Path, sample_shards: list[int]) -> tuple[dict, object, np.ndarray]:
    """The real encoder's shard task on ``sample_shards`` over 2 Dask workers; returns (timings, plan, table)."""
    plan = encode.store_plan(path)
    encode.prepare_outputs(path, plan)
    site_table, _ = encode.site_symmetry_table(path, plan, None)  # from clean/: no client needed
    with open_client("local", n_workers=2) as client:
        client.submit(encode.encode_shard, str(path), sample_shards[0], *plan.meta.shard_rows(sample_shards[0]),
                      plan.context, site_table, plan.sublattice_of_environment, "cpu", pure=False).result()  # warm
        started = time.perf_counter()
        futures = [client.submit(encode.encode_shard, str(path), k, *plan.meta.shard_rows(k), plan.context,
                                 site_table, plan.sublattice_of_environment, "cpu", pure=False, key=f"enc-{k}")
                   for k in sample_shards[1:]]
        rows = sum(f.result() for f in futures)
        seconds = time.perf_counter() - started
    return {"shards": len(sample_shards), "rows": int(rows), "seconds": seconds, "workers": 2}, plan, site_table


def patch_costs(path: Path, cfg, cfg_hash: str, plan, shard: int, scratch: Path) -> dict:
    """Per patch: making a shard's patches from its scans vs reading them back from a kept ``patches`` shard
    (same codecs and sharding as a --keep-patches store), and the kept patches' bytes on disk."""
    task_index, position = next((t.index, p) for t in plan.tasks for p in range(len(plan.environments_of(t)))
                                if plan.shard_start(t, p) == shard * plan.rows_per_shard)
    task = plan.tasks[task_index]
    g = zarr.open_group(str(path), mode="r")
    first = plan.clean_start(task) + position * len(plan.detectors)
    side = task_window(task, cfg).n_px
    scans = g["clean/scans"][first:first + len(plan.detectors), :side, :side]
    started = time.perf_counter()
    patches = shard_patches(scans, task, plan.environments_of(task)[position], cfg, seed_entropy(cfg.seed, cfg_hash),
                            plan)
    make_s = time.perf_counter() - started
    p = plan.patch_size_px
    probe = zarr.open_group(str(scratch), mode="w", zarr_format=3)
    arr = probe.create_array("patches", shape=patches.shape, dtype="float32", chunks=(plan.patches_per_image, p, p),
                             shards=patches.shape, compressors=schema.chunk_compressors())
    arr[:] = patches
    started = time.perf_counter()
    np.asarray(zarr.open_group(str(scratch), mode="r")["patches"][:])
    read_s = time.perf_counter() - started
    kept_bytes = dir_bytes(scratch / "patches")
    integer = float(np.mean(patches == np.round(patches)))
    shutil.rmtree(scratch, ignore_errors=True)
    return {"make_us_per_patch": make_s / len(patches) * 1e6, "read_us_per_patch": read_s / len(patches) * 1e6,
            "kept_bytes_per_patch": kept_bytes / len(patches), "fraction_integer_values": integer}


def fill_features(path: Path, plan_enc, site_table: np.ndarray, sample_shards: list[int]) -> dict:
    """Write every shard not encoded: its own context and site columns, the sample's Zernike columns of the
    same environment (reused), its digest and done marker."""
    g = schema.open_group(path, mode="r+")
    meta = plan_enc.meta
    template = {}
    for k in sample_shards:
        a, b = meta.shard_rows(k)
        env = int(g[schema.ENVIRONMENT][a])
        template.setdefault(env, np.asarray(g[schema.FEATURES][a:b])[:, 23:29])
    done = np.asarray(g[schema.FEATURES_DONE][:]).astype(bool)
    started = time.perf_counter()
    written = 0
    for k in range(meta.n_shards):
        if done[k]:
            continue
        a, b = meta.shard_rows(k)
        case = np.asarray(g[schema.CASE][a:b]).astype(np.int64)
        env = np.asarray(g[schema.ENVIRONMENT][a:b]).astype(np.int64)
        subl = plan_enc.sublattice_of_environment[env]
        rows = assemble_features(plan_enc.context[case], template[int(env[0])], site_table[case, subl])
        g[schema.FEATURES][a:b] = rows
        schema.write_shard_digest(g, schema.FEATURES, a, rows)
        g[schema.FEATURES_DONE][k] = 1
        written += b - a
        if k % 1000 == 0:
            print(f"paper-scale: features: shard {k}/{meta.n_shards}, {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)
    return {"rows": written, "seconds": time.perf_counter() - started}


def timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/paper-scale", help="working directory (~8 GB)")
    ap.add_argument("--config", default=str(PAPER_CONFIG))
    ap.add_argument("--source-combo", default="WSe2,Cr")
    ap.add_argument("--encode-tasks", type=int, default=1, help="tasks whose every shard the real encoder runs")
    ap.add_argument("--stages", default="store,train",
                    help="store: simulate the source, write, encode, verify; train: one epoch on the store at --out "
                         "(written by an earlier `--stages store` run when store is not listed)")
    ap.add_argument("--train-rows", type=int, default=None, help="train on the first N rows only (default all)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = config_mod.load(args.config)
    cfg_hash = config_mod.config_hash(cfg)
    plan = make_plan(cfg)
    path = out / "paper.zarr"
    stages, result = [], {"config": str(args.config), "config_hash": cfg_hash, "rows": plan.n_rows,
                          "shards": plan.n_shards, "tasks": len(plan.tasks)}

    stages_asked = set(args.stages.split(","))
    if "store" in stages_asked:
        (source, sim), seconds = timed(simulate_source, out / "source.zarr", tuple(args.source_combo.split(",")))
        if sim.get("multislice_runs"):  # per static run at the paper's grid: the simulation cost of the runbook
            result["source_simulation"] = {"multislice_runs": sim["multislice_runs"],
                                           "core_seconds": sum(sim["task_seconds"]),
                                           "core_seconds_per_run": sum(sim["task_seconds"]) / sim["multislice_runs"]}
        stages.append({"stage": "source scans (abTEM, 1 combo x 5 classes x 3 energies)", "seconds": seconds})
        if path.exists():
            shutil.rmtree(path)
        w = write_store(path, cfg, cfg_hash, plan, source_scans(source))
        stages.append({"stage": "write store (rows, clean, markers)", "seconds": w["seconds"], "rows": w["rows"]})

        sample = [k for t in plan.tasks[:args.encode_tasks] for k in plan.task_shards(t)]
        enc, plan_enc, site_table = encode_sample(path, sample)
        stages.append({"stage": f"encode {len(sample) - 1} shards (2 workers)", "seconds": enc["seconds"],
                       "rows": enc["rows"]})
        result["patch_costs"] = patch_costs(path, cfg, cfg_hash, plan, sample[0], out / "probe.zarr")
        fill = fill_features(path, plan_enc, site_table, sample)
        stages.append({"stage": "write features (reused Zernike columns)", "seconds": fill["seconds"],
                       "rows": fill["rows"]})

        (report, _), seconds = timed(verify_store, path)
        assert report.ok, report.lines()
        stages.append({"stage": "simulate verify", "seconds": seconds, "rows": plan.n_rows})
        (freport, _), seconds = timed(verify_features, path)
        assert freport.ok, freport.lines()
        stages.append({"stage": "features verify", "seconds": seconds, "rows": plan.n_rows})

        by_array = {name: dir_bytes(path / name) for name in sorted(p.name for p in path.iterdir() if p.is_dir())}
        total = dir_bytes(path)
        allocated, n_files = dir_allocated(path)
        result["bytes"] = {"total": total, "per_row": total / plan.n_rows, "by_array": by_array,
                           "allocated": allocated, "allocated_per_row": allocated / plan.n_rows, "files": n_files,
                           "per_row_with_patches_kept": (total + result["patch_costs"]["kept_bytes_per_patch"]
                                                         * plan.n_rows) / plan.n_rows,
                           "paper_per_row": PAPER_BYTES_PER_ROW}

    if "train" in stages_asked:
        import paper_scale_train

        train = paper_scale_train.run(str(path), processes=2, max_rows=args.train_rows)
        result["train"] = train
        stages.append({"stage": "train attn-400k, 1 epoch, DDP 2 CPU processes", "seconds": train.get("epoch_wall_s"),
                       "rows": train.get("rows_trained")})
    for s in stages:
        s["rows/s"] = f"{s['rows'] / s['seconds']:,.0f}" if s.get("rows") and s.get("seconds") else ""
        s["seconds"] = f"{s['seconds']:.1f}" if s.get("seconds") is not None else ""
    result["stages"] = stages
    result["reused"] = ("clean scans: one real source scan per (energy, detector, class), cropped/padded to each "
                        "task's window; features: the real encoder on the sample shards, elsewhere the sample's "
                        "Zernike columns of the same environment with each row's own context and site columns")
    if "store" in stages_asked:
        total = result["bytes"]["total"]
        print(f"paper-scale: {plan.n_rows:,} rows, {plan.n_shards} shards; store {total / 1e9:.2f} GB = "
              f"{total / plan.n_rows:.1f} B/row (paper {PAPER_BYTES_PER_ROW} B/row; with --keep-patches "
              f"{result['bytes']['per_row_with_patches_kept']:.0f} B/row)")
        pc = result["patch_costs"]
        print(f"paper-scale: a patch made from its scan {pc['make_us_per_patch']:.0f} us, read back from a kept "
              f"shard {pc['read_us_per_patch']:.0f} us, {pc['kept_bytes_per_patch']:.0f} B on disk; "
              f"{100 * pc['fraction_integer_values']:.1f} % of kept values are integers")
    print_table(stages, ["stage", "seconds", "rows", "rows/s"])
    result["peak_rss_gib"] = {"driver": peak_rss_gib(), "children": peak_rss_gib(resource.RUSAGE_CHILDREN)}
    print(f"paper-scale: peak RSS driver {result['peak_rss_gib']['driver']:.2f} GiB, "
          f"children {result['peak_rss_gib']['children']:.2f} GiB")
    path_json = write_result("paper-scale", {**result, "versions": versions("zarr", "numpy", "abtem", "torch",
                                                                            "lightning", "dask")})
    print(f"-> {path_json}")


if __name__ == "__main__":
    main()
