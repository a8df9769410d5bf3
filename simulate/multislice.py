"""abTEM multislice of one environment at one beam energy: HAADF and MAADF images from a single run.

The scan window is centred on the central column with an odd number of probe positions, so the column sits
exactly on the centre pixel; its step divides the patch half-width √3·a/2 into whole pixels and is at or below
the Nyquist step λ/(4α). The window extends ``scan_margin_px`` pixels beyond the patch on each side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from contract.errors import ConfigError

from .optics import nyquist_scan_sampling_angstrom


@dataclass(frozen=True)
class ScanWindow:
    """Probe positions: ``n_px`` x ``n_px`` points spaced ``sampling_angstrom`` centred on the column.

    ``patch_half_px`` pixels on each side of the centre span the patch half-width √3·a/2 exactly.
    """

    sampling_angstrom: float
    patch_half_px: int
    margin_px: int

    @property
    def n_px(self) -> int:
        return 2 * (self.patch_half_px + self.margin_px) + 1

    @property
    def centre_px(self) -> int:
        return self.patch_half_px + self.margin_px


def scan_window(lattice_constant_angstrom: float, beam_energy_kev: float, convergence_semiangle_mrad: float,
                margin_px: int) -> ScanWindow:
    """The scan for a patch of side √3·a at Nyquist sampling or finer."""
    for name, value in (("imaging.beam_energies_kev", beam_energy_kev),
                        ("imaging.convergence_semiangle_mrad", convergence_semiangle_mrad)):
        if not (math.isfinite(value) and value > 0):  # inf gives a zero Nyquist step: refuse before any work
            raise ConfigError(f"{name} must be a finite number > 0, got {value}")
    half_width = 3**0.5 * lattice_constant_angstrom / 2
    nyquist = nyquist_scan_sampling_angstrom(beam_energy_kev, convergence_semiangle_mrad)
    half_px = math.ceil(half_width / nyquist - 1e-9)
    return ScanWindow(sampling_angstrom=half_width / half_px, patch_half_px=half_px, margin_px=margin_px)


SLICINGS = ("planes", "uniform")
PLANE_MERGE_ANGSTROM = 0.5  # atoms closer than this along z belong to one atomic plane (1H-MX2 planes are ~1.5 Å apart)


def atomic_planes_angstrom(z_angstrom, merge_angstrom: float = PLANE_MERGE_ANGSTROM) -> np.ndarray:
    """Heights [Å] of the atomic planes: the mean z of each group of atoms whose sorted z values are less
    than ``merge_angstrom`` apart. ``z_angstrom``: (n_atoms,) array; returns (n_planes,) ascending."""
    z = np.sort(np.asarray(z_angstrom, dtype=np.float64).ravel())
    if z.size == 0:
        raise ValueError("no atoms: cannot place slices on atomic planes")
    groups = np.split(z, np.flatnonzero(np.diff(z) >= merge_angstrom) + 1)
    return np.array([g.mean() for g in groups])


def plane_slice_thicknesses(z_angstrom, cell_height_angstrom: float,
                            merge_angstrom: float = PLANE_MERGE_ANGSTROM) -> tuple[float, ...]:
    """Slice thicknesses [Å] (entrance to exit, summing to ``cell_height_angstrom``) that give every atomic
    plane its own slice, each plane the same depth ``d`` below its slice's entrance.

    abTEM's multislice transmits a slice's whole projected potential at the slice's entrance and then
    propagates over its thickness, so an atom acts as if it sat at its slice's entrance. Uniform slices
    therefore move planes by up to a slice (1 Å slices put the three planes of a 1H layer 1.8 Å and 0.9 Å
    apart instead of t/2 ≈ 1.67 Å). Starting each slice ``d`` above its plane moves every plane by the same
    ``d``: the spacings are exact, and the common shift is a defocus of ``d`` (≤ 1 Å, against a depth of field
    λ/α² ≈ 40 Å). ``d`` is half the smallest plane spacing, so frozen-phonon displacements (rms 0.08 Å) stay
    inside their slice. The first slice is the vacuum above the layer (pure propagation).
    """
    planes = atomic_planes_angstrom(z_angstrom, merge_angstrom)
    height = float(cell_height_angstrom)
    gaps = np.diff(planes)
    depth = 0.5 * float(gaps.min()) if gaps.size else 1.0
    depth = min(depth, float(planes[0]))  # the first slice must not start above the cell
    if planes[0] - depth < 0 or planes[-1] >= height or depth < 0.25:
        raise ValueError(
            f"atomic planes at z = {np.round(planes, 3).tolist()} Å do not fit slices in a cell of height {height:.3f} Å "
            "with room above each plane: use >= 1 Å of vacuum above and below the layer (multislice.vacuum_angstrom)")
    entrances = np.r_[0.0, planes - depth] if planes[0] - depth > 1e-9 else planes - depth
    edges = np.r_[entrances, height]
    return tuple(float(t) for t in np.diff(edges))


def slice_thicknesses(atoms, slicing: str = "planes", slice_thickness_angstrom: float | None = None) -> tuple[float, ...]:
    """Slice thicknesses [Å] of ``atoms`` (ase Atoms, orthogonal cell, z along the beam) for a ``slicing`` rule:
    ``planes`` (:func:`plane_slice_thicknesses`) or ``uniform`` (equal slices of at most
    ``slice_thickness_angstrom``, as abTEM divides the cell)."""
    height = float(atoms.cell[2, 2])
    if slicing == "planes":
        if slice_thickness_angstrom is not None:
            raise ValueError("slice_thickness_angstrom is only used with slicing 'uniform'")
        return plane_slice_thicknesses(atoms.positions[:, 2], height)
    if slicing == "uniform":
        if slice_thickness_angstrom is None or not slice_thickness_angstrom > 0:
            raise ValueError(f"slicing 'uniform' needs slice_thickness_angstrom > 0, got {slice_thickness_angstrom!r}")
        n = math.ceil(height / slice_thickness_angstrom)  # as abTEM divides the cell for a scalar thickness
        return (height / n,) * n
    raise ValueError(f"slicing must be one of {SLICINGS}, got {slicing!r}")


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def restore_malloc_thresholds() -> bool:
    """Undo the effect of Dask's ``MALLOC_TRIM_THRESHOLD_`` on this process (glibc only).

    distributed's Nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``; setting it switches off glibc's
    dynamic mmap threshold, so FFTW's scratch buffers are mmapped and page-faulted on every transform. Measured
    here: a (32, 216, 216) complex64 FFT ran 2.3x slower in a worker than in a plain process, and a whole
    simulation task 2x slower. Thresholds of 256 MiB (trim) and 32 MiB (mmap, glibc's own dynamic ceiling)
    restore plain-process speed. Returns False where glibc's ``mallopt`` is not available.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_TRIM_THRESHOLD, 256 << 20) and libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20))
    except (OSError, AttributeError):
        return False


def configure_abtem(device: str, fftw_planning_effort: str) -> None:
    """Process-wide abTEM settings for a worker: one FFTW thread (Dask gives one core per worker),
    reproducible FFT plans, no progress bars, malloc thresholds fit for FFT work."""
    import abtem

    restore_malloc_thresholds()
    abtem.config.set({
        "device": device,
        "fftw.threads": 1,
        "fftw.planning_effort": fftw_planning_effort,
        "diagnostics.progress_bar": False,
    })


def scan_images(source, *, start: tuple[float, float], end: tuple[float, float], n_px: int, endpoint: bool,
                beam_energy_kev: float, gpts: int, convergence_semiangle_mrad: float, detectors: dict[str, dict],
                slicing: str = "planes", slice_thickness_angstrom: float | None = None,
                projection: str = "infinite", parametrization: str = "lobato",
                device: str = "cpu") -> dict[str, np.ndarray]:
    """The one abTEM call of the project: ``source`` (ase Atoms or ``abtem.FrozenPhonons``) scanned on an
    ``n_px`` x ``n_px`` grid from ``start`` to ``end`` [Å], every detector from a single multislice run.

    Returns ``{detector name: (n_px, n_px) float32}`` in fractions of the incident beam, indexed [row, column]
    = [y, x] (abTEM's scan axes are [x, y]; they are transposed here), averaged over frozen phonons.
    Slices follow ``slicing`` (:func:`slice_thicknesses`; for frozen phonons, of the undisplaced atoms);
    ``projection`` is abTEM's: ``infinite`` puts each atom's whole projected potential in the slice holding its
    centre, ``finite`` integrates the 3D potential over each slice (needs slices of ~0.1 Å to converge).
    Raises ``ValueError`` when the grid cannot reach a detector's outer angle (abTEM would truncate).
    """
    import abtem
    import dask

    atoms = source.atoms if isinstance(source, abtem.FrozenPhonons) else source
    thicknesses = slice_thicknesses(atoms, slicing, slice_thickness_angstrom)
    potential = abtem.Potential(source, gpts=(gpts, gpts), slice_thickness=thicknesses,
                                projection=projection, parametrization=parametrization, device=device)
    probe = abtem.Probe(energy=beam_energy_kev * 1e3, semiangle_cutoff=convergence_semiangle_mrad, device=device)
    probe.grid.match(potential)
    reach = min(probe.cutoff_angles)
    for name, det in detectors.items():
        if det["outer_mrad"] > reach:
            raise ValueError(f"{name} outer angle {det['outer_mrad']} mrad is beyond the grid's reach "
                             f"({reach:.0f} mrad at {gpts} gpts, {beam_energy_kev} keV): use a finer grid")
    scan = abtem.GridScan(start=start, end=end, gpts=(n_px, n_px), endpoint=endpoint)
    # The caller is usually a Dask task: run abTEM's own graph here, in this process, not on the cluster.
    with dask.config.set(scheduler="synchronous"):
        potential = potential.build(lazy=False)  # prebuilt once, or it is rebuilt per scan chunk
        measurement = probe.scan(potential, scan=scan, detectors=abtem.FlexibleAnnularDetector()).compute()
        measurement = measurement.reduce_ensemble()  # mean over frozen-phonon configurations (no-op when static)
        images = {}
        for name, det in detectors.items():
            image = measurement.integrate_radial(det["inner_mrad"], det["outer_mrad"])
            images[name] = np.ascontiguousarray(np.asarray(image.array, dtype=np.float32).T)
    for name, image in images.items():
        if image.shape != (n_px, n_px):
            raise RuntimeError(f"{name}: abTEM returned {image.shape}, expected {(n_px, n_px)}")
    return images


def simulate_images(atoms, centre_xy_angstrom, *, beam_energy_kev: float, gpts: int,
                    convergence_semiangle_mrad: float, detectors: dict[str, dict], window: ScanWindow,
                    slicing: str = "planes", slice_thickness_angstrom: float | None = None,
                    projection: str = "infinite", parametrization: str = "lobato",
                    frozen_phonons: int = 0, frozen_phonon_sigma_angstrom: float = 0.08,
                    seed: int = 0, device: str = "cpu") -> dict[str, np.ndarray]:
    """Clean detector images of ``atoms`` on ``window`` around ``centre_xy_angstrom`` (see ``scan_images``);
    ``frozen_phonons`` > 0 averages that many configurations with rms displacement
    ``frozen_phonon_sigma_angstrom``, drawn from ``seed``."""
    import abtem

    if frozen_phonons > 0:
        source = abtem.FrozenPhonons(atoms, num_configs=frozen_phonons, sigmas=frozen_phonon_sigma_angstrom, seed=seed)
    else:
        source = atoms
    half = window.centre_px * window.sampling_angstrom
    cx, cy = centre_xy_angstrom
    return scan_images(source, start=(cx - half, cy - half), end=(cx + half, cy + half), n_px=window.n_px,
                       endpoint=True, beam_energy_kev=beam_energy_kev, gpts=gpts,
                       convergence_semiangle_mrad=convergence_semiangle_mrad, detectors=detectors,
                       slicing=slicing, slice_thickness_angstrom=slice_thickness_angstrom,
                       projection=projection, parametrization=parametrization, device=device)
