"""What a resolved config asks for, laid out as tasks, cases and store rows. Pure: no I/O, no abTEM.

* A **task** is one host+dopant combo at one beam energy: one abTEM run per environment gives every detector.
* A **case** is one (combo, beam energy, detector): the context a patch was imaged in.
* Rows: task-major, then environment, then detector, then patch. One environment of one task is one shard,
  so each task owns whole shards.
* An undoped combo (dopant ``"none"``) simulates only the config's environments without a dopant site
  (``environments.environments_for_dopant``), so its tasks are shorter: a task's rows start after the shards of
  all earlier tasks (``first_shard``), and the clean arrays are chunked by the greatest common divisor of the
  tasks' clean rows so that every task still owns whole chunks. A plan of doped combos only is laid out exactly
  as before.
* A **work unit** is what one Dask worker runs at a time: a few environments of one host at one beam energy,
  for one task or, for the environments without a dopant site, for every task of that host and energy (the
  structure is the same for every dopant, so one multislice run serves them all: on a static potential always,
  with frozen phonons where their seeds are shared, layout 2; each task still draws its own noise, so the bytes
  equal those of one run per task). Units write whole shards; the clean
  rows of a task (one chunk) are written by the task's finishing step once all its units are back.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from contract.environments import ENVIRONMENTS, environments_for_dopant
from contract.errors import ConfigError

from .config import DatasetConfig, supercell_extent_angstrom
from .multislice import scan_window


@dataclass(frozen=True)
class Task:
    index: int
    combo_index: int
    host: str
    dopant: str
    beam_energy_kev: int
    energy_index: int

    @property
    def key(self) -> str:
        """A Dask key that says what the task is."""
        return f"simulate-{self.index:05d}-{self.host}+{self.dopant}-{self.beam_energy_kev}keV"


@dataclass(frozen=True)
class Plan:
    tasks: tuple[Task, ...]
    cases: tuple[dict, ...]
    environment_ids: tuple[int, ...]
    """The config's environments (what a doped combo simulates)."""
    detectors: tuple[str, ...]
    patches_per_image: int
    patch_size_px: int
    task_environment_ids: tuple[tuple[int, ...], ...] = ()
    """Per task (by index), the environments it simulates; empty: every task has ``environment_ids``."""

    def environments_of(self, task: Task) -> tuple[int, ...]:
        return self.task_environment_ids[task.index] if self.task_environment_ids else self.environment_ids

    @property
    def is_uniform(self) -> bool:
        """Whether every task simulates the same number of environments (no undoped combo beside doped ones)."""
        return len({len(self.environments_of(t)) for t in self.tasks}) <= 1

    @property
    def rows_per_shard(self) -> int:
        return len(self.detectors) * self.patches_per_image

    def first_shard(self, task: Task) -> int:
        """Index of the first shard of ``task`` (the shards of all earlier tasks come before it)."""
        return sum(len(self.environments_of(t)) for t in self.tasks[:task.index])

    def task_rows(self, task: Task) -> int:
        return len(self.environments_of(task)) * self.rows_per_shard

    def task_clean_rows(self, task: Task) -> int:
        return len(self.environments_of(task)) * len(self.detectors)

    def clean_start(self, task: Task) -> int:
        """First row of ``task``'s noiseless images in ``clean/``."""
        return self.first_shard(task) * len(self.detectors)

    @property
    def clean_chunk_rows(self) -> int:
        """Rows per chunk of the ``clean/`` arrays: one task's clean rows when all tasks are alike (the layout of
        every store made before undoped combos), else their greatest common divisor, so that no chunk is
        written by two tasks (zarr-python #3514)."""
        return math.gcd(*(self.task_clean_rows(t) for t in self.tasks))

    def task_shards(self, task: Task) -> range:
        """Indices of ``task``'s shards in the row arrays."""
        first = self.first_shard(task)
        return range(first, first + len(self.environments_of(task)))

    def task_clean_chunks(self, task: Task) -> range:
        """Indices of ``task``'s chunks in the ``clean/`` arrays."""
        per = self.clean_chunk_rows
        return range(self.clean_start(task) // per, (self.clean_start(task) + self.task_clean_rows(task)) // per)

    def _uniform(self, value_of_task) -> int:
        if not self.is_uniform:
            raise ValueError("the tasks of this plan differ in size (an undoped combo simulates fewer "
                             "environments): use task_rows(task) / task_clean_rows(task)")
        return value_of_task(self.tasks[0]) if self.tasks else 0

    @property
    def rows_per_task(self) -> int:
        return self._uniform(self.task_rows)

    @property
    def clean_rows_per_task(self) -> int:
        return self._uniform(self.task_clean_rows)

    @property
    def n_shards(self) -> int:
        return sum(len(self.environments_of(t)) for t in self.tasks)

    @property
    def n_rows(self) -> int:
        return self.n_shards * self.rows_per_shard

    @property
    def n_clean_rows(self) -> int:
        return self.n_shards * len(self.detectors)

    def case_index(self, task: Task, detector_index: int) -> int:
        return task.index * len(self.detectors) + detector_index

    def shard_start(self, task: Task, environment_position: int) -> int:
        """First row of the shard holding environment number ``environment_position`` of ``task``."""
        return (self.first_shard(task) + environment_position) * self.rows_per_shard


IMAGES_PER_UNIT = 4
"""Environments per work unit: a single context's 34 runs become 9 units, so every core of a machine has work
(one unit per (combo, energy) left one worker busy with all 34), while each unit still amortises the worker's
abTEM set-up over several runs."""


@dataclass(frozen=True)
class WorkUnit:
    index: int
    host: str
    beam_energy_kev: int
    tasks: tuple[int, ...]            # the tasks whose shards of these environments this unit writes
    environment_ids: tuple[int, ...]  # environment ids (each task finds its own position: ``Plan.environments_of``)

    @property
    def shared(self) -> bool:
        return len(self.tasks) > 1

    @property
    def key(self) -> str:
        who = f"{self.host}-shared" if self.shared else f"task{self.tasks[0]:05d}"
        return (f"simulate-unit-{self.index:05d}-{who}-{self.beam_energy_kev}keV-env"
                f"{self.environment_ids[0]:02d}-{self.environment_ids[-1]:02d}")


def has_dopant_site(environment_id: int) -> bool:
    """Whether the environment's centre or one of its neighbours is the dopant (20 of the 34 do)."""
    env = ENVIRONMENTS[environment_id]
    return env.centre == "D" or "D" in env.neighbours


def work_units(plan: Plan, tasks, frozen_phonons: int, images_per_unit: int = IMAGES_PER_UNIT,
               shared_phonon_seeds: bool = True) -> list[WorkUnit]:
    """Split ``tasks`` (the ones still to run) into work units of at most ``images_per_unit`` multislice runs.

    The environments without a dopant site are simulated once per (host, beam energy) and their shards written
    for every task of that host and energy in ``tasks``: on a static potential always, with frozen phonons when
    those environments' phonon seeds are shared by the host's dopants (``shared_phonon_seeds``: a layout-2
    store, ``simulate.task.phonon_seed``). In a layout-1 store each task's phonon configurations have their own
    seed, so nothing is shared there with frozen phonons."""
    units: list[WorkUnit] = []

    def add(host, energy, task_ids, ids):
        for i in range(0, len(ids), images_per_unit):
            units.append(WorkUnit(len(units), host, energy, tuple(task_ids), tuple(ids[i:i + images_per_unit])))

    groups: dict[tuple[str, int], list[Task]] = {}
    for t in tasks:
        groups.setdefault((t.host, t.beam_energy_kev), []).append(t)
    for (host, energy), group in groups.items():
        share = (frozen_phonons == 0 or shared_phonon_seeds) and len(group) > 1
        # an undoped task holds exactly these environments, a doped one all of the config's
        free = [e for e in plan.environment_ids if not has_dopant_site(e)] if share else []
        if free:
            add(host, energy, [t.index for t in group], free)
        for t in group:
            add(host, energy, [t.index], [e for e in plan.environments_of(t) if e not in free])
    return units


def make_plan(cfg: DatasetConfig) -> Plan:
    """Tasks, case table and row layout of a resolved config."""
    hosts = cfg.materials["hosts"]
    detectors = tuple(cfg.imaging.detectors)
    energies = cfg.imaging.beam_energies_kev
    tasks, cases, task_envs = [], [], []
    for combo_index, (host, dopant) in enumerate(cfg.combos):
        h = hosts[host]
        a = h["lattice_constant_angstrom"]
        envs = environments_for_dopant(dopant, cfg.environments)
        if not envs:
            raise ConfigError(f"environments: none of {cfg.environments} is free of dopant sites, so the undoped "
                              f"combo {host}+{dopant} has nothing to simulate; add one of the 14 without a dopant "
                              "site (contract.environments.UNDOPED_ENVIRONMENT_IDS)")
        for energy_index, energy in enumerate(energies):
            task = Task(len(tasks), combo_index, host, dopant, energy, energy_index)
            tasks.append(task)
            task_envs.append(envs)
            window = scan_window(a, energy, cfg.imaging.convergence_semiangle_mrad, cfg.multislice.scan_margin_px)
            for det in detectors:
                d = cfg.imaging.detectors[det]
                cases.append({
                    "host": host,
                    "metal": h["metal"],
                    "chalcogen": h["chalcogen"],
                    "dopant": dopant,
                    "beam_energy_kev": energy,
                    "detector": det,
                    "detector_inner_mrad": d.inner_mrad,
                    "detector_outer_mrad": d.outer_mrad,
                    "convergence_semiangle_mrad": cfg.imaging.convergence_semiangle_mrad,
                    "lattice_constant_angstrom": a,
                    "pixel_size_angstrom": 3**0.5 * a / (cfg.patches.patch_size_px - 1),
                    "scan_sampling_angstrom": window.sampling_angstrom,
                    "supercell_extent_angstrom": list(supercell_extent_angstrom(a, cfg.multislice.supercell_repeats)),
                    "gpts": cfg.multislice.gpts[energy],
                    "task": task.index,
                })
    uniform = all(len(e) == len(cfg.environments) for e in task_envs)
    return Plan(tuple(tasks), tuple(cases), tuple(cfg.environments), detectors,
                cfg.patches.patches_per_image, cfg.patches.patch_size_px,
                () if uniform else tuple(task_envs))


def seed_entropy(seed: int, cfg_hash: str) -> list[int]:
    """Root entropy of every draw: the config's ``seed`` and its hash (a changed config gives new draws)."""
    return [int(seed), int(cfg_hash[:16], 16)]


def image_rng(entropy: list[int], task: Task, environment_id: int, detector_index: int) -> np.random.Generator:
    """The generator for the patches of one (task, environment, detector) image: independent of the order in
    which tasks run, of the worker, and of whether the run was resumed."""
    seq = np.random.SeedSequence(entropy, spawn_key=(task.index, environment_id, detector_index))
    return np.random.default_rng(seq)


def environments_table() -> list[dict]:
    return [e.as_dict() for e in ENVIRONMENTS]


def task_dict(task: Task) -> dict:
    return asdict(task)
