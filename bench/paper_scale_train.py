"""One epoch of the paper's attn-400k under DDP on CPU processes (gloo), against the bare model step.

    python bench/paper_scale_train.py --store STORE.zarr [--config configs/train/attn-400k.yaml] [--processes 2]
                                      [--max-rows N] [--batch-size GLOBAL] [--json OUT.json]
    python bench/paper_scale_train.py --store SMALL.zarr --tile-to 5000000 [--tile-out /tmp/big.zarr] ...

Two measurements, each on ``--processes`` fresh processes launched here (torchrun-style: ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``; Lightning then starts no processes of its own), with
``cores // processes`` torch threads each:

* training: ``python -m training fit``'s own path, ``training.cli.ClassifierCLI`` with ``DefectClassifier`` and
  ``FeatureDataModule`` on the store, configs ``base.yaml`` + the model file, ``--schedule.kind paper`` (the
  paper's schedule: no step budget, validation on the test split), ``--trainer.max_epochs 1``, accelerator cpu,
  strategy ddp (process group gloo), CSV + TensorBoard logs and the end-of-epoch checkpoint in a temporary
  run directory. A callback times the epoch's train batches and records each process's memory.
* bare step: the same model (``DefectClassifier(**model config).model``) in ``torch.nn.parallel.
  DistributedDataParallel`` on a gloo group of the same size: forward, cross-entropy, backward (gradient
  all-reduce), Adam step on one random in-memory batch of the per-rank size; no data module, no Lightning.
  Run before and after the training run; their mean is the reference (other jobs on the machine hit both).

Batch size: ``data.batch_size`` is per rank in this code (``FeatureDataModule``: "training batch size per rank";
``training.schedule``: "per device"; Lightning's DDP gives each rank its own loader). The paper's 409 600 is the
batch of one optimizer step: its ~1 070 steps are 44 M training rows / 409 600 x 10 epochs
(``training.schedule.PAPER_ATTN_400K_STEPS``). So the config's batch is taken as the GLOBAL batch here and each
of P ranks gets ``batch / P`` (204 800 on 2 ranks): the same rows per optimizer step and the same steps per
epoch as the paper. (Batch norm and the feature attention's batch statistic are then per rank, over 204 800
rows; there is no SyncBatchNorm in the model.)

Reported: rows in the store and in the training split, rows trained (sum over ranks), batch per rank and global,
optimizer steps, the epoch's train-batch time and samples/s (all ranks' rows / the slowest rank's time from the
epoch's start to its last train batch: the per-epoch shuffle included), validation time, the bare step's
samples/s and the ratio (target >= 0.8), peak resident memory (VmHWM) of every process and the peak of their
sum sampled every 0.2 s, wall times. Writes ``bench/results/paper_scale_train-<UTC stamp>.json`` (or ``--json``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# run as a script, sys.path[0] is bench/, where bench/training.py would shadow the training package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

from contract.jsonio import json_text  # noqa: E402

DEFAULT_CONFIG = REPO / "configs" / "train" / "attn-400k.yaml"
PAPER_SHARD_ROWS = 5600
"""Rows per shard of the paper's store (configs/dataset/paper.yaml: 2 800 patches per image x 2 detectors)."""
GIB = 1 << 30


# --------------------------------------------------------------------------------------------- stores
def tile_feature_store(src: str | Path, out: str | Path, n_rows: int, rows_per_shard: int = PAPER_SHARD_ROWS,
                       chunk_rows: int | None = None) -> str:
    """Write a training store of ``n_rows`` rows at ``out`` whose row ``i`` is row ``i % N`` of ``src`` (N rows):
    ``features``, ``label``, ``case`` and ``environment`` (if present) copied cyclically, shard by shard, with
    ``features_done`` set and ``features_digest`` computed for each new shard at its new position (so training
    checks them as it checks any store). The group attributes and ``task_done`` are copied (``rows_per_shard``
    set to the new shard size, ``tiled_from`` added); ``patches`` and ``clean/`` are not (training never reads
    them). ``n_rows < N`` gives the first ``n_rows`` rows. Shards of ``rows_per_shard`` rows (default: the
    paper's 5 600) in chunks of ``chunk_rows`` (default: half a shard), zstd + crc32c as every store."""
    import numpy as np
    import zarr

    from contract import store as schema

    if n_rows < 1:
        raise ValueError(f"n_rows must be >= 1, got {n_rows}")
    chunk_rows = chunk_rows or max(1, rows_per_shard // 2)
    if rows_per_shard % chunk_rows:
        raise ValueError(f"rows_per_shard {rows_per_shard} is not a multiple of chunk_rows {chunk_rows}")
    source = schema.open_group(src)
    meta = schema.read_meta(src, require=(schema.FEATURES, schema.LABEL, schema.CASE))
    n_src = meta.n_rows
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists")
    group = zarr.open_group(str(out), mode="w", zarr_format=3)
    attrs = dict(source.attrs)
    attrs[schema.ATTR_ROWS_PER_SHARD] = int(rows_per_shard)
    attrs["tiled_from"] = {"store": str(Path(src).resolve()), "source_rows": int(n_src), "n_rows": int(n_rows),
                           "rule": "row i is source row i % source_rows (bench/paper_scale_train.py)"}
    group.attrs.update(attrs)
    crc = schema.chunk_compressors()
    n_shards = math.ceil(n_rows / rows_per_shard)
    names = [schema.FEATURES, schema.LABEL, schema.CASE] + (
        [schema.ENVIRONMENT] if schema.ENVIRONMENT in meta.arrays else [])
    arrays = {}
    for name in names:
        a = source[name]
        trailing = tuple(a.shape[1:])
        arrays[name] = group.create_array(name, shape=(n_rows, *trailing), dtype=a.dtype,
                                          chunks=(chunk_rows, *trailing), shards=(rows_per_shard, *trailing),
                                          fill_value=np.nan if name == schema.FEATURES else 0, compressors=crc,
                                          attributes=dict(a.attrs))
    group.create_array(schema.FEATURES_DONE, shape=(n_shards,), dtype=schema.MARKER_DTYPE, chunks=(1,),
                       fill_value=0, compressors=crc)
    schema.create_digest_array(group, schema.FEATURES, n_shards)
    if schema.TASK_DONE in meta.arrays:
        done = source[schema.TASK_DONE][:]
        group.create_array(schema.TASK_DONE, shape=done.shape, dtype=done.dtype, chunks=(1,), fill_value=0,
                           compressors=crc)[:] = done
    # the source is read whole when small (the usual case: tiling up), else the (at most two) ranges a shard needs
    whole = {n: source[n][:] for n in names} if n_src * 31 * 4 <= GIB else None

    def source_rows(name, start, stop):
        idx = np.arange(start, stop) % n_src
        if whole is not None:
            return whole[name][idx]
        parts, first = [], start
        while first < stop:
            lo = first % n_src
            take = min(stop - first, n_src - lo)
            parts.append(np.asarray(source[name][lo:lo + take]))
            first += take
        return np.concatenate(parts)

    digests = np.zeros(n_shards, dtype=np.uint64)
    for s in range(n_shards):
        start, stop = s * rows_per_shard, min(n_rows, (s + 1) * rows_per_shard)
        for name in names:
            block = source_rows(name, start, stop)
            arrays[name][start:stop] = block
            if name == schema.FEATURES:
                digests[s] = schema.shard_digest(start, block.astype(arrays[name].dtype))
    group[schema.digest_name(schema.FEATURES)][:] = digests
    group[schema.FEATURES_DONE][:] = np.ones(n_shards, dtype=np.uint8)
    return str(out)


def store_rows(store: str | Path) -> int:
    from contract import store as schema

    return schema.read_meta(store, require=(schema.FEATURES, schema.LABEL, schema.CASE)).n_rows


# --------------------------------------------------------------------------------------------- configs
def train_configs(config: str | Path) -> list[Path]:
    """[base.yaml beside ``config``, ``config``] (as slurm/train.sbatch passes them), or [config] for base itself."""
    config = Path(config)
    base = config.parent / "base.yaml"
    return [config] if not base.is_file() or base.resolve() == config.resolve() else [base, config]


def merged_config(config: str | Path) -> dict:
    """The sections of base.yaml and ``config`` merged (one level deep, as the CLI does for these files)."""
    import yaml

    merged: dict = {}
    for path in train_configs(config):
        for key, value in (yaml.safe_load(Path(path).read_text()) or {}).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
    return merged


# --------------------------------------------------------------------------------------------- processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory(pid: int | str = "self") -> dict:
    """VmRSS and VmHWM (peak) of a process in GiB (empty when it is gone)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return out


EXIT_GRACE_S = 20.0
"""How long a worker may stay alive after writing its report (a gloo rank has hung at exit, in the futex of a
finished process group, even before ``os._exit``): then it is killed and counted as finished."""


def _report_written(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (OSError, ValueError):
        return False


def _wait_for_workers(procs, reports: list[Path], deadline: float) -> list[int]:
    """Exit codes of ``procs``; a worker still alive ``EXIT_GRACE_S`` after its report parses is killed and
    counted as 0 (its work is done); past ``deadline`` every worker is killed and TimeoutError raised."""
    reported_at: dict[int, float] = {}
    while True:
        now = time.perf_counter()
        for r, p in enumerate(procs):
            if p.poll() is None and r not in reported_at and _report_written(reports[r]):
                reported_at[r] = now
            if p.poll() is None and r in reported_at and now - reported_at[r] > EXIT_GRACE_S:
                print(f"paper_scale_train: rank {r} still alive {EXIT_GRACE_S:.0f} s after its report: killed",
                      file=sys.stderr)
                p.kill()
                p.wait()
                p.returncode = 0
        if all(p.poll() is not None for p in procs):
            return [p.returncode for p in procs]
        if now > deadline:
            for p in procs:
                p.kill()
            raise TimeoutError(f"workers still running after the time limit: {[p.pid for p in procs]}")
        time.sleep(0.5)


def launch(mode: str, processes: int, spec: dict, workdir: Path, threads: int, timeout_s: float) -> dict:
    """Run ``processes`` workers of ``mode`` ('train' or 'bare') as one DDP group; their reports, the peak of the
    sum of their resident memory (sampled every 0.2 s) and the wall time."""
    spec_path = workdir / f"{mode}-spec.json"
    spec_path.write_text(json_text(spec))
    port = _free_port()
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("SLURM_", "TORCHELASTIC_", "PL_")) and k not in
                ("RANK", "LOCAL_RANK", "WORLD_SIZE", "GROUP_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK")}
    base_env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(processes),
                     "NODE_RANK": "0", "OMP_NUM_THREADS": str(threads), "PYTHONPATH": os.pathsep.join(
                         [str(REPO), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])})
    procs, logs = [], []
    started = time.perf_counter()
    for rank in range(processes):
        env = dict(base_env, LOCAL_RANK=str(rank))
        if mode == "bare":
            env["RANK"] = str(rank)
        log = open(workdir / f"{mode}-rank{rank}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", mode,
                                       "--spec", str(spec_path), "--rank", str(rank)],
                                      cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
    peak_sum, stop = [0.0], threading.Event()

    def sample():
        while not stop.is_set():
            peak_sum[0] = max(peak_sum[0], sum(_memory(p.pid).get("VmRSS", 0.0) for p in procs))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        codes = _wait_for_workers(procs, [workdir / f"{mode}-rank{r}.json" for r in range(processes)],
                                  started + timeout_s)
    finally:
        stop.set()
        sampler.join()
        for log in logs:
            log.close()
    wall = time.perf_counter() - started
    if any(codes):
        tails = "\n".join(f"--- rank {r} (exit {c}):\n" + (workdir / f"{mode}-rank{r}.log").read_text()[-3000:]
                          for r, c in enumerate(codes) if c)
        raise RuntimeError(f"{mode} workers failed:\n{tails}")
    reports = [json.loads((workdir / f"{mode}-rank{r}.json").read_text()) for r in range(processes)]
    return {"ranks": reports, "peak_rss_sum_gib": peak_sum[0], "wall_s": wall}


def _finish_worker(spec: dict, rank: int, report: dict) -> None:
    import resource

    report["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # KiB on Linux
    Path(spec["workdir"], f"{spec['mode']}-rank{rank}.json").write_text(json_text(report))


def worker_bare(spec: dict, rank: int) -> None:
    """DDP bare step: forward + cross-entropy + backward + Adam on one random in-memory batch per rank."""
    import torch
    import torch.distributed as dist

    from training.module import DefectClassifier

    torch.set_num_threads(spec["threads"])
    world = spec["processes"]
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(rank)
    model = DefectClassifier(**spec["model"]).model.train()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(ddp.parameters(), lr=spec["model"].get("lr", 1e-3))
    n, d = spec["batch_per_rank"], spec["model"].get("in_features", 31)
    x, y = torch.randn(n, d), torch.randint(0, 5, (n,))

    def step():
        loss = torch.nn.functional.cross_entropy(ddp(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    steps, t0 = 0, time.perf_counter()
    while True:  # at least min_steps and min_seconds, the same number of steps on every rank
        step()
        steps += 1
        go_on = torch.tensor(float(steps < spec["min_steps"] or time.perf_counter() - t0 < spec["min_seconds"]))
        dist.all_reduce(go_on, op=dist.ReduceOp.MAX)
        if not go_on.item():
            break
    took = torch.tensor(time.perf_counter() - t0, dtype=torch.float64)
    dist.all_reduce(took, op=dist.ReduceOp.MAX)
    report = {"rank": rank, "backend": dist.get_backend(), "steps": steps, "seconds": float(took),
              "samples_per_s": world * n * steps / float(took), "threads": torch.get_num_threads(),
              "memory_end": _memory()}
    dist.destroy_process_group()
    _finish_worker(spec, rank, report)


def worker_train(spec: dict, rank: int) -> None:
    """One epoch through training.cli.ClassifierCLI (the `python -m training fit` path) with a timing callback."""
    import pytorch_lightning as pl
    import torch

    from training.cli import ClassifierCLI
    from training.data import FeatureDataModule
    from training.module import DefectClassifier

    t_start = time.perf_counter()
    torch.set_num_threads(spec["threads"])

    class Probe(pl.Callback):
        def __init__(self):
            self.r: dict = {"rank": rank, "batches": [], "memory": {}}

        def _mark(self, name):
            self.r["memory"][name] = _memory()
            self.r.setdefault("t", {})[name] = time.perf_counter() - t_start

        def setup(self, trainer, pl_module, stage):  # after the data module's setup: the shard is loaded
            self._mark("data_loaded")
            dm = trainer.datamodule
            self.r.update(train_rows_rank=int(len(dm.train_rows)), test_rows_rank=int(len(dm.test_rows)),
                          batch_size_rank=int(dm.batch_size), world_size=int(trainer.world_size),
                          global_rank=int(trainer.global_rank))

        def on_train_start(self, trainer, pl_module):
            import torch.distributed as dist

            self.r["backend"] = dist.get_backend() if dist.is_initialized() else None
            self.r["threads"] = torch.get_num_threads()

        def on_train_epoch_start(self, trainer, pl_module):
            self._mark("epoch_start")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._b0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            now = time.perf_counter()
            self.r["batches"].append([len(batch[1]), now - self._b0])
            self.r.setdefault("t", {})["last_train_batch_end"] = now - t_start

        def on_validation_start(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self._mark("validation_start")

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self._mark("validation_end")

        def on_train_epoch_end(self, trainer, pl_module):
            self._mark("epoch_end")
            self.r["global_step"] = int(trainer.global_step)

        def on_train_end(self, trainer, pl_module):
            self._mark("train_end")

    probe = Probe()
    args = ["fit"]
    for path in spec["configs"]:
        args += ["--config", path]
    args += ["--data.store", spec["store"], "--data.batch_size", str(spec["batch_per_rank"]),
             "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu", "--trainer.devices", str(spec["processes"]),
             "--trainer.num_nodes", "1", "--trainer.strategy", "ddp", "--schedule.kind", "paper",
             "--run_dir", spec["run_dir"], "--ckpt_path", "null", *spec.get("extra_args", [])]
    # training.cli.run_cli's arguments, plus the probe
    ClassifierCLI(DefectClassifier, FeatureDataModule, args=args, run=True, save_config_kwargs={"overwrite": True},
                  parser_kwargs={"parser_mode": "yaml", "exit_on_error": False},
                  trainer_defaults={"callbacks": [probe]})
    probe._mark("end")
    probe.r["wall_s"] = time.perf_counter() - t_start
    _finish_worker(spec, rank, probe.r)


# --------------------------------------------------------------------------------------------- the bench
def versions() -> dict:
    from bench._report import versions as dist_versions

    return dist_versions("torch", "pytorch-lightning", "lightning", "zarr", "numpy", "torchmetrics")


def run(store: str, *, processes: int = 2, max_rows: int | None = None, config: str | Path = DEFAULT_CONFIG,
        batch_size: int | None = None, threads: int | None = None, bare_min_seconds: float = 10.0,
        bare_min_steps: int = 3, extra_args: list[str] | None = None, timeout_s: float = 6 * 3600,
        workdir: str | Path | None = None) -> dict:
    """One epoch of ``config`` (with base.yaml beside it) on ``store`` under DDP on ``processes`` CPU processes,
    and the bare DDP step of the same model; a plain dict (see the module docstring).

    ``batch_size``: the GLOBAL batch (default: the config's ``data.batch_size``, the paper's 409 600 for
    attn-400k), split evenly over the ranks. ``max_rows``: train on a copy of the store's first ``max_rows`` rows
    (made in the work directory) when the store has more. ``threads``: torch threads per process (default: the
    cores divided by ``processes``, at least 1). ``extra_args``: more `python -m training fit` arguments."""
    cfg = merged_config(config)
    global_batch = int(batch_size or cfg["data"]["batch_size"])
    if global_batch % processes:
        raise ValueError(f"global batch {global_batch} is not divisible by {processes} processes")
    per_rank = global_batch // processes
    threads = threads or max(1, (os.cpu_count() or 1) // processes)
    own_dir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="paper_scale_train-")) if own_dir else Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        n_store = store_rows(store)
        train_store, made = str(store), None
        if max_rows is not None and max_rows < n_store:
            made = time.perf_counter()
            train_store = tile_feature_store(store, workdir / "first-rows.zarr", max_rows)
            made = time.perf_counter() - made
        model_cfg = dict(cfg.get("model", {}))
        common = {"processes": processes, "threads": threads, "batch_per_rank": per_rank,
                  "workdir": str(workdir), "model": model_cfg}
        bare_spec = {**common, "mode": "bare", "min_seconds": bare_min_seconds, "min_steps": bare_min_steps}
        train_spec = {**common, "mode": "train", "store": train_store, "configs": [str(p) for p in train_configs(config)],
                      "run_dir": str(workdir / "run"), "extra_args": list(extra_args or [])}
        bare_before = launch("bare", processes, bare_spec, workdir, threads, timeout_s)
        load_before = os.getloadavg()[0]
        train = launch("train", processes, train_spec, workdir, threads, timeout_s)
        bare_after = launch("bare", processes, bare_spec, workdir, threads, timeout_s)
        return summarise(store, train_store, n_store, made, config, processes, threads, global_batch, per_rank,
                         train, bare_before, bare_after, load_before)
    finally:
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def summarise(store, train_store, n_store, made, config, processes, threads, global_batch, per_rank, train,
              bare_before, bare_after, load_before) -> dict:
    ranks = train["ranks"]
    trained = [sum(b[0] for b in r["batches"]) for r in ranks]
    # the slowest rank's time from its epoch start to its last train batch (the ranks wait for each other anyway)
    train_s = max(r["t"]["last_train_batch_end"] - r["t"]["epoch_start"] for r in ranks)
    steady = [sorted(b[1] for b in r["batches"][1:]) for r in ranks]
    steady_rate = None
    if all(steady):
        steady_rate = sum(per_rank / s[len(s) // 2] for s in steady)  # median step, summed over ranks
    bare = [b["ranks"][0]["samples_per_s"] for b in (bare_before, bare_after)]
    bare_mean = sum(bare) / 2
    rate = sum(trained) / train_s
    val_s = max(r["t"].get("validation_end", float("nan")) - r["t"].get("validation_start", float("nan"))
                for r in ranks)
    epoch_s = max(r["t"]["epoch_end"] - r["t"]["epoch_start"] for r in ranks)
    result = {
        "store": str(store), "trained_store": str(train_store), "store_rows": n_store,
        "rows": store_rows(train_store), "first_rows_copy_s": made,
        "config": [str(p) for p in train_configs(config)], "processes": processes, "threads_per_process": threads,
        "backend": ranks[0].get("backend"),
        "batch_global": global_batch, "batch_per_rank": per_rank,
        "batch_meaning": "data.batch_size is per rank in training/; the config's value is taken as the global "
                         "batch of one optimizer step (the paper's ~1 070 steps = 44 M / 409 600 x 10 epochs) and "
                         "split over the ranks",
        "train_rows_per_rank": [r["train_rows_rank"] for r in ranks],
        "test_rows_per_rank": [r["test_rows_rank"] for r in ranks],
        "rows_trained": sum(trained), "rows_trained_per_rank": trained,
        "steps": ranks[0]["global_step"], "steps_per_rank": [len(r["batches"]) for r in ranks],
        "train_s": train_s, "samples_per_s": rate,
        "samples_per_s_median_step": steady_rate,
        "bare_samples_per_s": bare_mean, "bare_samples_per_s_before_after": bare,
        "bare_steps": [b["ranks"][0]["steps"] for b in (bare_before, bare_after)],
        "ratio": rate / bare_mean,
        "ratio_median_step": None if steady_rate is None else steady_rate / bare_mean,
        "ratio_target": 0.8,
        "validation_s": val_s, "epoch_wall_s": epoch_s,
        "startup_to_data_loaded_s": max(r["t"]["data_loaded"] for r in ranks),
        "process_wall_s": max(r["wall_s"] for r in ranks), "wall_s": train["wall_s"],
        "peak_rss_gib": [r["peak_rss_gib"] for r in ranks],
        "peak_rss_sum_gib": train["peak_rss_sum_gib"],
        "bare_peak_rss_gib": [r["peak_rss_gib"] for r in bare_before["ranks"]],
        "memory_by_phase_gib": {r["rank"]: {k: round(v.get("VmHWM", float("nan")), 3) for k, v in r["memory"].items()}
                                for r in ranks},
        "rss_by_phase_gib": {r["rank"]: {k: round(v.get("VmRSS", float("nan")), 3) for k, v in r["memory"].items()}
                             for r in ranks},
        "memory_limit_gib": 24, "load_average_1m_before_train": load_before,
        "versions": versions(),
    }
    return result


PAPER_TRAIN_ROWS = 44_000_000
"""The paper's training split: 80 % of ~55 M patches."""


def _fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through the points (the one point's value, slope 0)."""
    n = len(xs)
    if n == 1:
        return ys[0], 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def project(results: list[dict], rows: int = int(PAPER_TRAIN_ROWS / 0.8)) -> dict:
    """Estimate an epoch on a store of ``rows`` rows (default: the paper's ~55 M, i.e. 44 M training rows) from
    measured results: memory and load time as straight lines in the store's rows (least squares over the runs
    of at least 5 M rows when there are two, else all), train and validation time from the samples/s of the
    largest run (the first step's overhead weighs least there)."""
    big = [r for r in results if r["rows"] >= 5_000_000]
    use = sorted(big if len(big) >= 2 else results, key=lambda r: r["rows"])
    largest = use[-1]
    x = [r["rows"] / 1e6 for r in use]
    scale = rows / largest["rows"]

    def line(key):
        a, b = _fit_line(x, [key(r) for r in use])
        return a + b * rows / 1e6, b

    peak_rank, slope_rank = line(lambda r: max(r["peak_rss_gib"]))
    peak_sum, slope_sum = line(lambda r: r["peak_rss_sum_gib"])
    load_s, _ = line(lambda r: r["startup_to_data_loaded_s"])
    train_s = largest["rows_trained"] * scale / largest["samples_per_s"]
    val_s = largest["validation_s"] * scale
    return {"rows": rows, "train_rows": round(rows * largest["rows_trained"] / largest["rows"]),
            "from_rows": [r["rows"] for r in use], "samples_per_s": largest["samples_per_s"],
            "bare_samples_per_s": largest["bare_samples_per_s"], "ratio": largest["ratio"],
            "steps": math.ceil(rows * largest["rows_trained"] / largest["rows"] / largest["batch_global"]),
            "train_s": train_s, "validation_s": val_s, "startup_to_data_loaded_s": load_s,
            "epoch_wall_s": train_s + val_s, "wall_s": load_s + train_s + val_s,
            "peak_rss_gib_per_process": peak_rank, "peak_rss_gib_per_process_per_million_rows": slope_rank,
            "peak_rss_sum_gib": peak_sum, "peak_rss_sum_gib_per_million_rows": slope_sum}


COLUMNS = ["rows", "rows_trained", "steps", "batch_global", "batch_per_rank", "samples_per_s",
           "bare_samples_per_s", "ratio", "peak_rss_gib", "peak_rss_sum_gib", "train_s", "epoch_wall_s", "wall_s"]


def table_row(result: dict) -> dict:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 10 else f"{v:.0f}"
        if isinstance(v, list):
            return "/".join(fmt(x) for x in v)
        return v

    return {c: fmt(result.get(c)) for c in COLUMNS}


def main(argv=None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--max-rows", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch (default: the config's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: cores/processes)")
    p.add_argument("--tile-to", type=int, default=None,
                   help="first tile --store cyclically to this many rows (tile_feature_store) and train on that")
    p.add_argument("--tile-out", default=None, help="where --tile-to writes (default: a temporary folder, removed)")
    p.add_argument("--json", default=None, help="result file (default: bench/results/paper_scale_train-<UTC>.json)")
    p.add_argument("--project", nargs="+", metavar="RESULT.json",
                   help="print the projection (project()) from these result files to --project-rows and exit")
    p.add_argument("--project-rows", type=int, default=int(PAPER_TRAIN_ROWS / 0.8))
    p.add_argument("--worker", choices=("train", "bare"), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        spec = json.loads(Path(a.spec).read_text())
        (worker_train if a.worker == "train" else worker_bare)(spec, a.rank)
        # the report is written: leave now (a gloo rank can hang in interpreter shutdown, seen with torch 2.13)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    if a.project:
        results = [json.loads(Path(f).read_text()) for f in a.project]
        results = [x for r in results for x in r.get("runs", [r])]
        print(json_text(project(results, a.project_rows), indent=1))
        return None
    if not a.store:
        p.error("--store is required")
    store, tiled_dir = a.store, None
    if a.tile_to:
        if a.tile_out:
            store = a.tile_out if Path(a.tile_out).exists() else tile_feature_store(a.store, a.tile_out, a.tile_to)
        else:
            tiled_dir = tempfile.mkdtemp(prefix="paper_scale_tiled-")
            store = tile_feature_store(a.store, Path(tiled_dir) / "tiled.zarr", a.tile_to)
    try:
        result = run(store, processes=a.processes, max_rows=a.max_rows, config=a.config, batch_size=a.batch_size,
                     threads=a.threads)
    finally:
        if tiled_dir:
            shutil.rmtree(tiled_dir, ignore_errors=True)
    from bench._report import print_table, write_result

    print_table([table_row(result)], COLUMNS)
    if a.json:
        import datetime as dt

        from bench._report import machine
        from contract.jsonio import json_text

        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json_text({"benchmark": "paper_scale_train", "date_utc": stamp, "machine": machine(),
                                           **result},
                                          indent=2, default=str))
        print(f"written: {a.json}")
    else:
        print(f"written: {write_result('paper_scale_train', result)}")
    return result


if __name__ == "__main__":
    main()
