"""Full-field evaluation images: a doped (or, with dopant ``none``, undoped) 1H-MX2 field of view with random
dopants and vacancies, rotated to an arbitrary angle, simulated with abTEM over the whole cell and passed
through the patch noise model.

``build_field`` (atoms + ground-truth columns, pure given a Generator) and ``noisy_image`` (``kernels.noise``: its
model on a whole clean image) are separate from ``simulate_field`` (``multislice.scan_images`` on the cell) and
``write_field`` (files), so each can be tested on its own.

Ground truth: one row per column inside the field, including the empty sites of double vacancies, with
x, y in Å and in pixels (pixel (row, col) = (y, x) / pixel size: the probe of pixel i sat at i x sampling).

Real frames are not perfect scans (``ScanDistortion``, every option in physical units): the probe of pixel
(r, c) sits at the specimen position

    y = r p cos(skew),   x = c p + r p (sin(skew) + drift_shear) + A sin(2π r p / P + φ) + glitch(r)

(a non-orthogonal scan, a linear drift during the frame, a sinusoidal row wobble of amplitude A and period P,
bands of rows shifted by a scan-line glitch), a hole (vacuum: no signal) and a contamination blob (amorphous
carbon: a bright random texture) are laid on the specimen before the scan, and a DC offset is added to the
counts. ``pixel_miscalibration`` leaves the image alone and records a pixel size off by that fraction, as real
calibrations are. ``distort_scan`` is the pure function (a clean image sampled through the scan), used by the
CLI, the tests and the benchmark alike; the truth gets each column's pixel position in the distorted scan and
its ``region`` (``lattice``, ``hole``, ``contamination``).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from contract.classes import CLASS_IDS, CLASS_NAMES, DEFECT_CLASS_IDS, SUBLATTICES
from contract.context import canonical_dopant, is_undoped
from contract.jsonio import json_text
from kernels.noise import noisy_image

DEFECT_CLASSES = tuple(CLASS_NAMES[c] for c in DEFECT_CLASS_IDS)
DEFAULT_CONFIG = Path("configs/dataset/paper.yaml")
"""Noise ranges and multislice settings of a full field (relative to the working directory: the repository)."""


def default_fractions(dopant: str) -> str:
    """The CLI's ``--fractions`` default: no dopant columns for an undoped field."""
    return f"D={0 if is_undoped(dopant) else 0.05},VacX=0.05,VacX2=0.02"


def parse_fractions(text: str) -> dict[str, float]:
    """``"D=0.05,VacX=0.04,VacX2=0.02"`` -> dict. D is a fraction of metal columns; VacX and VacX2 of
    chalcogen columns (their sum must be <= 1)."""
    out = {k: 0.0 for k in DEFECT_CLASSES}
    for item in filter(None, (s.strip() for s in str(text).split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in DEFECT_CLASSES:
            raise ValueError(f"--fractions: expected NAME=VALUE with NAME in {DEFECT_CLASSES}, got {item!r}")
        try:
            v = float(value)
        except ValueError:
            raise ValueError(f"--fractions: {key.strip()} value {value!r} is not a number") from None
        if not 0 <= v <= 1:
            raise ValueError(f"--fractions: {key.strip()} must lie in [0, 1], got {v}")
        out[key.strip()] = v
    if out["VacX"] + out["VacX2"] > 1:
        raise ValueError("--fractions: VacX + VacX2 must not exceed 1 (both are fractions of chalcogen columns)")
    return out


def build_field(host: dict, dopant: str, size_angstrom: float, rotation_deg: float, fractions: dict,
                rng: np.random.Generator, vacuum_angstrom: float = 2.0):
    """Atoms of a ``size_angstrom`` square field (periodic cell) cut from a rotated 1H-MX2 layer, and the truth.

    Returns ``(atoms, truth)``; ``truth`` is a dict of arrays: ``x_angstrom``, ``y_angstrom`` (N,) float64,
    ``sublattice`` (N,) str (``metal``/``chalcogen``), ``label`` (N,) int (0 X2, 1 VacX, 2 VacX2, 3 M, 4 D).
    ``dopant`` ``"none"`` (an undoped layer) needs ``fractions["D"] == 0``.
    """
    if is_undoped(dopant) and fractions.get("D", 0) > 0:
        raise ValueError(f"--fractions: D must be 0 for an undoped field (--dopant none), got {fractions['D']}")
    from .structures import host_supercell

    a = float(host["lattice_constant_angstrom"])
    # enough a x √3a cells to cover the field's diagonal at any angle
    reach = size_angstrom * math.sqrt(2) + 2 * a
    reps = (int(math.ceil(reach / a)) + 1, int(math.ceil(reach / (math.sqrt(3) * a))) + 1)
    layer = host_supercell(host["metal"], host["chalcogen"], a, host["thickness_angstrom"], reps, vacuum_angstrom)
    pos = layer.positions.copy()
    centre = np.diag(layer.cell)[:2] / 2
    t = math.radians(rotation_deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    xy = (pos[:, :2] - centre) @ rot.T + size_angstrom / 2
    symbols = np.array(layer.get_chemical_symbols(), dtype=object)  # object: a 2-letter dopant into "W"/"S" is not cut to 1
    inside = (xy >= 0).all(axis=1) & (xy < size_angstrom).all(axis=1)
    xy, z, symbols = xy[inside], pos[inside, 2], symbols[inside]

    # group atoms into columns by projected position
    keys = np.round(xy, 3)
    _, col_of_atom = np.unique(keys, axis=0, return_inverse=True)
    col_of_atom = col_of_atom.ravel()
    n_cols = int(col_of_atom.max()) + 1
    col_xy = np.zeros((n_cols, 2))
    col_xy[col_of_atom] = xy
    is_metal_col = np.zeros(n_cols, dtype=bool)
    is_metal_col[col_of_atom[symbols == host["metal"]]] = True

    label = np.where(is_metal_col, CLASS_IDS["M"], CLASS_IDS["X2"])
    u = rng.random(n_cols)  # one draw per column, in column order: reproducible from the seed
    label[is_metal_col & (u < fractions["D"])] = CLASS_IDS["D"]
    chal = ~is_metal_col
    label[chal & (u < fractions["VacX2"])] = CLASS_IDS["VacX2"]
    label[chal & (u >= fractions["VacX2"]) & (u < fractions["VacX2"] + fractions["VacX"])] = CLASS_IDS["VacX"]

    keep = np.ones(len(symbols), dtype=bool)
    new_symbols = symbols.copy()
    for c in np.flatnonzero(label == CLASS_IDS["D"]):
        new_symbols[col_of_atom == c] = dopant
    for c in np.flatnonzero(label == CLASS_IDS["VacX2"]):
        keep[col_of_atom == c] = False
    for c in np.flatnonzero(label == CLASS_IDS["VacX"]):
        atoms_c = np.flatnonzero(col_of_atom == c)
        keep[atoms_c[np.argmax(z[atoms_c])]] = False  # the top chalcogen

    from ase import Atoms

    atoms = Atoms(symbols=list(new_symbols[keep]), positions=np.c_[xy[keep], z[keep]],
                  cell=[size_angstrom, size_angstrom, layer.cell[2, 2]], pbc=True)
    truth = {"x_angstrom": col_xy[:, 0], "y_angstrom": col_xy[:, 1],
             "sublattice": np.where(is_metal_col, *SUBLATTICES), "label": label.astype(int)}
    return atoms, truth


def simulate_field(atoms, *, beam_energy_kev: float, detector: dict, convergence_semiangle_mrad: float,
                   scan_sampling_angstrom: float, slicing: str = "planes",
                   slice_thickness_angstrom: float | None = None, projection: str = "infinite",
                   parametrization: str = "lobato", device: str = "cpu") -> np.ndarray:
    """Clean (n, n) float32 detector image (fraction of the beam) of the whole square cell, [row, col] = [y, x];
    pixel i was scanned at i x ``scan_sampling_angstrom`` (``multislice.scan_images`` on the whole cell)."""
    from .multislice import scan_images
    from .optics import gpts_reaching

    size = float(atoms.cell[0, 0])
    n = int(round(size / scan_sampling_angstrom))
    return scan_images(atoms, start=(0.0, 0.0), end=(size, size), n_px=n, endpoint=False,
                       beam_energy_kev=beam_energy_kev, gpts=gpts_reaching((size, size), beam_energy_kev,
                                                                           detector["outer_mrad"]),
                       convergence_semiangle_mrad=convergence_semiangle_mrad, detectors={"image": detector},
                       slicing=slicing, slice_thickness_angstrom=slice_thickness_angstrom,
                       projection=projection, parametrization=parametrization, device=device)["image"]


@dataclass(frozen=True)
class ScanDistortion:
    """Scan and specimen imperfections of a real frame (module docstring), all in physical units.

    drift_shear : x displacement per unit of y from a linear drift during the frame (0.03: 3 %).
    row_wobble_angstrom, row_wobble_period_angstrom : sinusoidal row displacement along x.
    glitches, glitch_shift_angstrom, glitch_height_angstrom : bands of rows shifted along x.
    scan_skew_deg : angle between the slow scan axis and the normal to the fast one.
    hole_radius_angstrom, contamination_radius_angstrom : a vacuum hole and an amorphous blob (0: none).
    contamination_strength : the blob's mean signal relative to the image's mean.
    dc_offset_counts : added to every pixel after the noise.
    pixel_miscalibration : the recorded pixel size is the true one x (1 + this).
    """

    drift_shear: float = 0.0
    row_wobble_angstrom: float = 0.0
    row_wobble_period_angstrom: float = 10.0
    glitches: int = 0
    glitch_shift_angstrom: float = 0.0
    glitch_height_angstrom: float = 2.0
    scan_skew_deg: float = 0.0
    hole_radius_angstrom: float = 0.0
    contamination_radius_angstrom: float = 0.0
    contamination_strength: float = 3.0
    dc_offset_counts: float = 0.0
    pixel_miscalibration: float = 0.0

    def __post_init__(self):
        for name in ("row_wobble_angstrom", "glitch_shift_angstrom", "hole_radius_angstrom",
                     "contamination_radius_angstrom", "contamination_strength", "dc_offset_counts"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {getattr(self, name)}")
        if self.row_wobble_period_angstrom <= 0 or self.glitch_height_angstrom <= 0:
            raise ValueError("--row-wobble-period-angstrom and --glitch-height-angstrom must be > 0")
        if not -0.3 <= self.drift_shear <= 0.3 or not -20 <= self.scan_skew_deg <= 20:
            raise ValueError("--drift-shear must lie in [-0.3, 0.3] and --scan-skew-deg in [-20, 20]")
        if self.glitches < 0 or not -0.5 < self.pixel_miscalibration < 0.5:
            raise ValueError("--glitches must be >= 0 and --pixel-miscalibration in (-0.5, 0.5)")

    @property
    def is_identity(self) -> bool:
        return self == ScanDistortion()

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ScanGeometry:
    """The drawn geometry of one distorted scan: the specimen position of pixel (0, 0), the glitch bands (first
    row, number of rows) and the wobble phase; hole and blob centres (y, x) Å."""

    origin_angstrom: tuple[float, float]
    glitch_rows: tuple[tuple[int, int], ...]
    wobble_phase: float
    hole_centre_angstrom: tuple[float, float] | None
    contamination_centre_angstrom: tuple[float, float] | None


def _row_shift_angstrom(rows: np.ndarray, pixel: float, dist: ScanDistortion, geo: ScanGeometry) -> np.ndarray:
    """x displacement of each (fractional) scan row: skew, drift, wobble and glitches (without the origin)."""
    y0 = rows * pixel
    shift = y0 * (math.sin(math.radians(dist.scan_skew_deg)) + dist.drift_shear)
    shift = shift + dist.row_wobble_angstrom * np.sin(2 * np.pi * y0 / dist.row_wobble_period_angstrom
                                                      + geo.wobble_phase)
    r = np.floor(np.asarray(rows) + 0.5)
    for first, n in geo.glitch_rows:
        shift = shift + np.where((r >= first) & (r < first + n), dist.glitch_shift_angstrom, 0.0)
    return shift


def scan_positions(shape: tuple[int, int], pixel: float, dist: ScanDistortion, geo: ScanGeometry):
    """Specimen positions (y, x) in Å of every pixel of a distorted scan of ``shape``: two (H, W) arrays."""
    rows, cols = np.indices(shape, dtype=np.float64)
    y = geo.origin_angstrom[0] + rows * pixel * math.cos(math.radians(dist.scan_skew_deg))
    x = geo.origin_angstrom[1] + cols * pixel + _row_shift_angstrom(rows[:, :1], pixel, dist, geo)
    return y, x


def specimen_to_scan_px(y_angstrom, x_angstrom, pixel: float, dist: ScanDistortion, geo: ScanGeometry):
    """Inverse of ``scan_positions``: (row, col) pixel coordinates of specimen points (exact: the row follows
    from y alone)."""
    rows = (np.asarray(y_angstrom) - geo.origin_angstrom[0]) / (pixel * math.cos(math.radians(dist.scan_skew_deg)))
    cols = (np.asarray(x_angstrom) - geo.origin_angstrom[1] - _row_shift_angstrom(rows, pixel, dist, geo)) / pixel
    return rows, cols


def draw_geometry(field_shape_angstrom: tuple[float, float], out_shape: tuple[int, int], pixel: float,
                  dist: ScanDistortion, rng: np.random.Generator) -> ScanGeometry:
    """Glitch bands, wobble phase and hole/blob centres drawn from ``rng`` (in that order), and the origin that
    keeps the whole distorted scan inside the specimen field ``(height, width)`` Å."""
    h, w = out_shape
    band = max(int(round(dist.glitch_height_angstrom / pixel)), 1)
    glitch_rows = []
    for k in range(dist.glitches):  # spread over the frame, each at a random row of its own stretch
        lo, hi = int(h * (k + 0.25) / max(dist.glitches, 1)), int(h * (k + 0.75) / max(dist.glitches, 1))
        glitch_rows.append((int(rng.integers(lo, max(hi - band, lo + 1))), band))
    phase = float(rng.uniform(0, 2 * np.pi))
    centres = [(float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7))) for _ in range(2)]
    geo = ScanGeometry((0.0, 0.0), tuple(glitch_rows), phase, None, None)
    shifts = _row_shift_angstrom(np.arange(h, dtype=float), pixel, dist, geo)
    x_min, x_max = shifts.min(), shifts.max() + (w - 1) * pixel
    span_y = (h - 1) * pixel * math.cos(math.radians(dist.scan_skew_deg))
    fy, fx = field_shape_angstrom
    if x_max - x_min > fx or span_y > fy:
        raise ValueError(f"the distorted scan ({span_y:.1f} x {x_max - x_min:.1f} Å) does not fit the field "
                         f"({fy:.1f} x {fx:.1f} Å): scan fewer pixels")
    origin = ((fy - span_y) / 2, (fx - (x_max - x_min)) / 2 - x_min)
    cy, cx = origin[0] + span_y / 2, origin[1] + x_min + (x_max - x_min) / 2
    ext = (span_y, x_max - x_min)

    def centre(k, radius):
        return (cy + (centres[k][0] - 0.5) * ext[0], cx + (centres[k][1] - 0.5) * ext[1]) if radius > 0 else None
    hole = centre(0, dist.hole_radius_angstrom)
    blob = centre(1, dist.contamination_radius_angstrom)
    if hole and blob:  # keep them apart: the blob on the opposite side of the centre
        blob = (2 * cy - hole[0], 2 * cx - hole[1])
    return ScanGeometry(origin, tuple(glitch_rows), phase, hole, blob)


def specimen_damage(clean: np.ndarray, pixel: float, dist: ScanDistortion, geo: ScanGeometry,
                    rng: np.random.Generator) -> np.ndarray:
    """The clean specimen image (fractions of the beam, pixel (i, j) at (i, j) x ``pixel`` Å) with the hole
    (no signal, edge softened over 0.5 Å) and the contamination blob (a positive texture correlated over
    0.8 Å, ``contamination_strength`` x the mean, soft edge) laid on it."""
    from scipy import ndimage

    out = np.asarray(clean, dtype=np.float64).copy()
    yy, xx = np.indices(out.shape) * pixel
    if geo.hole_centre_angstrom is not None:
        r = np.hypot(yy - geo.hole_centre_angstrom[0], xx - geo.hole_centre_angstrom[1])
        out *= np.clip((r - dist.hole_radius_angstrom) / 0.5 + 0.5, 0, 1)
    if geo.contamination_centre_angstrom is not None:
        r = np.hypot(yy - geo.contamination_centre_angstrom[0], xx - geo.contamination_centre_angstrom[1])
        weight = np.clip((dist.contamination_radius_angstrom - r) / 1.0 + 0.5, 0, 1)
        texture = ndimage.gaussian_filter(rng.standard_normal(out.shape), 0.8 / pixel)
        texture = np.clip(1 + texture / texture.std(), 0, None)
        out += weight * texture * dist.contamination_strength * float(clean.mean())
    return out


def distort_scan(clean: np.ndarray, clean_pixel_angstrom: float, out_shape: tuple[int, int],
                 out_pixel_angstrom: float, dist: ScanDistortion, rng: np.random.Generator,
                 periodic: bool = True) -> tuple[np.ndarray, ScanGeometry]:
    """Scan a clean specimen image through ``dist``: returns the (H, W) clean scan (before noise) and its
    geometry. ``clean`` pixel (i, j) holds the specimen at (i, j) x ``clean_pixel_angstrom``; it is
    sampled with cubic splines (``periodic``: wrapped, as a periodic abTEM cell is)."""
    from scipy import ndimage

    field = (clean.shape[0] * clean_pixel_angstrom, clean.shape[1] * clean_pixel_angstrom)
    if not periodic:
        field = ((clean.shape[0] - 1) * clean_pixel_angstrom, (clean.shape[1] - 1) * clean_pixel_angstrom)
    geo = draw_geometry(field, out_shape, out_pixel_angstrom, dist, rng)
    specimen = specimen_damage(clean, clean_pixel_angstrom, dist, geo, rng)
    y, x = scan_positions(out_shape, out_pixel_angstrom, dist, geo)
    image = ndimage.map_coordinates(specimen, [y / clean_pixel_angstrom, x / clean_pixel_angstrom], order=3,
                                    mode="grid-wrap" if periodic else "nearest")
    return np.clip(image, 0, None), geo


def fourier_upsample(image: np.ndarray, factor: float) -> np.ndarray:
    """A periodic, band-limited (H, W) image resampled on a grid ``factor`` x finer by zero-padding its spectrum
    (exact for a scan at or above Nyquist): (H, W) -> (round(H f), round(W f))."""
    h, w = image.shape
    nh, nw = int(round(h * factor)), int(round(w * factor))
    f = np.fft.fftshift(np.fft.fft2(image))
    out = np.zeros((nh, nw), complex)
    r0, c0 = nh // 2 - h // 2, nw // 2 - w // 2  # zero frequency (fftshift puts it at n // 2) onto zero frequency
    out[r0:r0 + h, c0:c0 + w] = f
    return np.fft.ifft2(np.fft.ifftshift(out)).real * (nh * nw) / (h * w)


def truth_regions(y_angstrom, x_angstrom, dist: ScanDistortion, geo: ScanGeometry, margin_angstrom: float):
    """(N,) region of each column: ``hole`` inside the hole radius + ``margin``, ``contamination`` inside the
    blob radius + ``margin``, else ``lattice``."""
    region = np.full(len(y_angstrom), "lattice", dtype=object)
    for name, centre, radius in (("contamination", geo.contamination_centre_angstrom, dist.contamination_radius_angstrom),
                                 ("hole", geo.hole_centre_angstrom, dist.hole_radius_angstrom)):
        if centre is not None:
            r = np.hypot(np.asarray(y_angstrom) - centre[0], np.asarray(x_angstrom) - centre[1])
            region[r < radius + margin_angstrom] = name
    return region


def write_field(out_dir, image: np.ndarray, pixel_size_angstrom: float, truth: dict, meta: dict,
                recorded_pixel_size_angstrom: float | None = None) -> Path:
    """``image.npy``, ``image.json`` (pixel size, energy, detector, host, dopant: what ``inference classify``
    reads beside an .npy; the *recorded* pixel size, miscalibrated when asked) and ``truth.csv`` + ``truth.json``
    (sites with classes; pixel positions from ``truth["row_px"/"col_px"]`` when given, else x, y / pixel size;
    ``region`` when given)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recorded = recorded_pixel_size_angstrom or pixel_size_angstrom
    np.save(out / "image.npy", image)
    (out / "image.json").write_text(json_text({"pixel_size_angstrom": recorded, **meta}, indent=2))
    rows = []
    for i in range(len(truth["label"])):
        x, y = float(truth["x_angstrom"][i]), float(truth["y_angstrom"][i])
        row = {"x_px": float(truth["col_px"][i]) if "col_px" in truth else x / pixel_size_angstrom,
               "y_px": float(truth["row_px"][i]) if "row_px" in truth else y / pixel_size_angstrom,
               "x_angstrom": x, "y_angstrom": y, "sublattice": str(truth["sublattice"][i]),
               "label": int(truth["label"][i]), "class_name": CLASS_NAMES[int(truth["label"][i])]}
        if "region" in truth:
            row["region"] = str(truth["region"][i])
        rows.append(row)
    import csv

    with open(out / "truth.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    extra = {} if recorded == pixel_size_angstrom else {"recorded_pixel_size_angstrom": recorded}
    (out / "truth.json").write_text(json_text({"pixel_size_angstrom": pixel_size_angstrom, **meta, **extra,
                                                "sites": rows}, indent=1))
    return out


def distorted_scan_size(field_angstrom: float, pixel: float, dist: ScanDistortion) -> int:
    """Largest square scan (pixels) of ``pixel`` whose distorted positions stay inside a field of side
    ``field_angstrom``."""
    slope = abs(math.sin(math.radians(dist.scan_skew_deg)) + dist.drift_shear)
    extra = 2 * dist.row_wobble_angstrom + dist.glitch_shift_angstrom + pixel
    return max(int((0.999 * field_angstrom - extra) / (pixel * (1 + slope))) + 1, 1)


@dataclass
class CleanField:
    """A simulated specimen before the scan and the noise: the clean (n, n) image of the periodic cell (pixel
    (i, j) at (i, j) x ``pixel_angstrom``), its ground truth (``build_field``), the metadata and the dataset
    config's noise ranges. Cheap to keep: the abTEM run is the expensive part."""

    clean: np.ndarray
    pixel_angstrom: float
    truth: dict
    meta: dict
    noise_ranges: dict

    def save(self, path) -> None:
        np.savez(path, clean=self.clean, pixel=self.pixel_angstrom,
                 truth=json.dumps({k: np.asarray(v).tolist() for k, v in self.truth.items()}),
                 meta=json.dumps(self.meta), noise=json.dumps(self.noise_ranges))

    @classmethod
    def load(cls, path) -> "CleanField":
        z = np.load(path)
        truth = {k: np.asarray(v) for k, v in json.loads(str(z["truth"])).items()}
        return cls(z["clean"], float(z["pixel"]), truth, json.loads(str(z["meta"])), json.loads(str(z["noise"])))


def simulate_clean_field(*, host: str, dopant: str, beam_energy_kev: float, detector: str, fractions: dict,
                         size_angstrom: float, rotation_deg: float, seed: int, config_path=None,
                         scan_sampling_angstrom: float | None = None) -> CleanField:
    """Catalog lookup, structure (``SeedSequence(seed)`` child 0) and abTEM over the whole cell. ``config_path``:
    the dataset config giving the catalog, noise ranges and multislice settings (default
    ``configs/dataset/paper.yaml``)."""
    from .config import ConfigError, load, load_yaml
    from .multislice import configure_abtem
    from .optics import nyquist_scan_sampling_angstrom

    dopant = canonical_dopant(dopant)
    config_path = Path(config_path or DEFAULT_CONFIG)
    if not config_path.is_file():
        raise ConfigError(f"--config: no dataset config at {config_path} (run from the repository root or pass "
                          "--config configs/dataset/paper.yaml)")
    cfg = load(config_path)  # validated; the catalog is the config's (default: contract/catalog.yaml)
    hosts = load_yaml(config_path)["materials"]["hosts"]  # every catalog host, not only the selected ones
    if host not in hosts:
        raise ValueError(f"--host {host!r} is not in the catalog; known hosts: {', '.join(sorted(hosts))}")
    dets = cfg.imaging.detectors
    if detector not in dets:
        raise ValueError(f"--detector {detector!r}: supported {', '.join(dets)}")
    alpha = float(cfg.imaging.convergence_semiangle_mrad)
    if not (math.isfinite(alpha) and alpha > 0):  # inf gives a zero Nyquist step
        raise ValueError(f"imaging.convergence_semiangle_mrad must be a finite number > 0, got {alpha}")
    step = scan_sampling_angstrom or nyquist_scan_sampling_angstrom(beam_energy_kev, alpha)
    structure_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[0])
    atoms, truth = build_field(hosts[host], dopant, size_angstrom, rotation_deg, fractions, structure_rng,
                               float(cfg.multislice.vacuum_angstrom))
    configure_abtem("cpu", cfg.multislice.fftw_planning_effort)
    clean = simulate_field(atoms, beam_energy_kev=beam_energy_kev, detector=dets[detector].as_mapping(),
                           convergence_semiangle_mrad=alpha, scan_sampling_angstrom=step,
                           slicing=cfg.multislice.slicing,
                           slice_thickness_angstrom=cfg.multislice.slice_thickness_angstrom,
                           projection=cfg.multislice.projection)
    meta = {"host": host, "metal": hosts[host]["metal"], "chalcogen": hosts[host]["chalcogen"], "dopant": dopant,
            "beam_energy_kev": beam_energy_kev, "detector": detector, "size_angstrom": size_angstrom,
            "rotation_deg": rotation_deg, "fractions": fractions, "seed": seed,
            "lattice_constant_angstrom": float(hosts[host]["lattice_constant_angstrom"])}
    return CleanField(clean, size_angstrom / clean.shape[0], truth, meta, cfg.noise.as_mapping())


def scan_field(field: CleanField, out_dir, *, seed: int, distortion: ScanDistortion | None = None,
               pixel_size_angstrom: float | None = None) -> Path:
    """Scan (``distortion`` at ``pixel_size_angstrom``: module docstring; SeedSequence(seed) child 2), add the
    noise (one draw from the config's ranges for the whole image, child 1) and write the files. Without a
    distortion or pixel size the image is the simulation's own scan (the bytes of earlier versions)."""
    from kernels.noise import draw_noise

    noise_rng, scan_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)[1:])
    clean, pixel, truth = field.clean, field.pixel_angstrom, field.truth
    size = clean.shape[0] * pixel
    dist = distortion or ScanDistortion()
    if pixel_size_angstrom is not None and not pixel_size_angstrom > 0:
        raise ValueError(f"--pixel-size-angstrom must be > 0, got {pixel_size_angstrom}")
    recorded, scan_meta = None, {}
    if not dist.is_identity or pixel_size_angstrom is not None:
        out_pixel = float(pixel_size_angstrom or pixel)
        fine = fourier_upsample(clean, pixel / out_pixel) if out_pixel < pixel else clean
        n_out = distorted_scan_size(size, out_pixel, dist)
        clean, geo = distort_scan(fine, size / fine.shape[0], (n_out, n_out), out_pixel, dist, scan_rng)
        rows, cols = specimen_to_scan_px(truth["y_angstrom"], truth["x_angstrom"], out_pixel, dist, geo)
        d = field.meta["lattice_constant_angstrom"] / 3 ** 0.5
        truth = {**truth, "row_px": rows, "col_px": cols,
                 "region": truth_regions(truth["y_angstrom"], truth["x_angstrom"], dist, geo, d)}
        inside = (rows >= 0) & (rows <= n_out - 1) & (cols >= 0) & (cols <= n_out - 1)
        truth = {k: np.asarray(v)[inside] for k, v in truth.items()}
        pixel = out_pixel
        recorded = pixel * (1 + dist.pixel_miscalibration)
        scan_meta = {"distortion": dist.as_dict(), "scan_geometry": {
            "origin_angstrom": list(geo.origin_angstrom), "glitch_rows": [list(g) for g in geo.glitch_rows],
            "wobble_phase": geo.wobble_phase, "hole_centre_angstrom": geo.hole_centre_angstrom,
            "contamination_centre_angstrom": geo.contamination_centre_angstrom}}
    draw = draw_noise(noise_rng, field.noise_ranges)
    image = noisy_image(clean, pixel_size_angstrom=pixel, probe_blur_sigma_angstrom=draw.probe_blur_sigma_angstrom,
                        scan_jitter_px=draw.scan_jitter_px, dose_e_per_angstrom2=draw.dose_e_per_angstrom2,
                        read_noise_counts=draw.read_noise_counts, rng=noise_rng, display=draw.display)
    if dist.dc_offset_counts:
        image = (image.astype(np.float64) + dist.dc_offset_counts).astype(np.float32)
    return write_field(out_dir, image, pixel, truth, {**field.meta, "noise": draw.as_dict(), **scan_meta}, recorded)


def run_fullfield(*, host: str, dopant: str, beam_energy_kev: float, detector: str, fractions: dict,
                  size_angstrom: float, rotation_deg: float, seed: int, out_dir,
                  config_path=None, scan_sampling_angstrom: float | None = None,
                  distortion: ScanDistortion | None = None, pixel_size_angstrom: float | None = None) -> Path:
    """``simulate_clean_field`` then ``scan_field``: catalog lookup, structure, abTEM, scan, noise, files. Every
    draw comes from ``SeedSequence(seed)``."""
    field = simulate_clean_field(host=host, dopant=dopant, beam_energy_kev=beam_energy_kev, detector=detector,
                                 fractions=fractions, size_angstrom=size_angstrom, rotation_deg=rotation_deg,
                                 seed=seed, config_path=config_path, scan_sampling_angstrom=scan_sampling_angstrom)
    return scan_field(field, out_dir, seed=seed, distortion=distortion, pixel_size_angstrom=pixel_size_angstrom)
