"""Orchestration of a simulation run: validate, create or resume the store, fan tasks out over Dask, report
progress. Everything that can be wrong with the config is raised here before a single job is submitted."""
from __future__ import annotations

import contextlib
import sys
import time
from importlib import metadata
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from contract import store as schema

from . import config as config_mod
from .config import DatasetConfig
from .patches import max_scan_px
from .plan import environments_table, make_plan, task_dict, work_units
from .store import StoreError, create_store, done_tasks, write_layout
from .task import finish_task, run_unit


def versions() -> dict[str, str]:
    """Versions of the project and of the libraries that decide the bytes of a store."""
    out = {}
    for dist in ("stem-context", "abtem", "ase", "numpy", "scipy", "zarr", "dask", "distributed"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def store_attrs(config: Mapping, cfg_hash: str, plan) -> dict:
    """The group attributes; ``config``: the resolved config's mapping (``DatasetConfig.as_mapping``), as stored."""
    return {
        "dataset": config["name"],
        schema.ATTR_CASES: list(plan.cases),
        schema.ATTR_ENVIRONMENTS: environments_table(),
        schema.ATTR_DETECTORS: list(plan.detectors),
        schema.ATTR_PATCH_SIZE: plan.patch_size_px,
        "pixel_size_angstrom": [c["pixel_size_angstrom"] for c in plan.cases],
        "patches_per_image": plan.patches_per_image,
        schema.ATTR_ROWS_PER_SHARD: plan.rows_per_shard,
        # one number when every task is alike (doped combos only); per task when an undoped combo is shorter
        schema.ATTR_ROWS_PER_TASK: plan.rows_per_task if plan.is_uniform else [plan.task_rows(t) for t in plan.tasks],
        schema.ATTR_CLEAN_ROWS_PER_TASK: (plan.clean_rows_per_task if plan.is_uniform
                                          else [plan.task_clean_rows(t) for t in plan.tasks]),
        schema.ATTR_TASKS: [task_dict(t) for t in plan.tasks],
        schema.ATTR_CONFIG: config,
        schema.ATTR_CONFIG_HASH: cfg_hash,
        schema.ATTR_VERSIONS: versions(),
        "units": {schema.PATCHES: "detector counts (electrons)", f"{schema.CLEAN}/{schema.PATCHES}": "fraction of the incident beam"},
    }


def prepare_store(cfg: DatasetConfig, out: Path, resume: bool, keep_patches: bool | None = None):
    """Create the store, or reopen it for ``resume``; returns (plan, config hash, indices of tasks to run).

    ``keep_patches``: write the noisy patches into a new store (default no: they are made again from the clean
    scans, ``simulate.patches``). A resumed store keeps the layout it was created with; asking it for the other
    one is refused."""
    cfg_hash = config_mod.config_hash(cfg)
    plan = make_plan(cfg)
    if out.exists():
        if not resume:
            raise StoreError(f"{out} exists: pass --resume to finish it, or choose another --out")
        meta = schema.read_meta(out, require=())
        if meta.config_hash != cfg_hash:
            raise StoreError(f"{out} was written from a different config (hash {str(meta.config_hash)[:12]} != "
                             f"{cfg_hash[:12]}); choose another --out")
        kept = schema.store_layout(meta.attrs)[1]
        if keep_patches is not None and keep_patches != kept:
            raise StoreError(f"{out} was created {'with' if kept else 'without'} its noisy patches; resume it "
                             f"{'with' if kept else 'without'} --keep-patches (a store keeps its layout)")
        done = done_tasks(out)
    else:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            create_store(out, plan, store_attrs(cfg.as_mapping(), cfg_hash, plan), keep_patches=bool(keep_patches),
                         scan_px=max_scan_px(plan, cfg))
        except OSError as err:  # a read-only or missing file system, no permission, a full disk
            raise StoreError(f"--out {str(out)!r}: cannot create the store: {err.strerror or err}") from err
        done = [False] * len(plan.tasks)
    todo = [t for t in plan.tasks if not done[t.index]]
    return plan, cfg_hash, todo


def simulate(config_path: str | Path, out: str | Path, *, cluster: str = "local", cluster_config: str | None = None,
             n_workers: int | None = None, resume: bool = False, stream: TextIO | None = None,
             client=None, keep_patches: bool | None = None) -> dict:
    """Run (or finish) the simulation of ``config_path`` into the zarr store ``out``. Returns a summary.

    ``keep_patches``: store the noisy patches too (``--keep-patches``); None: the store's layout when resuming,
    else no.

    ``client``: an already connected ``distributed.Client`` to use instead of starting a cluster
    (``cluster``, ``cluster_config`` and ``n_workers`` are then ignored)."""
    stream = sys.stderr if stream is None else stream
    cfg = config_mod.load(config_path)  # raises ConfigError before anything is created or submitted
    out = Path(out)
    plan, cfg_hash, todo = prepare_store(cfg, out, resume, keep_patches)
    n_images = sum(len(plan.environments_of(t)) for t in plan.tasks)
    print(f"simulate: {cfg.name}: {len(cfg.combos)} combos x {len(cfg.imaging.beam_energies_kev)} energies "
          f"= {len(plan.tasks)} tasks, {n_images} images, {plan.n_rows} patches "
          f"({'stored' if write_layout(out).keep_patches else 'made from the clean scans when read'}) -> {out}",
          file=stream)
    if not todo:
        print(f"simulate: all {len(plan.tasks)} tasks already done; nothing to do", file=stream)
        return {"tasks_run": 0, "tasks_total": len(plan.tasks), "seconds": 0.0}
    if len(todo) < len(plan.tasks):
        print(f"simulate: resuming: {len(plan.tasks) - len(todo)} of {len(plan.tasks)} tasks already done", file=stream)
    started = time.perf_counter()
    task_seconds = run_tasks(todo, cfg, cfg_hash, out, cluster=cluster, cluster_config=cluster_config,
                             n_workers=n_workers, stream=stream, client=client)
    elapsed = time.perf_counter() - started
    n_runs = sum(len(u.environment_ids) for u in work_units(plan, todo, cfg.multislice.frozen_phonons,
                                                            shared_phonon_seeds=write_layout(out).shares_phonon_seeds))
    print(f"simulate: done: {len(todo)} tasks in {elapsed:.1f} s ({sum(task_seconds):.1f} task-seconds)", file=stream)
    return {"tasks_run": len(todo), "tasks_total": len(plan.tasks), "seconds": elapsed,
            "task_seconds": task_seconds, "multislice_runs": n_runs}


def run_tasks(todo, cfg: DatasetConfig, cfg_hash: str, out: Path, *, cluster: str = "local", cluster_config: str | None = None,
              n_workers: int | None = None, stream: TextIO | None = None, client=None) -> list[float]:
    """Run the tasks ``todo`` of a store on a Dask cluster (or ``client``) as work units of a few environments
    each (``simulate.plan.work_units``), then each task's finishing step; returns each task's compute seconds
    (a shared unit's seconds split evenly between the tasks it serves)."""
    from cluster import open_client, track

    stream = sys.stderr if stream is None else stream
    plan = make_plan(cfg)
    units = work_units(plan, todo, cfg.multislice.frozen_phonons,
                       shared_phonon_seeds=write_layout(out).shares_phonon_seeds)
    n_runs = sum(len(u.environment_ids) for u in units)
    workers = n_workers if n_workers is not None else (min(len(units), _default_local_workers()) if cluster == "local" else None)
    with contextlib.nullcontext(client) if client is not None else \
            open_client(cluster, n_workers=workers, config_path=cluster_config) as active:
        print(f"simulate: {len(active.scheduler_info(n_workers=-1)['workers'])} Dask workers; {len(units)} work units, "
              f"{n_runs} multislice runs ({sum(len(u.environment_ids) for u in units if u.shared)} of them "
              "shared by a host's dopants)", file=stream)
        path = str(Path(out).resolve())
        unit_futures = [active.submit(run_unit, u, cfg, cfg_hash, path, key=u.key, pure=False, retries=2)
                        for u in units]
        finish = []
        for t in todo:
            mine = [f for u, f in zip(units, unit_futures) if t.index in u.tasks]
            finish.append(active.submit(finish_task, t, cfg, path, *mine, key=t.key, pure=False, retries=2))
        seconds = {t.index: 0.0 for t in todo}
        for r in track(unit_futures, label="simulate", unit="unit", stream=stream):
            for t in r["clean"]:
                seconds[t] += r["seconds"] / len(r["clean"])
        for _ in track(finish, label="simulate: tasks finished", unit="task", stream=stream, interval_s=3600):
            pass
        return [seconds[t.index] for t in todo]


def _default_local_workers() -> int:
    from cluster import local_worker_count
    from cluster.local import machine_cores, machine_memory_bytes

    return local_worker_count(machine_cores(), machine_memory_bytes())
