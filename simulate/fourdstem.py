"""The 4D-STEM kind of the simulation stage: config, task plan, the abTEM pixelated-detector scan, binning and
Poisson noise, and the task that writes whole shards. Store layout: ``contract.fourdstem``.

A *scan* is one structure (``simulate.fourdstem_structures``) scanned on a grid commensurate with its lattice
(``scan_steps_per_cell`` probe steps per fold cell), over the whole periodic supercell (``endpoint=False``), so
that maps are periodic and fold onto the lattice cell. A *task* is a block of ``scan_rows_per_task`` scan lines
of one scan: it builds the potential once (prebuilt, ``FFTW_ESTIMATE``, abTEM's graph run synchronously inside
the Dask task, as ``simulate.multislice``), detects the diffraction patterns with ``abtem.PixelatedDetector``
(``resample="uniform"``: square pixels of equal angular size), crops them about the zero angle and bins odd
``bin_factor`` x ``bin_factor`` blocks to an odd ``pattern_size_px``, and draws Poisson counts at each dose
(electrons per pattern = dose x scan step area) from ``SeedSequence([seed, config hash], spawn_key=(scan,
block, dose))``: the same bytes whatever the worker, the order or a resume.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from contract import fourdstem as schema
from contract.errors import ConfigError
from contract.yamlsafe import ANY, Each, ListOf, bounded_message, brief, check_keys, read_yaml_mapping

from .fourdstem_structures import STRUCTURES, build_scan_structure, position_truth

FFTW_EFFORTS = ("FFTW_ESTIMATE", "FFTW_MEASURE", "FFTW_PATIENT")


# ----------------------------------------------------------------------------------------------- config
def _number(value, field: str, *, minimum: float = 0.0, allow_equal: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{field}: must be a number, got {value!r}")
    if value < minimum or (value == minimum and not allow_equal):
        raise ConfigError(f"{field}: must be {'>=' if allow_equal else '>'} {minimum:g}, got {value!r}")
    return float(value)


def _odd(value, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ConfigError(f"{field}: must be an odd positive integer (zero angle on the centre pixel), got {value!r}")
    return value


def _int_list(value, n: int, field: str, minimum: int = 1) -> list[int]:
    if not (isinstance(value, list) and len(value) == n
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)):
        raise ConfigError(f"{field}: must be a list of {n} integers >= {minimum}, got {value!r}")
    return value


def _check_defects(spec: dict, field: str) -> None:
    from ase.data import atomic_numbers

    for key in ("vacancies", "dopants"):
        entries = spec.get(key, [])
        if not isinstance(entries, list):
            raise ConfigError(f"{field}.{key}: must be a list of {{at: [fx, fy], ...}}")
        for i, entry in enumerate(entries):
            f = f"{field}.{key}[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{f}: must be a mapping with at: [fx, fy]")
            at = entry.get("at")
            if not (isinstance(at, list) and len(at) == 2 and all(isinstance(v, (int, float)) and 0 <= v < 1
                                                                   for v in at)):
                raise ConfigError(f"{f}.at: must be [fx, fy], fractions of the supercell in [0, 1), got {at!r}")
            if entry.get("depth", "entrance") not in ("entrance", "exit"):
                raise ConfigError(f"{f}.depth: must be entrance or exit, got {entry.get('depth')!r}")
            for el_key in ("element", "site_element") if key == "dopants" else ("site_element",):
                el = entry.get(el_key)
                if el is None and el_key == "site_element":
                    continue
                if el not in atomic_numbers:
                    raise ConfigError(f"{f}.{el_key}: unknown element {el!r}")


def _check_scan(name: str, spec: dict) -> None:
    f = f"scans.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{f}: must be a mapping (structure, lattice_constant_angstrom, repeats, ...)")
    if not name.isidentifier():
        raise ConfigError(f"{f}: a scan name must be a plain identifier (it names a zarr group)")
    if spec.get("structure") not in STRUCTURES:
        raise ConfigError(f"{f}.structure: must be one of {STRUCTURES}, got {spec.get('structure')!r}")
    _number(spec.get("lattice_constant_angstrom"), f"{f}.lattice_constant_angstrom")
    _number(spec.get("vacuum_angstrom", 2.0), f"{f}.vacuum_angstrom", allow_equal=True)
    _number(spec.get("slice_thickness_angstrom"), f"{f}.slice_thickness_angstrom")
    if spec["structure"] == "graphene":
        _int_list(spec.get("repeats"), 2, f"{f}.repeats")
    else:
        _int_list(spec.get("repeats"), 3, f"{f}.repeats")
        elements = spec.get("elements")
        from ase.data import atomic_numbers

        if not (isinstance(elements, list) and len(elements) == 2 and all(e in atomic_numbers for e in elements)):
            raise ConfigError(f"{f}.elements: must be [cation, anion] element symbols, got {elements!r}")
    _int_list(spec.get("scan_steps_per_cell"), 2, f"{f}.scan_steps_per_cell", minimum=2)
    _check_defects(spec, f)


def resolve(raw: dict) -> dict:
    """Validate a 4D-STEM dataset config; ``ConfigError`` naming the first bad field. Returns a resolved copy
    (defaults filled in)."""
    cfg = copy.deepcopy(raw)
    if cfg.get("kind") != schema.KIND:
        raise ConfigError(f"kind: must be {schema.KIND!r} for `python -m simulate fourdstem`, got {cfg.get('kind')!r}")
    if not isinstance(cfg.get("name"), str):
        raise ConfigError("name: missing (a short dataset name)")
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: must be a non-negative integer, got {seed!r}")
    im = cfg.get("imaging")
    if not isinstance(im, dict):
        raise ConfigError("imaging: missing (beam_energy_kev, convergence_semiangle_mrad, doses_e_per_angstrom2)")
    _number(im.get("beam_energy_kev"), "imaging.beam_energy_kev")
    _number(im.get("convergence_semiangle_mrad"), "imaging.convergence_semiangle_mrad")
    doses = im.get("doses_e_per_angstrom2")
    if not isinstance(doses, list) or not doses:
        raise ConfigError("imaging.doses_e_per_angstrom2: must be a non-empty list of doses (e-/A^2)")
    for i, d in enumerate(doses):
        try:
            schema.dose_array_name(d)
        except (TypeError, ValueError) as err:  # a list or mapping where a dose belongs
            raise ConfigError(f"imaging.doses_e_per_angstrom2[{i}]: {err}") from None
    if len(set(doses)) != len(doses):
        raise ConfigError("imaging.doses_e_per_angstrom2: lists a dose twice")
    det = cfg.get("detector")
    if not isinstance(det, dict):
        raise ConfigError("detector: missing (pattern_size_px, bin_factor)")
    _odd(det.get("pattern_size_px"), "detector.pattern_size_px")
    _odd(det.setdefault("bin_factor", 1), "detector.bin_factor")
    ms = cfg.setdefault("multislice", {})
    _number(ms.setdefault("grid_reach_factor", 2.0), "multislice.grid_reach_factor", minimum=1.0, allow_equal=True)
    ms.setdefault("parametrization", "lobato")
    if ms.setdefault("device", "cpu") not in ("cpu", "gpu"):
        raise ConfigError(f"multislice.device: must be cpu or gpu, got {ms['device']!r}")
    if ms.setdefault("fftw_planning_effort", "FFTW_ESTIMATE") not in FFTW_EFFORTS:
        raise ConfigError(f"multislice.fftw_planning_effort: must be one of {FFTW_EFFORTS}")
    rows = ms.setdefault("scan_rows_per_task", 12)
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise ConfigError(f"multislice.scan_rows_per_task: must be a positive integer, got {rows!r}")
    scans = cfg.get("scans")
    if not isinstance(scans, dict) or not scans:
        raise ConfigError("scans: must map scan names to structures (graphene, zincblende)")
    for name, spec in scans.items():
        _check_scan(str(name), spec)
        spec.setdefault("vacuum_angstrom", 2.0)
        spec.setdefault("vacancies", [])
        spec.setdefault("dopants", [])
    return cfg


_DEFECT = dict.fromkeys(("element", "at", "depth", "site_element"), ANY)
FOURDSTEM_SCHEMA = {
    "kind": ANY, "name": ANY, "seed": ANY,
    "imaging": dict.fromkeys(("beam_energy_kev", "convergence_semiangle_mrad", "doses_e_per_angstrom2"), ANY),
    "detector": dict.fromkeys(("pattern_size_px", "bin_factor"), ANY),
    "multislice": dict.fromkeys(("grid_reach_factor", "parametrization", "device", "fftw_planning_effort",
                                 "scan_rows_per_task"), ANY),
    "scans": Each({**dict.fromkeys(("structure", "elements", "lattice_constant_angstrom", "repeats", "vacuum_angstrom",
                                    "slice_thickness_angstrom", "scan_steps_per_cell"), ANY),
                   "vacancies": ListOf(_DEFECT), "dopants": ListOf(_DEFECT)}),
}
FOURDSTEM_LIMITS = {  # (dotted field, limit, why)
    "pattern_px": ("detector.pattern_size_px x bin_factor", 1025, "native detector pixels per side; each is "
                   "simulated for every probe position"),
    "positions": ("scans.*: probe positions", 1_000_000, "one multislice per position; the demo scans 13 000"),
    "repeats": ("scans.*.repeats", 32, "cells per direction; the grid grows with the cell"),
    "doses": ("imaging.doses_e_per_angstrom2", 16, "one stored copy of every pattern per dose"),
    "beam_energy_kev": ("imaging.beam_energy_kev", 1000.0, "beyond any STEM"),
    "convergence_semiangle_mrad": ("imaging.convergence_semiangle_mrad", 100.0, "probe-forming apertures are "
                                   "20-40 mrad"),
    "grid_reach_factor": ("multislice.grid_reach_factor", 8.0, "the grid grows linearly with it"),
}


def load(path: str | Path) -> dict:
    """Read (``contract.yamlsafe``), check every key at every level, validate (``resolve``) and bound
    (``FOURDSTEM_LIMITS``) a 4D-STEM config: ``ConfigError`` naming the field, before anything is created."""
    raw = read_yaml_mapping(path, "config")
    for block, schema in FOURDSTEM_SCHEMA.items():
        if schema is not ANY and block in raw and not isinstance(raw[block], dict):
            raise ConfigError(f"{block}: must be a mapping, got {type(raw[block]).__name__} {brief(raw[block])}")
    check_keys(raw, FOURDSTEM_SCHEMA)
    cfg = bounded_message(resolve, raw)

    def bound(key: str, value, field: str | None = None) -> None:
        name, limit, why = FOURDSTEM_LIMITS[key]
        if value > limit:
            raise ConfigError(f"{field or name}: {brief(value)} is over the limit {limit:,} ({why})")

    bound("pattern_px", cfg["detector"]["pattern_size_px"] * cfg["detector"]["bin_factor"])
    bound("doses", len(cfg["imaging"]["doses_e_per_angstrom2"]))
    for key in ("beam_energy_kev", "convergence_semiangle_mrad"):
        bound(key, cfg["imaging"][key])
    bound("grid_reach_factor", cfg["multislice"]["grid_reach_factor"])
    for name, spec in cfg["scans"].items():
        bound("repeats", max(spec["repeats"]), f"scans.{name}.repeats")
        # positions = cells x steps per cell (the fold cell is at least the unit cell: an upper estimate)
        cells = int(np.prod(spec["repeats"][:2])) * (2 if spec["structure"] == "graphene" else 1)
        bound("positions", cells * int(np.prod(spec["scan_steps_per_cell"])), f"scans.{name}: probe positions")
    return cfg


# ----------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class ScanGeometry:
    """A scan over the whole periodic supercell: ``shape`` (ny, nx) probe positions spaced ``sampling`` (dx, dy)
    [Å] from (0, 0); ``fold_period_px`` (rows, cols) steps per fold cell; ``extent`` (Lx, Ly) [Å]."""

    shape: tuple[int, int]
    sampling: tuple[float, float]
    fold_period_px: tuple[int, int]
    extent: tuple[float, float]

    def positions(self, row_start: int = 0, row_stop: int | None = None) -> np.ndarray:
        """(rows x nx, 2) probe positions (x, y) [Å] of scan lines row_start..row_stop, row-major."""
        row_stop = self.shape[0] if row_stop is None else row_stop
        iy, ix = np.mgrid[row_start:row_stop, 0:self.shape[1]]
        return np.c_[ix.ravel() * self.sampling[0], iy.ravel() * self.sampling[1]]


def scan_geometry(spec: dict) -> ScanGeometry:
    from .fourdstem_structures import pristine_supercell

    atoms, fold = pristine_supercell(spec)
    extent = (float(atoms.cell[0, 0]), float(atoms.cell[1, 1]))
    sx, sy = spec["scan_steps_per_cell"]
    nx, ny = round(extent[0] / fold[0]) * sx, round(extent[1] / fold[1]) * sy
    return ScanGeometry(shape=(ny, nx), sampling=(extent[0] / nx, extent[1] / ny), fold_period_px=(sy, sx),
                        extent=extent)


@dataclass(frozen=True)
class Task:
    index: int
    scan: str
    scan_index: int
    block: int
    row_start: int
    row_stop: int

    @property
    def key(self) -> str:
        return f"fourdstem-{self.index:04d}-{self.scan}-rows{self.row_start}-{self.row_stop}"


def make_tasks(cfg: dict) -> list[Task]:
    """Every task of a resolved config: scans in config order, blocks of scan lines in order."""
    tasks = []
    per = cfg["multislice"]["scan_rows_per_task"]
    for s, (name, spec) in enumerate(cfg["scans"].items()):
        ny = scan_geometry(spec).shape[0]
        for b, start in enumerate(range(0, ny, per)):
            tasks.append(Task(len(tasks), name, s, b, start, min(ny, start + per)))
    return tasks


# ----------------------------------------------------------------------------------------------- physics
def grid_points(extent: tuple[float, float], beam_energy_kev: float, max_angle_mrad: float) -> int:
    """Square 2,3,5-smooth grid whose antialias cutoff reaches ``max_angle_mrad`` on ``extent``."""
    from .optics import gpts_reaching

    return gpts_reaching(tuple(extent), beam_energy_kev, max_angle_mrad)


def uniform_angular_sampling_mrad(extent: tuple[float, float], beam_energy_kev: float) -> float:
    """Angular pixel of abTEM's ``resample="uniform"`` patterns: the coarser of λ/Lx and λ/Ly [mrad]."""
    from .optics import wavelength_angstrom

    return 1e3 * wavelength_angstrom(beam_energy_kev) / min(extent)


def bin_patterns(patterns: np.ndarray, pattern_size_px: int, bin_factor: int) -> np.ndarray:
    """(..., Ka, Kb) patterns with zero angle at index (Ka // 2, Kb // 2) -> (..., K, K), K = ``pattern_size_px``:
    crop K·b pixels about the zero angle and sum b x b blocks (b = ``bin_factor``, odd, so the zero angle stays
    on the centre pixel). ``ValueError`` when the patterns are too small."""
    k, b = _odd(pattern_size_px, "pattern_size_px"), _odd(bin_factor, "bin_factor")
    half = (k * b) // 2
    ca, cb = patterns.shape[-2] // 2, patterns.shape[-1] // 2
    if ca - half < 0 or cb - half < 0 or ca + half >= patterns.shape[-2] or cb + half >= patterns.shape[-1]:
        raise ValueError(f"patterns {patterns.shape[-2:]} are too small for {k} x {k} bins of {b} px")
    crop = patterns[..., ca - half:ca + half + 1, cb - half:cb + half + 1]
    lead = crop.shape[:-2]
    return crop.reshape(*lead, k, b, k, b).sum(axis=(-3, -1))


def scan_patterns(atoms, geometry: ScanGeometry, row_start: int, row_stop: int, *, beam_energy_kev: float,
                  convergence_semiangle_mrad: float, pattern_size_px: int, bin_factor: int,
                  slice_thickness_angstrom: float, grid_reach_factor: float = 2.0, parametrization: str = "lobato",
                  device: str = "cpu") -> tuple[np.ndarray, float]:
    """Clean diffraction patterns (fraction of the incident beam per pixel) of scan lines row_start..row_stop:
    ((rows, nx, K, K) float32 indexed [scan y, scan x, ky, kx], angular sampling of a pattern pixel [mrad])."""
    import abtem
    import dask

    dtheta = uniform_angular_sampling_mrad(geometry.extent, beam_energy_kev)
    half = (pattern_size_px * bin_factor) // 2
    max_angle = (half + 2) * dtheta  # room for the crop about the zero angle
    gpts = grid_points(geometry.extent, beam_energy_kev, grid_reach_factor * max_angle)
    potential = abtem.Potential(atoms, gpts=(gpts, gpts), slice_thickness=slice_thickness_angstrom,
                                projection="infinite", parametrization=parametrization, device=device)
    probe = abtem.Probe(energy=beam_energy_kev * 1e3, semiangle_cutoff=convergence_semiangle_mrad, device=device)
    probe.grid.match(potential)
    nx = geometry.shape[1]
    dx, dy = geometry.sampling
    scan = abtem.GridScan(start=(0.0, row_start * dy), end=(nx * dx, row_stop * dy),
                          gpts=(nx, row_stop - row_start), endpoint=False)
    detector = abtem.PixelatedDetector(max_angle=max_angle, resample="uniform")
    with dask.config.set(scheduler="synchronous"):  # inside a Dask task: abTEM's graph runs here
        potential = potential.build(lazy=False)  # prebuilt once, or it is rebuilt per scan chunk
        measurement = probe.scan(potential, scan=scan, detectors=detector).compute()
    sampling = measurement.angular_sampling
    if not np.allclose(sampling, dtheta, rtol=1e-6):
        raise RuntimeError(f"abTEM angular sampling {sampling} differs from the expected {dtheta:.4f} mrad")
    array = np.asarray(measurement.array, dtype=np.float64)  # (nx, rows, kx, ky)
    binned = bin_patterns(array, pattern_size_px, bin_factor)
    return np.ascontiguousarray(binned.transpose(1, 0, 3, 2), dtype=np.float32), float(dtheta * bin_factor)


def poisson_counts(clean: np.ndarray, dose_e_per_angstrom2: float, step_area_angstrom2: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Counts ~ Poisson(dose x step area x fraction) per detector pixel, float32 (exact integers)."""
    return rng.poisson(np.clip(clean, 0, None) * (dose_e_per_angstrom2 * step_area_angstrom2)).astype(np.float32)


def dose_rng(entropy: list[int], task: Task, dose_index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(task.scan_index, task.block, dose_index)))


# ----------------------------------------------------------------------------------------------- task
def run_task(task: Task, cfg: dict, cfg_hash: str, store_path: str) -> dict:
    """Simulate one block of scan lines and write its shard of every array, then its done marker. Safe to
    rerun: the same bytes."""
    from . import fourdstem_store as store
    from .multislice import configure_abtem
    from .plan import seed_entropy

    started = time.perf_counter()
    ms, im, det = cfg["multislice"], cfg["imaging"], cfg["detector"]
    configure_abtem(ms["device"], ms["fftw_planning_effort"])
    spec = cfg["scans"][task.scan]
    atoms, defects, _ = build_scan_structure(spec)
    geometry = scan_geometry(spec)
    clean, _ = scan_patterns(atoms, geometry, task.row_start, task.row_stop,
                             beam_energy_kev=im["beam_energy_kev"],
                             convergence_semiangle_mrad=im["convergence_semiangle_mrad"],
                             pattern_size_px=det["pattern_size_px"], bin_factor=det["bin_factor"],
                             slice_thickness_angstrom=spec["slice_thickness_angstrom"],
                             grid_reach_factor=ms["grid_reach_factor"], parametrization=ms["parametrization"],
                             device=ms["device"])
    k = det["pattern_size_px"]
    clean = clean.reshape(-1, k, k)
    positions = geometry.positions(task.row_start, task.row_stop)
    rows = {schema.POSITION: positions.astype(np.float32), **position_truth(positions, atoms, defects)}
    patterns = {schema.CLEAN: clean}
    entropy = seed_entropy(cfg["seed"], cfg_hash)
    area = geometry.sampling[0] * geometry.sampling[1]
    for i, dose in enumerate(im["doses_e_per_angstrom2"]):
        patterns[schema.dose_array_name(dose)] = poisson_counts(clean, dose, area, dose_rng(entropy, task, i))
    start = task.row_start * geometry.shape[1]
    store.write_rows(store_path, task.scan, start, patterns, rows)
    store.mark_done(store_path, task.index)
    return {"task": task.index, "key": task.key, "seconds": time.perf_counter() - started, "rows": len(clean)}


def task_dict(task: Task) -> dict:
    return asdict(task)
