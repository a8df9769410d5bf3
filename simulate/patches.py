"""The noisy patches of a simulated store: made from a clean scan window and a seed, read from ``patches`` where
the store keeps them, made again from ``clean/scans`` where it does not (layout 2, the default since 2026-12-07).

One recipe, :func:`shard_patches`, makes the noisy rows of one shard (one environment of one task, every
detector) both in the simulation and when a store without ``patches`` is read, so the two are the same bytes:
per detector, the generator ``plan.image_rng(task, environment, detector)``, then ``patches_per_image`` times a
noise draw and a noisy patch (``kernels.noise``), in that order.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from contract import store as schema
from contract.errors import CorruptDataError
from kernels import noise

from . import config as config_mod
from .config import DatasetConfig
from .multislice import ScanWindow, scan_window
from .plan import Plan, Task, image_rng, make_plan, seed_entropy

__all__ = ["PatchSource", "pad_scans", "read_patches", "shard_patches", "task_window"]


def task_window(task: Task, cfg: DatasetConfig) -> ScanWindow:
    """The scan window of every environment of ``task`` (its host's lattice constant, its beam energy)."""
    host = cfg.materials["hosts"][task.host]
    return scan_window(host["lattice_constant_angstrom"], task.beam_energy_kev,
                       cfg.imaging.convergence_semiangle_mrad, cfg.multislice.scan_margin_px)


def max_scan_px(plan: Plan, cfg: DatasetConfig) -> int:
    """Side of ``clean/scans``: the largest scan window of the plan's tasks."""
    return max(task_window(t, cfg).n_px for t in plan.tasks)


def shard_patches(scans, task: Task, environment_id: int, cfg: DatasetConfig, entropy: list[int],
                  plan: Plan) -> np.ndarray:
    """The noisy rows of one shard, ``(n_detectors * patches_per_image, P, P)`` float32 counts.

    ``scans``: per detector (in ``plan.detectors`` order) the clean ``(S, S)`` float32 scan window of the
    environment (fractions of the beam). Deterministic in its arguments."""
    window = task_window(task, cfg)
    ranges = cfg.noise.model_dump()  # the kernel reads plain ranges
    n, p = plan.patches_per_image, plan.patch_size_px
    out = np.empty((len(plan.detectors) * n, p, p), dtype=schema.PATCH_DTYPE)
    for det_index in range(len(plan.detectors)):
        rng = image_rng(entropy, task, environment_id, det_index)
        for i in range(n):
            draw = noise.draw_noise(rng, ranges)
            out[det_index * n + i] = noise.noisy_patch(scans[det_index], draw,
                                                       pixel_size_angstrom=window.sampling_angstrom,
                                                       centre_px=window.centre_px,
                                                       half_width_px=window.patch_half_px, patch_size_px=p, rng=rng)
    return out


def pad_scans(scans: list[np.ndarray], side_px: int) -> np.ndarray:
    """Clean scan windows ``(s, s)`` -> one ``(len, side_px, side_px)`` float32 block, NaN beyond each window."""
    out = np.full((len(scans), side_px, side_px), np.nan, dtype=schema.PATCH_DTYPE)
    for k, scan in enumerate(scans):
        out[k, :scan.shape[0], :scan.shape[1]] = scan
    return out


@dataclass(frozen=True)
class PatchSource:
    """Where the noisy patches of a simulated store come from: its ``patches`` array, or its clean scans and
    seeds. Open one with :func:`patch_source` (cached per process and store)."""

    path: str
    kept: bool
    cfg: DatasetConfig | None
    plan: Plan | None
    entropy: tuple[int, ...]
    shard_owner: tuple[tuple[int, int], ...]  # per shard: (task index, environment position)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)``, ``(n, P, P)`` float32 counts; made again shard by shard when not stored (then
        the range must cover whole shards)."""
        group = schema.open_group(self.path)
        if self.kept:
            return schema.read_checked(group[schema.PATCHES], start, stop, store=self.path, name=schema.PATCHES)
        per = self.plan.rows_per_shard
        if start % per or stop % per:
            raise ValueError(f"rows {start}-{stop}: a store without patches is read in whole shards of {per} rows")
        return np.concatenate([self._shard(group, k) for k in range(start // per, stop // per)]) if stop > start \
            else np.empty((0, self.plan.patch_size_px, self.plan.patch_size_px), dtype=schema.PATCH_DTYPE)

    def _shard(self, group, shard: int) -> np.ndarray:
        plan = self.plan
        task_index, position = self.shard_owner[shard]
        task = plan.tasks[task_index]
        n_det = len(plan.detectors)
        first = plan.clean_start(task) + position * n_det
        side = task_window(task, self.cfg).n_px
        name = f"{schema.CLEAN}/{schema.SCANS}"
        scans = schema.read_checked(group[name], first, first + n_det, store=self.path, name=name)
        scans = scans[:, :side, :side]
        if not np.isfinite(scans).all():
            if not group[schema.TASK_DONE][task_index]:
                raise schema.StoreError(f"store {self.path!r}: task {task_index} ({task.host}+{task.dopant} "
                                        f"{task.beam_energy_kev} keV) is not simulated yet, so shard {shard} has no "
                                        "scans to make patches from; finish it with `python -m simulate run ... "
                                        "--resume`")
            raise CorruptDataError(f"store {self.path!r}: {name} rows {first}-{first + n_det - 1} (shard {shard}) "
                                   f"are not finite although the task is marked done: run "
                                   f"`{schema.repair_command(self.path, schema.PATCHES)}`")
        env_id = plan.environments_of(task)[position]
        return shard_patches(scans, task, env_id, self.cfg, list(self.entropy), plan)


@lru_cache(maxsize=8)
def _source(path: str, config_hash: str | None, kept: bool, has_scans: bool) -> PatchSource:
    if kept:
        return PatchSource(path, True, None, None, (), ())
    group = schema.open_group(path)
    cfg = config_mod.stored_config(config_mod.config_from_attrs(group.attrs[schema.ATTR_CONFIG]))
    plan = make_plan(cfg)
    owners = tuple((t.index, pos) for t in plan.tasks for pos in range(len(plan.environments_of(t))))
    return PatchSource(path, False, cfg, plan, tuple(seed_entropy(cfg.seed, config_hash)), owners)


def patch_source(path: str | Path) -> PatchSource:
    """The patch source of the simulated store at ``path`` (cached per process, keyed by what decides it);
    ``StoreError`` when the store has neither ``patches`` nor the clean scans and config to make them."""
    path = str(path)
    group = schema.open_group(path)
    _, kept = schema.store_layout(group.attrs)
    has_patches = schema.has_array(group, schema.PATCHES)
    has_scans = schema.CLEAN in group and schema.has_array(group[schema.CLEAN], schema.SCANS)
    if kept and not has_patches:
        raise schema.StoreError(f"store {path!r} has no array {schema.PATCHES!r}: is the simulation finished?")
    if not kept and not (has_scans and schema.ATTR_CONFIG in group.attrs):
        raise schema.StoreError(f"store {path!r} keeps no noisy patches and has no {schema.CLEAN}/{schema.SCANS} "
                                f"and config to make them from")
    return _source(path, group.attrs.get(schema.ATTR_CONFIG_HASH), kept, has_scans)


def read_patches(path: str | Path, start: int, stop: int) -> np.ndarray:
    """Noisy patches of rows ``[start, stop)`` of the store at ``path``, ``(n, P, P)`` float32 counts, whether the
    store keeps them or not (then whole shards only)."""
    return patch_source(path).read(start, stop)
