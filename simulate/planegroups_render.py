"""Seedable 2-D crystals of the 17 plane groups and their noisy images. Pure functions of a config mapping and a
``numpy.random.Generator``; no I/O.

One image (``draw_image``):

1. **structure** (``draw_structure``): the drawn group's lattice (per lattice system: oblique angles, aspect
   ratios from ``structure.aspect_ratio`` and, for a ``near_special_fraction`` of draws, lattices close to a
   higher system: near-square rectangles, near-hexagonal centred rectangles, oblique cells near 90 or 120
   degrees), 1 to ``orbits`` Wyckoff orbits with random free parameters, each of one of 1-3 species;
   rejected if two atoms come closer than the draw's minimum distance or an orbit collapses onto a more special
   position, or the cell holds more than ``max_atoms_per_cell`` atoms.
2. **scale**: pixels per unit so that the nearest atoms are ``min_distance_px`` apart and sqrt(primitive cell
   area) lies in ``cell_size_px``; rejected if both cannot hold.
3. **label** (``planegroups_symmetry.pattern_symmetry``): the plane group of the coloured atom pattern computed
   at ``tight_tolerance_px``; the draw is rejected if the group at ``loose_tolerance_px`` differs (a pattern
   that nearly has a higher symmetry is ambiguous in a noisy image). The label is this computed group, never
   the drawn one. Special positions often give a pattern a higher group than the one drawn (a lone atom in p4
   is p4mm); such draws are kept with probability ``other_group_keep_fraction`` and redrawn otherwise, so
   the classes stay about balanced.
4. **image**: random in-plane rotation and origin; peaks of one shape family per image (Gaussian or Moffat,
   heavy-tailed) with a brightness and width per species; probe blur; counts scaled so the brightest peak
   holds ``peak_counts`` (log-uniform: a few to hundreds); background (offset + gradient); scan-row jitter;
   Poisson noise; read noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from contract.planegroups import PLANE_GROUPS
from kernels.noise import read_noise, scan_jitter

from .planegroups_symmetry import SPECIES_LETTERS, PatternSymmetry, pattern_symmetry
from .planegroups_tables import conventional_lattice, orbit, plane_group, wyckoff_point

MAX_ATTEMPTS = 500


class DrawRejected(Exception):
    """One attempt of a draw failed a rule; the generator tries again with the next numbers of its stream."""


@dataclass(frozen=True)
class Structure:
    """A drawn crystal, in pixels after ``scale``: conventional lattice rows (2, 2) and fractional atoms."""

    drawn_group: str
    lattice: np.ndarray  # (2, 2) conventional cell rows, Cartesian (unit or px)
    frac: np.ndarray  # (N, 2) fractional coordinates in the conventional cell
    species: np.ndarray  # (N,) int
    orbits: tuple[tuple[str, int], ...]  # (Wyckoff letter, species) per drawn orbit

    def description(self) -> str:
        """The drawn structure: ``group:letter(species)+...`` in drawing order (Wyckoff letters of the drawn
        group)."""
        return self.drawn_group + ":" + "+".join(f"{plane_group(self.drawn_group).wyckoff_position(w).label}"
                                                 f"{SPECIES_LETTERS[s]}" for w, s in self.orbits)

    def scaled(self, factor: float) -> "Structure":
        return Structure(self.drawn_group, self.lattice * factor, self.frac, self.species, self.orbits)


@dataclass(frozen=True)
class RenderedImage:
    image: np.ndarray  # (S, S) float32 counts
    clean: np.ndarray  # (S, S) float32 noiseless pattern (brightest peak = 1, before blur)
    structure: Structure  # in px
    symmetry: PatternSymmetry
    lattice_px: np.ndarray  # (2, 2) primitive lattice rows in image coordinates (x along columns, y down)
    rotation_deg: float
    origin_px: np.ndarray  # (x, y) px of the conventional cell's origin in the image
    peak_counts: float
    attempts: int


# ------------------------------------------------------------------------------------------ structure
def _uniform(rng, bounds) -> float:
    lo, hi = bounds
    return float(rng.uniform(lo, hi))


def _log_uniform(rng, bounds) -> float:
    lo, hi = bounds
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def draw_lattice_shape(rng, system: str, cfg: dict) -> np.ndarray:
    """Conventional lattice rows for a cell of unit first length: aspect ratio and angle per system."""
    near = rng.uniform() < cfg["near_special_fraction"]
    if system == "oblique":
        aspect = _uniform(rng, cfg["aspect_ratio"])
        if near:  # close to rectangular or to hexagonal
            if rng.uniform() < 0.5:
                gamma = 90 + rng.choice([-1, 1]) * _uniform(rng, cfg["near_special_deg"])
            else:
                aspect = 1.0 - _uniform(rng, cfg["near_special_aspect"])
                gamma = 120 + rng.choice([-1, 1]) * _uniform(rng, cfg["near_special_deg"])
        else:
            gamma = _uniform(rng, cfg["oblique_angle_deg"])
        return conventional_lattice(system, 1.0, aspect, gamma)
    if system == "rectangular":
        aspect = 1.0 - _uniform(rng, cfg["near_special_aspect"]) if near else _uniform(rng, cfg["aspect_ratio"])
        return conventional_lattice(system, 1.0, aspect, 90.0)
    if system == "centred_rectangular":
        if near:  # near square (b/a = 1) or near hexagonal (b/a = sqrt 3)
            target = 1.0 if rng.uniform() < 0.5 else np.sqrt(3.0)
            aspect = target * (1.0 + rng.choice([-1, 1]) * _uniform(rng, cfg["near_special_aspect"]))
        else:
            aspect = _uniform(rng, cfg["aspect_ratio"])
            aspect = 1.0 / aspect if rng.uniform() < 0.5 else aspect
        return conventional_lattice(system, 1.0, aspect, 90.0)
    return conventional_lattice(system, 1.0, 1.0, 90.0)


def draw_structure(rng, group_name: str, cfg: dict) -> Structure:
    """One attempt at a structure of the drawn group (unit cell scale); ``DrawRejected`` if it breaks a rule."""
    group = plane_group(group_name)
    lattice = draw_lattice_shape(rng, group.lattice_system, cfg)
    n_orbits = int(rng.integers(cfg["orbits"][0], cfg["orbits"][1] + 1))
    n_species = int(rng.integers(cfg["species"][0], cfg["species"][1] + 1))
    frac, species, orbits = [], [], []
    for k in range(n_orbits):
        w = group.wyckoff[int(rng.integers(len(group.wyckoff)))]
        x, y = rng.uniform(0, 1, size=2)
        s = k if k < n_species else int(rng.integers(n_species))  # every drawn species is used
        pts = orbit(group, wyckoff_point(w, x, y))
        if len(pts) != w.multiplicity:
            raise DrawRejected(f"orbit {w.label} collapsed to {len(pts)} points")
        if any(wl == w.letter for wl, _ in orbits) and not w.free:
            raise DrawRejected(f"Wyckoff position {w.label} drawn twice")
        frac.extend(pts)
        species.extend([s] * len(pts))
        orbits.append((w.letter, s))
    if len(frac) > cfg["max_atoms_per_cell"]:
        raise DrawRejected(f"{len(frac)} atoms per cell > {cfg['max_atoms_per_cell']}")
    return Structure(group_name, lattice, np.asarray(frac), np.asarray(species), tuple(orbits))


def nearest_distance(lattice: np.ndarray, frac: np.ndarray) -> float:
    """Smallest distance between two atoms of the periodic structure (Cartesian units of ``lattice``)."""
    cart = frac @ lattice
    shifts = np.array([[i, j] for i in (-1, 0, 1) for j in (-1, 0, 1)]) @ lattice
    d = cart[:, None, None, :] - cart[None, :, None, :] + shifts[None, None, :, :]
    dist = np.linalg.norm(d, axis=-1)
    n = len(frac)
    dist[np.arange(n), np.arange(n), 4] = np.inf  # an atom and itself in the same cell
    # a single atom per primitive cell: the lattice itself bounds the distance
    return float(dist.min())


def choose_scale(rng, structure: Structure, symmetry: PatternSymmetry, cfg: dict) -> float:
    """Pixels per unit: nearest atoms >= the drawn min distance, sqrt(primitive area) within cell_size_px."""
    d_unit = nearest_distance(structure.lattice, structure.frac)
    cell_unit = float(np.sqrt(abs(np.linalg.det(symmetry.primitive))))
    if d_unit < 1e-3 * cell_unit:
        raise DrawRejected("two atoms on top of each other")
    lo = max(_uniform(rng, cfg["min_distance_px"]) / d_unit, cfg["cell_size_px"][0] / cell_unit)
    hi = cfg["cell_size_px"][1] / cell_unit
    if lo > hi:
        raise DrawRejected(f"atoms too close for the largest cell: {d_unit * hi:.2f} px apart")
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def unambiguous_symmetry(structure: Structure, tight_px: float, loose_px: float) -> PatternSymmetry:
    """The pattern's symmetry at ``tight_px``; ``DrawRejected`` if it differs at ``loose_px`` (the pattern is
    within the loose tolerance of a higher symmetry: ambiguous in a noisy image)."""
    s = structure
    tight = pattern_symmetry(s.lattice, s.frac, s.species, tight_px)
    try:
        loose = pattern_symmetry(s.lattice, s.frac, s.species, loose_px)
    except RuntimeError as err:  # operations of an idealised lattice that this one only nearly has
        raise DrawRejected(f"ambiguous at {loose_px} px: {err}") from None
    if loose.plane_group != tight.plane_group:
        raise DrawRejected(f"{tight.plane_group} at {tight_px} px but {loose.plane_group} at {loose_px} px")
    return tight


def draw_labelled_structure(rng, group_name: str, cfg: dict) -> tuple[Structure, PatternSymmetry, int]:
    """A structure in px with its computed symmetry, after as many attempts as the rules need."""
    tol = cfg["symmetry"]
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            s = draw_structure(rng, group_name, cfg["structure"])
            # tolerances are in px: label at the px scale fixed below, so first a unit-scale check of the
            # geometry, then the final check after scaling
            sym_unit = pattern_symmetry(s.lattice, s.frac, s.species, 1e-5)
            scale = choose_scale(rng, s, sym_unit, cfg["structure"])
            s = s.scaled(scale)
            tight = unambiguous_symmetry(s, tol["tight_tolerance_px"], tol["loose_tolerance_px"])
            if tight.plane_group != group_name and rng.uniform() >= cfg["structure"]["other_group_keep_fraction"]:
                raise DrawRejected(f"drawn {group_name}, pattern is {tight.plane_group}")  # keeps classes balanced
            return s, tight, attempt
        except DrawRejected:
            continue
    raise RuntimeError(f"{group_name}: no acceptable structure in {MAX_ATTEMPTS} attempts; loosen the "
                       f"structure config (cell_size_px, min_distance_px, max_atoms_per_cell)")


# ---------------------------------------------------------------------------------------------- image
def _profile(r2: np.ndarray, shape: str, width_px: float, beta: float) -> np.ndarray:
    """Peak of height 1 at r = 0: Gaussian (sigma = width) or Moffat (FWHM equal to the Gaussian's)."""
    if shape == "gaussian":
        return np.exp(-r2 / (2 * width_px ** 2))
    fwhm = 2.3548 * width_px
    alpha = fwhm / (2 * np.sqrt(2 ** (1 / beta) - 1))
    return (1 + r2 / alpha ** 2) ** (-beta)


def render_pattern(size_px: int, positions_px: np.ndarray, heights: np.ndarray, widths_px: np.ndarray,
                   shape: str, beta: float, radius_px: int) -> np.ndarray:
    """Sum of peaks at ``positions_px`` (N, 2) (x, y) on a ``size_px`` square grid: (S, S) float64."""
    pad = 2 * radius_px + 1  # atoms up to radius_px outside the image, their stamps radius_px further
    side = size_px + 2 * pad
    img = np.zeros(side * side)
    keep = np.all((positions_px > -radius_px) & (positions_px < size_px + radius_px), axis=1)
    pos, h, w = positions_px[keep] + pad, heights[keep], widths_px[keep]
    base = np.round(pos).astype(int)
    off = np.arange(-radius_px, radius_px + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    for start in range(0, len(pos), 2048):  # bounded memory: (chunk, 2r+1, 2r+1)
        b, p = base[start:start + 2048], pos[start:start + 2048]
        xs = b[:, 0, None, None] + ox[None]
        ys = b[:, 1, None, None] + oy[None]
        r2 = (xs - p[:, 0, None, None]) ** 2 + (ys - p[:, 1, None, None]) ** 2
        vals = h[start:start + 2048, None, None] * _profile(r2, shape, w[start:start + 2048, None, None], beta)
        img += np.bincount((ys * side + xs).ravel(), weights=vals.ravel(), minlength=side * side)
    return img.reshape(side, side)[pad:pad + size_px, pad:pad + size_px]


def place_atoms(structure: Structure, size_px: int, rotation_rad: float, origin_px: np.ndarray,
                margin_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Image positions (x, y) px of every atom within the image plus ``margin_px``, and their species."""
    c, s = np.cos(rotation_rad), np.sin(rotation_rad)
    rot = np.array([[c, -s], [s, c]])
    lat = structure.lattice @ rot.T  # rotated lattice rows
    corners = np.array([[0, 0], [size_px, 0], [0, size_px], [size_px, size_px]], float) - origin_px
    inv = np.linalg.inv(lat)
    fc = corners @ inv
    pad = margin_px / min(np.linalg.norm(lat, axis=1)) + 1
    lo = np.floor(fc.min(axis=0) - pad).astype(int)
    hi = np.ceil(fc.max(axis=0) + pad).astype(int)
    i, j = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1), indexing="ij")
    cells = np.stack([i.ravel(), j.ravel()], axis=1)
    frac = (cells[:, None, :] + structure.frac[None]).reshape(-1, 2)
    species = np.tile(structure.species, len(cells))
    pos = frac @ lat + origin_px
    inside = np.all((pos > -margin_px) & (pos < size_px + margin_px), axis=1)
    return pos[inside], species[inside]


def draw_image(rng, group_name: str, cfg: dict) -> RenderedImage:
    """One labelled noisy image of a structure drawn from ``group_name`` (see the module docstring)."""
    structure, symmetry, attempts = draw_labelled_structure(rng, group_name, cfg)
    r, noise = cfg["rendering"], cfg["noise"]
    size = int(cfg["image_size_px"])
    n_species = int(structure.species.max()) + 1
    brightness = _species_brightness(rng, n_species, r)
    shape = str(r["peak_shapes"][int(rng.integers(len(r["peak_shapes"])))])
    beta = _uniform(rng, r["moffat_beta"])
    width = _uniform(rng, r["peak_sigma_px"])
    widths = width * (1 + r["width_spread"] * (brightness - brightness.mean()))  # brighter: a little wider
    rotation = float(rng.uniform(0, 360))
    origin = rng.uniform(0, size, size=2)
    radius = int(np.ceil(r["peak_radius_sigmas"] * width * (2 if shape == "moffat" else 1)))
    pos, spc = place_atoms(structure, size, np.deg2rad(rotation), origin, radius + 1)
    clean = render_pattern(size, pos, brightness[spc], widths[spc], shape, beta, radius)
    peak = float(_profile(np.zeros(1), shape, width, beta)[0] * brightness.max())
    blurred = ndimage.gaussian_filter(clean, _uniform(rng, noise["probe_blur_sigma_px"]), mode="nearest")
    peak_counts = _log_uniform(rng, noise["peak_counts"])
    yy, xx = np.mgrid[:size, :size] / size
    gradient = _uniform(rng, noise["background_gradient_fraction"]) * (np.cos(rng.uniform(0, 2 * np.pi)) * xx
                                                                       + np.sin(rng.uniform(0, 2 * np.pi)) * yy)
    background = (_uniform(rng, noise["background_fraction"]) + gradient) * peak_counts
    mean_counts = blurred / peak * peak_counts + np.clip(background, 0, None)
    jitter = _uniform(rng, noise["scan_jitter_px"])
    mean_counts = scan_jitter(mean_counts, rng.uniform(-jitter, jitter, size=size))
    counts = rng.poisson(np.clip(mean_counts, 0, None)).astype(np.float64)
    counts = read_noise(counts, _uniform(rng, noise["read_noise_counts"]), rng)
    rot = np.array([[np.cos(np.deg2rad(rotation)), -np.sin(np.deg2rad(rotation))],
                    [np.sin(np.deg2rad(rotation)), np.cos(np.deg2rad(rotation))]])
    return RenderedImage(counts.astype(np.float32), (clean / peak).astype(np.float32), structure, symmetry,
                         symmetry.primitive @ rot.T, rotation, origin, peak_counts, attempts)


def _species_brightness(rng, n: int, r: dict) -> np.ndarray:
    """n brightness levels in ``species_brightness``, consecutive ratios >= ``min_brightness_ratio``."""
    lo, hi = r["species_brightness"]
    ratio = r["min_brightness_ratio"]
    if n > 1 and hi / lo < ratio ** (n - 1):
        raise ValueError(f"rendering.species_brightness {lo}-{hi} cannot hold {n} species "
                         f"{ratio}x apart")
    for _ in range(1000):
        levels = np.sort(rng.uniform(lo, hi, size=n))[::-1]
        if n == 1 or np.all(levels[:-1] / levels[1:] >= ratio):
            break
    else:  # evenly spaced in log as a fallback
        levels = hi / ratio ** np.arange(n)
    order = rng.permutation(n)  # which species is brightest is random
    return levels[order]


def group_for_image(index: int, groups: tuple[str, ...]) -> str:
    """The drawn group of image ``index``: the configured groups in turn (balanced draws)."""
    return groups[index % len(groups)]


ALL_GROUPS = PLANE_GROUPS
