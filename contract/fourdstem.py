"""The zarr v3 store of a simulated 4D-STEM dataset (``python -m simulate fourdstem``): names, layout, reader.

One store per dataset config; one group per *scan* (one structure scanned on a grid), named after the scan::

    <scan>/patterns/clean         (N, K, K) f32  noiseless patterns, fraction of the incident beam per pixel
    <scan>/patterns/dose_<D>      (N, K, K) f32  Poisson counts at D electrons per Å² (integers held in f32)
    <scan>/position_angstrom      (N, 2)    f32  probe position (x, y) [Å]
    <scan>/defect_distance_angstrom      (N,) f32  in-plane distance to the nearest defect site (periodic)
    <scan>/nearest_atom_distance_angstrom (N,) f32  in-plane distance to the nearest atomic column
    <scan>/nearest_atom_direction_rad    (N,) f32  direction atan2(dy, dx) from the probe to that column
    task_done                     (n_tasks,) u8  1 once a task wrote all its rows (resume marker; all scans)

Rows: N = scan_shape[0] x scan_shape[1] probe positions, row-major over (scan y, scan x), so a per-row value
reshapes to an image ``[row, col] = [y, x]`` like every image in the project. Patterns are ``[ky, kx]`` (row =
ky, col = kx; abTEM's own order is [kx, ky]), K odd with zero scattering angle on the centre pixel. Every array
along N is sharded with ``rows_per_shard`` rows (whole scan lines: one simulation task), so one writer owns
each shard.

Scan-group attributes (``ATTR_*`` below): the structure and its defects, scan shape, start and sampling [Å],
the fold periods in scan pixels (the lattice-periodic cell for the periodic-residual maps), beam energy,
convergence semi-angle, angular sampling and maximum angle of the patterns [mrad], the doses, the rows per
shard and the task table. Root attributes: ``kind = "fourdstem"``, the scan names, the resolved config, its
hash and the library versions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .store import StoreError, open_group

KIND = "fourdstem"
PATTERNS = "patterns"
CLEAN = "clean"
POSITION = "position_angstrom"
DEFECT_DISTANCE = "defect_distance_angstrom"
NEAREST_ATOM_DISTANCE = "nearest_atom_distance_angstrom"
NEAREST_ATOM_DIRECTION = "nearest_atom_direction_rad"
TASK_DONE = "task_done"
PATTERN_DTYPE = "float32"
ROW_ARRAYS = {POSITION: ("float32", (2,)), DEFECT_DISTANCE: ("float32", ()),
              NEAREST_ATOM_DISTANCE: ("float32", ()), NEAREST_ATOM_DIRECTION: ("float32", ())}
"""Per-position truth arrays besides the patterns: name -> (dtype, trailing shape)."""

# root attributes
ATTR_KIND = "kind"
ATTR_SCANS = "scans"
ATTR_CONFIG = "config"
ATTR_CONFIG_HASH = "config_hash"
ATTR_VERSIONS = "versions"
# scan-group attributes
ATTR_STRUCTURE = "structure"
ATTR_DEFECTS = "defects"
ATTR_SCAN_SHAPE = "scan_shape"
ATTR_SCAN_START = "scan_start_angstrom"
ATTR_SCAN_SAMPLING = "scan_sampling_angstrom"
ATTR_FOLD_PERIOD = "fold_period_px"
ATTR_ENERGY = "beam_energy_kev"
ATTR_CONVERGENCE = "convergence_semiangle_mrad"
ATTR_ANGULAR_SAMPLING = "angular_sampling_mrad"
ATTR_MAX_ANGLE = "max_angle_mrad"
ATTR_DOSES = "doses_e_per_angstrom2"
ATTR_ROWS_PER_SHARD = "rows_per_shard"
ATTR_TASKS = "tasks"


def dose_array_name(dose_e_per_angstrom2: float) -> str:
    """``dose_100000`` for 1e5 e⁻/Å² (doses are whole electrons per Å²)."""
    d = float(dose_e_per_angstrom2)
    if not d >= 1 or d != int(d):
        raise ValueError(f"dose must be a whole number of electrons per Å² >= 1, got {dose_e_per_angstrom2!r}")
    return f"dose_{int(d)}"


def pattern_path(scan: str, dose_e_per_angstrom2: float | None = None) -> str:
    """Array path of a scan's patterns inside the store: the clean ones (dose None) or the counts at a dose."""
    return f"{scan}/{PATTERNS}/{CLEAN if dose_e_per_angstrom2 is None else dose_array_name(dose_e_per_angstrom2)}"


@dataclass(frozen=True)
class ScanMeta:
    """What a scan group says about itself (attributes and shapes; no row data)."""

    store: str
    name: str
    scan_shape: tuple[int, int]  # (ny, nx)
    pattern_size_px: int
    rows_per_shard: int
    scan_sampling_angstrom: tuple[float, float]  # (dx, dy)
    fold_period_px: tuple[int, int]  # (rows, cols)
    angular_sampling_mrad: float
    beam_energy_kev: float
    convergence_semiangle_mrad: float
    doses_e_per_angstrom2: tuple[float, ...]
    defects: tuple[dict, ...]
    arrays: tuple[str, ...] = field(default=())
    attrs: dict = field(default_factory=dict, repr=False)

    @property
    def n_rows(self) -> int:
        return self.scan_shape[0] * self.scan_shape[1]


def read_scan_meta(path: str | Path, scan: str) -> ScanMeta:
    """The metadata of scan ``scan`` of the 4D-STEM store at ``path``; ``StoreError`` naming what is missing."""
    root = open_group(path)
    name = str(path)
    if root.attrs.get(ATTR_KIND) != KIND:
        raise StoreError(f"store {name!r} is not a 4D-STEM store (attrs[{ATTR_KIND!r}] is "
                         f"{root.attrs.get(ATTR_KIND)!r}, expected {KIND!r})")
    scans = list(root.attrs.get(ATTR_SCANS, []))
    if scan not in scans:
        raise StoreError(f"store {name!r} has no scan {scan!r}; its scans: {', '.join(scans) or 'none'}")
    group = root[scan]
    attrs = dict(group.attrs)
    for key in (ATTR_SCAN_SHAPE, ATTR_ROWS_PER_SHARD, ATTR_SCAN_SAMPLING, ATTR_FOLD_PERIOD, ATTR_ANGULAR_SAMPLING):
        if key not in attrs:
            raise StoreError(f"store {name!r}: scan {scan!r} has no attrs[{key!r}]")
    clean = group[f"{PATTERNS}/{CLEAN}"]
    shape = tuple(int(s) for s in attrs[ATTR_SCAN_SHAPE])
    if clean.ndim != 3 or clean.shape[1] != clean.shape[2] or clean.shape[1] % 2 == 0 \
            or clean.shape[0] != shape[0] * shape[1]:
        raise StoreError(f"store {name!r}: {scan}/{PATTERNS}/{CLEAN} must be (ny*nx, K, K) with K odd, "
                         f"got {clean.shape} for scan shape {shape}")
    arrays = tuple(sorted(f"{PATTERNS}/{k}" for k in group[PATTERNS].array_keys())) + \
        tuple(sorted(k for k in group.array_keys()))
    return ScanMeta(store=name, name=scan, scan_shape=shape, pattern_size_px=int(clean.shape[1]),
                    rows_per_shard=int(attrs[ATTR_ROWS_PER_SHARD]),
                    scan_sampling_angstrom=tuple(float(v) for v in attrs[ATTR_SCAN_SAMPLING]),
                    fold_period_px=tuple(int(v) for v in attrs[ATTR_FOLD_PERIOD]),
                    angular_sampling_mrad=float(attrs[ATTR_ANGULAR_SAMPLING]),
                    beam_energy_kev=float(attrs.get(ATTR_ENERGY, float("nan"))),
                    convergence_semiangle_mrad=float(attrs.get(ATTR_CONVERGENCE, float("nan"))),
                    doses_e_per_angstrom2=tuple(float(d) for d in attrs.get(ATTR_DOSES, ())),
                    defects=tuple(dict(d) for d in attrs.get(ATTR_DEFECTS, ())), arrays=arrays, attrs=attrs)
