"""Orchestration of a 4D-STEM simulation: validate, create or resume the store, fan the tasks out over Dask.
Everything that can be wrong with the config is raised before a single task is submitted."""
from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import TextIO

from contract import fourdstem as schema
from contract.store import StoreError, open_group

from . import fourdstem as fd
from . import fourdstem_store as store
from .config import config_hash


def scan_attrs(cfg: dict, tasks) -> dict[str, dict]:
    """Per scan, the group attributes of ``contract.fourdstem`` (structure, defects, geometry, optics)."""
    from .fourdstem_structures import build_scan_structure

    im, det = cfg["imaging"], cfg["detector"]
    out = {}
    for name, spec in cfg["scans"].items():
        _, defects, fold = build_scan_structure(spec)
        geo = fd.scan_geometry(spec)
        dtheta = fd.uniform_angular_sampling_mrad(geo.extent, im["beam_energy_kev"]) * det["bin_factor"]
        out[name] = {
            schema.ATTR_STRUCTURE: spec, schema.ATTR_DEFECTS: defects,
            schema.ATTR_SCAN_SHAPE: list(geo.shape), schema.ATTR_SCAN_START: [0.0, 0.0],
            schema.ATTR_SCAN_SAMPLING: list(geo.sampling), schema.ATTR_FOLD_PERIOD: list(geo.fold_period_px),
            "fold_cell_angstrom": list(fold), "extent_angstrom": list(geo.extent),
            schema.ATTR_ENERGY: im["beam_energy_kev"], schema.ATTR_CONVERGENCE: im["convergence_semiangle_mrad"],
            schema.ATTR_ANGULAR_SAMPLING: dtheta, schema.ATTR_MAX_ANGLE: dtheta * (det["pattern_size_px"] // 2),
            schema.ATTR_DOSES: list(im["doses_e_per_angstrom2"]),
            schema.ATTR_ROWS_PER_SHARD: cfg["multislice"]["scan_rows_per_task"] * geo.shape[1],
            schema.ATTR_TASKS: [fd.task_dict(t) for t in tasks if t.scan == name],
            "pattern_axes": "[ky, kx]; rows are (scan y, scan x) row-major",
        }
    return out


def simulate_fourdstem(config_path: str | Path, out: str | Path, *, cluster: str = "local",
                       cluster_config: str | None = None, n_workers: int | None = None, resume: bool = False,
                       stream: TextIO | None = None, client=None) -> dict:
    """Run (or finish, with ``resume``) the 4D-STEM simulation of ``config_path`` into the store ``out``."""
    from cluster import open_client, track

    from .run import versions

    stream = sys.stderr if stream is None else stream
    cfg = fd.load(config_path)
    cfg_hash = config_hash(cfg)
    tasks = fd.make_tasks(cfg)
    out = Path(out)
    if out.exists():
        if not resume:
            raise StoreError(f"{out} exists: pass --resume to finish it, or choose another --out")
        stored = open_group(out).attrs.get(schema.ATTR_CONFIG_HASH)
        if stored != cfg_hash:
            raise StoreError(f"{out} was written from a different config (hash {str(stored)[:12]} != "
                             f"{cfg_hash[:12]}); choose another --out")
        done = store.done_tasks(out)
    else:
        attrs = scan_attrs(cfg, tasks)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            store.create_store(out, cfg, cfg_hash, tasks, attrs, versions())
        except OSError as err:  # a read-only or missing file system, no permission, a full disk
            raise StoreError(f"--out {str(out)!r}: cannot create the store: {err.strerror or err}") from err
        done = [False] * len(tasks)
    todo = [t for t in tasks if not done[t.index]]
    n_rows = sum(a[schema.ATTR_SCAN_SHAPE][0] * a[schema.ATTR_SCAN_SHAPE][1]
                 for a in (open_group(out)[s].attrs for s in cfg["scans"]))
    print(f"simulate fourdstem: {cfg['name']}: {len(cfg['scans'])} scans, {n_rows} probe positions, "
          f"{len(tasks)} tasks, {len(cfg['imaging']['doses_e_per_angstrom2'])} doses -> {out}", file=stream)
    if not todo:
        print(f"simulate fourdstem: all {len(tasks)} tasks already done; nothing to do", file=stream)
        return {"tasks_run": 0, "tasks_total": len(tasks), "seconds": 0.0}
    if len(todo) < len(tasks):
        print(f"simulate fourdstem: resuming: {len(tasks) - len(todo)} of {len(tasks)} tasks already done",
              file=stream)
    started = time.perf_counter()
    if client is None and cluster == "local" and n_workers is None:
        from .run import _default_local_workers

        n_workers = min(len(todo), _default_local_workers())
    with contextlib.nullcontext(client) if client is not None else \
            open_client(cluster, n_workers=n_workers, config_path=cluster_config) as active:
        futures = [active.submit(fd.run_task, t, cfg, cfg_hash, str(out.resolve()), key=t.key, pure=False,
                                 retries=2) for t in todo]
        seconds = [r["seconds"] for r in track(futures, label="fourdstem", unit="task", stream=stream)]
    elapsed = time.perf_counter() - started
    print(f"simulate fourdstem: done: {len(todo)} tasks in {elapsed:.1f} s ({sum(seconds):.1f} task-seconds)",
          file=stream)
    return {"tasks_run": len(todo), "tasks_total": len(tasks), "seconds": elapsed, "task_seconds": seconds}
