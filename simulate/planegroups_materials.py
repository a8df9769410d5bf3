"""Real-material projections for the phase classifier: abTEM images of graphene, 1H-WSe2 and SrTiO3 [001], each
with its plane group computed from its projected atomic columns (never assumed).

``python -m simulate planegroups-materials --out data/planegroups-materials [--beam-energy-kev 80]``

Per material:

1. the structure (ase), in an orthogonal cell (``abtem.orthogonalize_cell``: a x sqrt(3) a for hexagonal
   layers), repeated into a supercell of at least ``min_supercell_angstrom`` so that the probe fits;
2. the **plane group**: the atoms are projected along the beam, merged into columns (same x, y within 0.01 A),
   each column coloured by its composition ("Se2", "W", "TiO", ...), and classified with
   ``planegroups_symmetry.pattern_symmetry`` on the orthogonal cell;
3. one abTEM run (``simulate.multislice.scan_images``, the project's one abTEM call) scanning exactly one
   orthogonal cell (``endpoint=False``), so the clean image is periodic; it is cached in ``OUT/cache/`` per
   (material, energy, detector, grid);
4. test images: the periodic clean image resampled (cubic, wrap-around) onto a square field at a random rotation
   with ``cell_px`` pixels per sqrt(primitive cell area), then the project's noise chain (``kernels.noise``:
   Poisson counts at a dose, read noise); written as ``<material>-<k>.npy`` with a ``.json`` beside it (what
   ``python -m inference phase`` reads) holding the computed plane group, dose and rotation, and a
   ``manifest.json`` listing all of them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from contract.jsonio import json_text

from .planegroups_symmetry import pattern_symmetry

MATERIALS = ("graphene", "WSe2-1H", "SrTiO3-001")
DETECTORS = {"HAADF": {"inner_mrad": 68.0, "outer_mrad": 280.0}, "MAADF": {"inner_mrad": 30.0, "outer_mrad": 120.0}}


def build_material(name: str):
    """(ase Atoms in an orthogonal cell with the beam along z, description)."""
    import abtem
    from ase.build import graphene, mx2
    from ase.spacegroup import crystal

    if name == "graphene":
        atoms = graphene(a=2.46, vacuum=2.0)
        text = "graphene, a = 2.46 A"
    elif name == "WSe2-1H":
        atoms = mx2("WSe2", kind="2H", a=3.28, thickness=3.34, vacuum=2.0)
        text = "1H-WSe2 monolayer, a = 3.28 A, Se-Se 3.34 A"
    elif name == "SrTiO3-001":
        atoms = crystal(["Sr", "Ti", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)], spacegroup=221,
                        cellpar=[3.905, 3.905, 3.905, 90, 90, 90]) * (1, 1, 5)
        text = "SrTiO3 cubic perovskite along [001], a = 3.905 A, 5 unit cells thick"
    else:
        raise ValueError(f"unknown material {name!r}; known: {', '.join(MATERIALS)}")
    atoms.pbc = True
    return abtem.orthogonalize_cell(atoms), text


def projected_columns(atoms, tol_angstrom: float = 0.01) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Columns of the orthogonal cell: (fractional (n, 2), species id (n,), composition per species)."""
    cell = np.asarray(atoms.cell)[:2, :2]
    frac = np.mod(np.linalg.solve(cell.T, atoms.positions[:, :2].T).T, 1.0)
    frac[np.isclose(frac, 1.0, atol=1e-9)] = 0.0
    columns: list[tuple[np.ndarray, dict]] = []
    for f, sym in zip(frac, atoms.get_chemical_symbols()):
        for pos, comp in columns:
            d = f - pos
            d -= np.round(d)
            if np.linalg.norm(d @ cell) < tol_angstrom:
                comp[sym] = comp.get(sym, 0) + 1
                break
        else:
            columns.append((f, {sym: 1}))
    names = ["".join(f"{el}{n if n > 1 else ''}" for el, n in sorted(comp.items())) for _, comp in columns]
    # the same composition per z-repeat may occur n times: normalise by the gcd-free composition name order
    kinds = sorted(set(names))
    return (np.array([p for p, _ in columns]), np.array([kinds.index(n) for n in names]), kinds)


def material_plane_group(name: str) -> dict:
    atoms, text = build_material(name)
    frac, species, kinds = projected_columns(atoms)
    cell = np.asarray(atoms.cell)[:2, :2]
    sym = pattern_symmetry(cell, frac, species, 1e-3)
    return {"material": name, "description": text, "plane_group": sym.plane_group, "signature": sym.signature(),
            "columns": kinds, "primitive_area_angstrom2": float(abs(np.linalg.det(sym.primitive))),
            "orthogonal_cell_angstrom": [float(cell[0, 0]), float(cell[1, 1])]}


def clean_cell_image(name: str, beam_energy_kev: float, detector: str, step_angstrom: float, cache: Path,
                     convergence_semiangle_mrad: float = 31.0, min_supercell_angstrom: float = 12.0,
                     slice_thickness_angstrom: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(periodic clean image of one orthogonal cell (ny, nx) float32, cell size (ax, ay) A), cached."""
    from .multislice import configure_abtem, scan_images
    from .optics import gpts_reaching

    atoms, _ = build_material(name)
    ax, ay = float(atoms.cell[0, 0]), float(atoms.cell[1, 1])
    reps = (int(np.ceil(min_supercell_angstrom / ax)), int(np.ceil(min_supercell_angstrom / ay)), 1)
    sup = atoms * reps
    size = (float(sup.cell[0, 0]), float(sup.cell[1, 1]))
    gpts = gpts_reaching(size, beam_energy_kev, DETECTORS[detector]["outer_mrad"])
    n = int(np.ceil(max(ax, ay) / step_angstrom))
    key = hashlib.sha256(json.dumps([name, beam_energy_kev, detector, n, gpts, convergence_semiangle_mrad,
                                     slice_thickness_angstrom, reps]).encode()).hexdigest()[:16]
    path = Path(cache) / f"{name}-{key}.npy"
    if path.is_file():
        return np.load(path), np.array([ax, ay])
    configure_abtem("cpu", "FFTW_ESTIMATE")
    # uniform slices: these projections are a plane-group test set (the symmetry of the image, not the column
    # contrast, is what matters), and the measured real-material results were simulated this way
    # one orthogonal cell in the middle of the supercell; n x n probe positions: steps ax/n, ay/n
    x0, y0 = (reps[0] // 2) * ax, (reps[1] // 2) * ay
    image = scan_images(sup, start=(x0, y0), end=(x0 + ax, y0 + ay), n_px=n, endpoint=False,
                        beam_energy_kev=beam_energy_kev, gpts=gpts, convergence_semiangle_mrad=convergence_semiangle_mrad,
                        detectors={detector: DETECTORS[detector]}, slicing="uniform",
                        slice_thickness_angstrom=slice_thickness_angstrom)[detector]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, image)
    return image, np.array([ax, ay])


def field_from_cell(cell_image: np.ndarray, cell_angstrom: np.ndarray, size_px: int, pixel_angstrom: float,
                    rotation_deg: float, origin_angstrom: np.ndarray) -> np.ndarray:
    """Resample the periodic one-cell image onto a rotated square field: (size, size) float64 (fraction of beam)."""
    ny, nx = cell_image.shape
    y, x = np.mgrid[:size_px, :size_px].astype(float) * pixel_angstrom
    t = np.deg2rad(rotation_deg)
    cx = np.cos(t) * x + np.sin(t) * y + origin_angstrom[0]  # crystal coordinates of each pixel
    cy = -np.sin(t) * x + np.cos(t) * y + origin_angstrom[1]
    rows = np.mod(cy / cell_angstrom[1], 1.0) * ny
    cols = np.mod(cx / cell_angstrom[0], 1.0) * nx
    return ndimage.map_coordinates(cell_image.astype(np.float64), [rows, cols], order=3, mode="grid-wrap")


def write_materials(out: str | Path, *, beam_energy_kev: float = 80.0, detector: str = "HAADF", size_px: int = 112,
                    cell_px: float = 12.0, images_per_material: int = 4, doses=(30.0, 300.0), seed: int = 0,
                    step_angstrom: float = 0.1, materials=MATERIALS) -> dict:
    """Simulate (or reuse the cached) clean cells and write the noisy test images; returns the manifest."""
    from kernels.noise import read_noise

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 14]))
    entries = []
    for name in materials:
        facts = material_plane_group(name)
        cell_image, cell = clean_cell_image(name, beam_energy_kev, detector, step_angstrom, out / "cache")
        pixel = np.sqrt(facts["primitive_area_angstrom2"]) / cell_px
        for k in range(images_per_material):
            rotation = float(rng.uniform(0, 360))
            clean = field_from_cell(cell_image, cell, size_px, pixel, rotation, rng.uniform(0, 1, 2) * cell)
            peak_counts = float(doses[k % len(doses)])
            counts = rng.poisson(np.clip(clean, 0, None) / clean.max() * peak_counts).astype(np.float64)
            image = read_noise(counts, 0.5, rng).astype(np.float32)
            stem = f"{name}-{k}"
            np.save(out / f"{stem}.npy", image)
            meta = {**facts, "pixel_size_angstrom": pixel, "rotation_deg": rotation, "peak_counts": peak_counts,
                    "beam_energy_kev": beam_energy_kev, "detector": detector, "cell_px": cell_px}
            (out / f"{stem}.json").write_text(json_text(meta, indent=1))
            entries.append({"image": f"{stem}.npy", **{k2: meta[k2] for k2 in ("material", "plane_group",
                                                                              "peak_counts", "rotation_deg")}})
    manifest = {"images": entries, "beam_energy_kev": beam_energy_kev, "detector": detector, "size_px": size_px,
                "cell_px": cell_px}
    (out / "manifest.json").write_text(json_text(manifest, indent=1))
    return manifest
