"""Simulation work run inside Dask workers. ``run_task``: every environment of one host+dopant combo at one
beam energy -> clean images (abTEM) -> noisy patches (when the store keeps them) -> whole shards in the store,
clean patches and scans -> done marker (what
``simulate verify --repair`` reruns). ``run_unit`` + ``finish_task``: the same bytes from a few environments at a
time (``simulate.plan.work_units``), so that one combo's runs spread over every worker."""
from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np

from contract import store as schema
from contract.environments import ENVIRONMENTS
from kernels import noise

from . import multislice, store
from .config import DatasetConfig
from .patches import pad_scans, shard_patches, task_window
from .plan import Plan, Task, WorkUnit, has_dopant_site, make_plan, seed_entropy
from .structures import build_environment

PHONON_STREAM = 1000  # spawn-key slot of the frozen-phonon seed; detector streams use 0..n_detectors-1
SHARED_PHONON_STREAM = 1001  # the slot of a phonon seed shared by a host's dopants (layout 2)


def phonon_seed(entropy: list[int], task: Task, environment_id: int, shared: bool) -> int:
    """The frozen-phonon seed of one environment of ``task``: per task (layout 1, and every environment with a
    dopant site), or, with ``shared``, per (host, beam energy, environment), so that a structure without a dopant
    site gets the same displacements, hence the same images, for every dopant of its host."""
    if shared and not has_dopant_site(environment_id):
        host_key = zlib.crc32(task.host.encode())  # a stable integer per host name
        key = (SHARED_PHONON_STREAM, host_key, task.beam_energy_kev, environment_id)
    else:
        key = (task.index, environment_id, PHONON_STREAM)
    return int(np.random.SeedSequence(entropy, spawn_key=key).generate_state(1)[0])


def environment_images(task: Task, cfg: DatasetConfig, cfg_hash: str, plan: Plan, environment_position: int,
                       shared_phonon_seeds: bool = True) -> dict:
    """The clean images (one per detector) of one environment of ``task``: one multislice run. Deterministic."""
    ms, imaging = cfg.multislice, cfg.imaging
    host = cfg.materials["hosts"][task.host]
    env = ENVIRONMENTS[plan.environments_of(task)[environment_position]]
    entropy = seed_entropy(cfg.seed, cfg_hash)
    atoms = build_environment(host, task.dopant, env, tuple(ms.supercell_repeats), ms.vacuum_angstrom)
    window = task_window(task, cfg)
    # frozen-phonon displacements: their own stream, apart from the per-detector noise streams (0, 1, ...)
    seed = phonon_seed(entropy, task, env.id, shared_phonon_seeds)
    # A store made before `slicing` existed recorded only uniform `slice_thickness_angstrom` (and the infinite
    # projection): `simulate verify --repair` reads it with those (simulate.config.stored_config).
    return multislice.simulate_images(
        atoms, atoms.info["centre_xy_angstrom"], beam_energy_kev=task.beam_energy_kev,
        gpts=ms.gpts[task.beam_energy_kev], convergence_semiangle_mrad=imaging.convergence_semiangle_mrad,
        detectors={name: d.as_mapping() for name, d in imaging.detectors.items()}, window=window,
        slicing=ms.slicing, slice_thickness_angstrom=ms.slice_thickness_angstrom, projection=ms.projection,
        parametrization=ms.parametrization, frozen_phonons=ms.frozen_phonons,
        frozen_phonon_sigma_angstrom=ms.frozen_phonon_sigma_angstrom, seed=seed, device=ms.device)


def rows_from_images(images: dict, task: Task, cfg: DatasetConfig, cfg_hash: str, plan: Plan, environment_position: int,
                     layout: store.WriteLayout | None = None):
    """The shard and the clean rows of one environment of ``task`` from its clean images. The noise stream is the
    task's own, so images shared between tasks still give each task its own draws. ``layout`` (default: keep the
    patches, no scans) says whether the noisy patches are made and whether the clean scans go with the clean rows."""
    layout = layout or store.WriteLayout(1, True, None)
    env = ENVIRONMENTS[plan.environments_of(task)[environment_position]]
    window = task_window(task, cfg)
    n, p, n_det = plan.patches_per_image, plan.patch_size_px, len(plan.detectors)
    rows = n_det * n
    shard = {
        schema.LABEL: np.full(rows, env.label, schema.ROW_ARRAYS[schema.LABEL]),
        schema.CASE: np.repeat([plan.case_index(task, d) for d in range(n_det)], n).astype(schema.ROW_ARRAYS[schema.CASE]),
        schema.ENVIRONMENT: np.full(rows, env.id, schema.ROW_ARRAYS[schema.ENVIRONMENT]),
    }
    scans = [images[det] for det in plan.detectors]
    if layout.keep_patches:
        shard[schema.PATCHES] = shard_patches(scans, task, env.id, cfg, seed_entropy(cfg.seed, cfg_hash), plan)
    clean_rows = {
        schema.PATCHES: np.stack([noise.clean_patch(s, centre_px=window.centre_px, half_width_px=window.patch_half_px,
                                                    patch_size_px=p) for s in scans]),
        schema.LABEL: np.full(n_det, env.label, schema.ROW_ARRAYS[schema.LABEL]),
        schema.CASE: np.asarray([plan.case_index(task, d) for d in range(n_det)], schema.ROW_ARRAYS[schema.CASE]),
        schema.ENVIRONMENT: np.full(n_det, env.id, schema.ROW_ARRAYS[schema.ENVIRONMENT]),
    }
    if layout.scan_px is not None:
        clean_rows[schema.SCANS] = pad_scans(scans, layout.scan_px)
    return shard, clean_rows


def simulate_task_arrays(task: Task, cfg: DatasetConfig, cfg_hash: str, plan: Plan, environment_position: int,
                         layout: store.WriteLayout | None = None):
    """The rows of one environment of ``task``: returns (shard arrays, clean arrays). Deterministic."""
    layout = layout or store.WriteLayout(1, True, None)
    images = environment_images(task, cfg, cfg_hash, plan, environment_position, layout.shares_phonon_seeds)
    return rows_from_images(images, task, cfg, cfg_hash, plan, environment_position, layout)


def run_unit(unit: WorkUnit, cfg: DatasetConfig, cfg_hash: str, store_path: str) -> dict:
    """Simulate one work unit and write its shards (every task it serves); the clean rows go back to the caller,
    keyed by task and environment position, for :func:`finish_task` (a task's clean rows are one chunk)."""
    started = time.perf_counter()
    multislice.configure_abtem(cfg.multislice.device, cfg.multislice.fftw_planning_effort)
    plan = make_plan(cfg)
    layout = store.write_layout(store_path)
    clean: dict[int, dict[int, dict]] = {t: {} for t in unit.tasks}
    for env_id in unit.environment_ids:
        # one multislice run; for a shared unit the environment has no dopant site, so any of its tasks builds it
        first = plan.tasks[unit.tasks[0]]
        images = environment_images(first, cfg, cfg_hash, plan, plan.environments_of(first).index(env_id),
                                    layout.shares_phonon_seeds)
        for t in unit.tasks:
            task = plan.tasks[t]
            position = plan.environments_of(task).index(env_id)  # an undoped task lists fewer environments
            shard, clean_rows = rows_from_images(images, task, cfg, cfg_hash, plan, position, layout)
            store.write_shard(store_path, plan.shard_start(task, position), shard)
            clean[t][position] = clean_rows
    return {"unit": unit.index, "key": unit.key, "seconds": time.perf_counter() - started,
            "images": len(unit.environment_ids), "clean": clean}


def finish_task(task: Task, cfg: DatasetConfig, store_path: str, *unit_results: dict) -> dict:
    """Write ``task``'s clean rows from its units' results, then its done marker (after all its shards)."""
    plan = make_plan(cfg)
    parts: dict[int, dict] = {}
    for r in unit_results:
        parts.update(r["clean"].get(task.index, {}))
    positions = list(range(len(plan.environments_of(task))))
    if sorted(parts) != positions:
        raise RuntimeError(f"task {task.key}: clean rows of environment positions "
                           f"{sorted(set(positions) - set(parts))} missing")
    clean = {k: np.concatenate([parts[pos][k] for pos in sorted(parts)]) for k in parts[0]}
    store.write_clean(store_path, plan.clean_start(task), clean)
    store.mark_done(store_path, task.index)
    return {"task": task.index, "key": task.key}


def run_task(task: Task, cfg: DatasetConfig, cfg_hash: str, store_path: str) -> dict:
    """Simulate ``task`` and write its shards, then its done marker. Safe to rerun: it rewrites the same bytes."""
    started = time.perf_counter()
    multislice.configure_abtem(cfg.multislice.device, cfg.multislice.fftw_planning_effort)
    plan = make_plan(cfg)
    layout = store.write_layout(store_path)
    clean_parts = []
    for position in range(len(plan.environments_of(task))):
        shard, clean_rows = simulate_task_arrays(task, cfg, cfg_hash, plan, position, layout)
        store.write_shard(store_path, plan.shard_start(task, position), shard)
        clean_parts.append(clean_rows)
    clean = {k: np.concatenate([c[k] for c in clean_parts]) for k in clean_parts[0]}
    store.write_clean(store_path, plan.clean_start(task), clean)
    store.mark_done(store_path, task.index)
    return {"task": task.index, "key": task.key, "seconds": time.perf_counter() - started,
            "images": len(plan.environments_of(task)), "rows": plan.task_rows(task), "store": str(Path(store_path))}
