"""What a resolved config asks for, laid out as tasks, cases and store rows. Pure: no I/O, no abTEM.

* A **task** is one host+dopant combo at one beam energy: one abTEM run per environment gives every detector.
* A **case** is one (combo, beam energy, detector): the context a patch was imaged in.
* Rows: task-major, then environment, then detector, then patch. One environment of one task is one shard,
  so each task owns whole shards.
* A **work unit** is what one Dask worker runs at a time: a few environments of one host at one beam energy,
  for one task or, for the environments without a dopant site on a static potential, for every task of that
  host and energy (the structure is the same for every dopant, so one multislice run serves them all; each task
  still draws its own noise, so the bytes equal those of one run per task). Units write whole shards; the clean
  rows of a task (one chunk) are written by the task's finishing step once all its units are back.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .config import supercell_extent_angstrom
from .environments import ENVIRONMENTS
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
    detectors: tuple[str, ...]
    patches_per_image: int
    patch_size_px: int

    @property
    def rows_per_shard(self) -> int:
        return len(self.detectors) * self.patches_per_image

    @property
    def rows_per_task(self) -> int:
        return len(self.environment_ids) * self.rows_per_shard

    @property
    def clean_rows_per_task(self) -> int:
        return len(self.environment_ids) * len(self.detectors)

    @property
    def n_rows(self) -> int:
        return len(self.tasks) * self.rows_per_task

    def case_index(self, task: Task, detector_index: int) -> int:
        return task.index * len(self.detectors) + detector_index

    def shard_start(self, task: Task, environment_position: int) -> int:
        """First row of the shard holding environment number ``environment_position`` of ``task``."""
        return task.index * self.rows_per_task + environment_position * self.rows_per_shard


IMAGES_PER_UNIT = 4
"""Environments per work unit: a single context's 34 runs become 9 units, so every core of a machine has work
(one unit per (combo, energy) left one worker busy with all 34), while each unit still amortises the worker's
abTEM set-up over several runs."""


@dataclass(frozen=True)
class WorkUnit:
    index: int
    host: str
    beam_energy_kev: int
    tasks: tuple[int, ...]                 # the tasks whose shards of these environments this unit writes
    environment_positions: tuple[int, ...]  # positions in ``Plan.environment_ids``

    @property
    def shared(self) -> bool:
        return len(self.tasks) > 1

    @property
    def key(self) -> str:
        who = f"{self.host}-shared" if self.shared else f"task{self.tasks[0]:05d}"
        return (f"simulate-unit-{self.index:05d}-{who}-{self.beam_energy_kev}keV-env"
                f"{self.environment_positions[0]:02d}-{self.environment_positions[-1]:02d}")


def has_dopant_site(environment_id: int) -> bool:
    """Whether the environment's centre or one of its neighbours is the dopant (20 of the 34 do)."""
    env = ENVIRONMENTS[environment_id]
    return env.centre == "D" or "D" in env.neighbours


def work_units(plan: Plan, tasks, frozen_phonons: int, images_per_unit: int = IMAGES_PER_UNIT) -> list[WorkUnit]:
    """Split ``tasks`` (the ones still to run) into work units of at most ``images_per_unit`` multislice runs.

    On a static potential (``frozen_phonons == 0``) the environments without a dopant site are simulated once
    per (host, beam energy) and their shards written for every task of that host and energy in ``tasks``. With
    frozen phonons they are not shared: each task's phonon configurations have their own seed."""
    units: list[WorkUnit] = []

    def add(host, energy, task_ids, positions):
        for i in range(0, len(positions), images_per_unit):
            units.append(WorkUnit(len(units), host, energy, tuple(task_ids), tuple(positions[i:i + images_per_unit])))

    groups: dict[tuple[str, int], list[Task]] = {}
    for t in tasks:
        groups.setdefault((t.host, t.beam_energy_kev), []).append(t)
    all_positions = list(range(len(plan.environment_ids)))
    for (host, energy), group in groups.items():
        share = frozen_phonons == 0 and len(group) > 1
        free = [p for p in all_positions if not has_dopant_site(plan.environment_ids[p])] if share else []
        if free:
            add(host, energy, [t.index for t in group], free)
        for t in group:
            add(host, energy, [t.index], [p for p in all_positions if p not in free])
    return units


def make_plan(cfg: dict) -> Plan:
    """Tasks, case table and row layout of a resolved config."""
    hosts = cfg["materials"]["hosts"]
    detectors = tuple(cfg["imaging"]["detectors"])
    energies = cfg["imaging"]["beam_energies_kev"]
    tasks, cases = [], []
    for combo_index, (host, dopant) in enumerate(cfg["combos"]):
        h = hosts[host]
        a = h["lattice_constant_angstrom"]
        for energy_index, energy in enumerate(energies):
            task = Task(len(tasks), combo_index, host, dopant, energy, energy_index)
            tasks.append(task)
            window = scan_window(a, energy, cfg["imaging"]["convergence_semiangle_mrad"],
                                 cfg["multislice"]["scan_margin_px"])
            for det in detectors:
                d = cfg["imaging"]["detectors"][det]
                cases.append({
                    "host": host,
                    "metal": h["metal"],
                    "chalcogen": h["chalcogen"],
                    "dopant": dopant,
                    "beam_energy_kev": energy,
                    "detector": det,
                    "detector_inner_mrad": d["inner_mrad"],
                    "detector_outer_mrad": d["outer_mrad"],
                    "convergence_semiangle_mrad": cfg["imaging"]["convergence_semiangle_mrad"],
                    "lattice_constant_angstrom": a,
                    "pixel_size_angstrom": 3**0.5 * a / (cfg["patches"]["patch_size_px"] - 1),
                    "scan_sampling_angstrom": window.sampling_angstrom,
                    "supercell_extent_angstrom": list(supercell_extent_angstrom(a, cfg["multislice"]["supercell_repeats"])),
                    "gpts": cfg["multislice"]["gpts"][energy],
                    "task": task.index,
                })
    return Plan(tuple(tasks), tuple(cases), tuple(cfg["environments"]), detectors,
                cfg["patches"]["patches_per_image"], cfg["patches"]["patch_size_px"])


def seed_entropy(cfg: dict, cfg_hash: str) -> list[int]:
    """Root entropy of every draw: the config's seed and its hash (a changed config gives new draws)."""
    return [int(cfg["seed"]), int(cfg_hash[:16], 16)]


def image_rng(entropy: list[int], task: Task, environment_id: int, detector_index: int) -> np.random.Generator:
    """The generator for the patches of one (task, environment, detector) image: independent of the order in
    which tasks run, of the worker, and of whether the run was resumed."""
    seq = np.random.SeedSequence(entropy, spawn_key=(task.index, environment_id, detector_index))
    return np.random.default_rng(seq)


def environments_table() -> list[dict]:
    return [e.as_dict() for e in ENVIRONMENTS]


def task_dict(task: Task) -> dict:
    return asdict(task)
