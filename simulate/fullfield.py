"""Full-field evaluation images: a doped 1H-MX2 field of view with random dopants and vacancies, rotated to
an arbitrary angle, simulated with abTEM over the whole cell and passed through the patch noise model.

``build_field`` (atoms + ground-truth columns, pure given a Generator) and ``noisy_image`` (``simulate.noise``'s
model on a whole clean image) are separate from ``simulate_field`` (``multislice.scan_images`` on the cell) and
``write_field`` (files), so each can be tested on its own.

Ground truth: one row per column inside the field, including the empty sites of double vacancies, with
x, y in Å and in pixels (pixel (row, col) = (y, x) / pixel size: the probe of pixel i sat at i x sampling).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from contract.classes import CLASS_IDS, CLASS_NAMES, DEFECT_CLASS_IDS, SUBLATTICES

from .noise import NoiseDraw, noisy_counts

DEFECT_CLASSES = tuple(CLASS_NAMES[c] for c in DEFECT_CLASS_IDS)
DEFAULT_CONFIG = Path("configs/dataset/paper.yaml")
"""Noise ranges and multislice settings of a full field (relative to the working directory: the repository)."""


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
    """
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
    symbols = np.array(layer.get_chemical_symbols())
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


def noisy_image(clean: np.ndarray, *, pixel_size_angstrom: float, probe_blur_sigma_angstrom: float,
                scan_jitter_px: float, dose_e_per_angstrom2: float, read_noise_counts: float,
                rng: np.random.Generator) -> np.ndarray:
    """The patch noise model (``simulate.noise.noisy_counts``) on a whole (H, W) image. Returns float32 counts."""
    draw = NoiseDraw(probe_blur_sigma_angstrom, dose_e_per_angstrom2, read_noise_counts, scan_jitter_px, (0.0, 0.0))
    return noisy_counts(clean, draw, pixel_size_angstrom=pixel_size_angstrom, rng=rng).astype(np.float32)


def write_field(out_dir, image: np.ndarray, pixel_size_angstrom: float, truth: dict, meta: dict) -> Path:
    """``image.npy``, ``image.json`` (pixel size, energy, detector, host, dopant: what ``inference classify``
    reads beside an .npy) and ``truth.csv`` + ``truth.json`` (sites with classes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "image.npy", image)
    (out / "image.json").write_text(json.dumps({"pixel_size_angstrom": pixel_size_angstrom, **meta}, indent=2))
    rows = []
    for i in range(len(truth["label"])):
        x, y = float(truth["x_angstrom"][i]), float(truth["y_angstrom"][i])
        rows.append({"x_px": x / pixel_size_angstrom, "y_px": y / pixel_size_angstrom, "x_angstrom": x,
                     "y_angstrom": y, "sublattice": str(truth["sublattice"][i]), "label": int(truth["label"][i]),
                     "class_name": CLASS_NAMES[int(truth["label"][i])]})
    import csv

    with open(out / "truth.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (out / "truth.json").write_text(json.dumps({"pixel_size_angstrom": pixel_size_angstrom, **meta,
                                                "sites": rows}, indent=1))
    return out


def run_fullfield(*, host: str, dopant: str, beam_energy_kev: float, detector: str, fractions: dict,
                  size_angstrom: float, rotation_deg: float, seed: int, out_dir,
                  config_path=None, scan_sampling_angstrom: float | None = None) -> Path:
    """Catalog lookup, structure, abTEM, noise (one draw from the dataset config's noise ranges for the whole
    image), files. ``config_path``: the dataset config giving the catalog, noise ranges and multislice settings
    (default ``configs/dataset/paper.yaml``). Every draw comes from ``SeedSequence(seed)``."""
    from .config import ConfigError, load, load_yaml
    from .multislice import configure_abtem
    from .noise import draw_noise
    from .optics import nyquist_scan_sampling_angstrom

    config_path = Path(config_path or DEFAULT_CONFIG)
    if not config_path.is_file():
        raise ConfigError(f"--config: no dataset config at {config_path} (run from the repository root or pass "
                          "--config configs/dataset/paper.yaml)")
    cfg = load(config_path)  # validated; the catalog is the config's (default: contract/catalog.yaml)
    hosts = load_yaml(config_path)["materials"]["hosts"]  # every catalog host, not only the selected ones
    if host not in hosts:
        raise ValueError(f"--host {host!r} is not in the catalog; known hosts: {', '.join(sorted(hosts))}")
    dets = cfg["imaging"]["detectors"]
    if detector not in dets:
        raise ValueError(f"--detector {detector!r}: supported {', '.join(dets)}")
    alpha = float(cfg["imaging"]["convergence_semiangle_mrad"])
    step = scan_sampling_angstrom or nyquist_scan_sampling_angstrom(beam_energy_kev, alpha)
    structure_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    atoms, truth = build_field(hosts[host], dopant, size_angstrom, rotation_deg, fractions, structure_rng,
                               float(cfg["multislice"]["vacuum_angstrom"]))
    configure_abtem("cpu", cfg["multislice"].get("fftw_planning_effort", "FFTW_ESTIMATE"))
    clean = simulate_field(atoms, beam_energy_kev=beam_energy_kev, detector=dets[detector],
                           convergence_semiangle_mrad=alpha, scan_sampling_angstrom=step,
                           slicing=cfg["multislice"]["slicing"],
                           slice_thickness_angstrom=cfg["multislice"].get("slice_thickness_angstrom"),
                           projection=cfg["multislice"]["projection"])
    pixel = size_angstrom / clean.shape[0]
    draw = draw_noise(noise_rng, cfg["noise"])
    image = noisy_image(clean, pixel_size_angstrom=pixel, probe_blur_sigma_angstrom=draw.probe_blur_sigma_angstrom,
                        scan_jitter_px=draw.scan_jitter_px, dose_e_per_angstrom2=draw.dose_e_per_angstrom2,
                        read_noise_counts=draw.read_noise_counts, rng=noise_rng)
    meta = {"host": host, "metal": hosts[host]["metal"], "chalcogen": hosts[host]["chalcogen"], "dopant": dopant,
            "beam_energy_kev": beam_energy_kev, "detector": detector, "size_angstrom": size_angstrom,
            "rotation_deg": rotation_deg, "fractions": fractions, "seed": seed,
            "lattice_constant_angstrom": float(hosts[host]["lattice_constant_angstrom"]),
            "noise": draw.as_dict()}
    return write_field(out_dir, image, pixel, truth, meta)
