"""What a resolved config asks for, laid out as tasks, cases and store rows. Pure: no I/O, no abTEM.

* A **task** is one host+dopant combo at one beam energy: one abTEM run per environment gives every detector.
* A **case** is one (combo, beam energy, detector): the context a patch was imaged in.
* Rows: task-major, then environment, then detector, then patch. One environment of one task is one shard,
  so each task owns whole shards.
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
