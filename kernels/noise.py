"""Detector-noise model and patch extraction. Pure array-in/array-out functions; every random draw comes from
the ``numpy.random.Generator`` the caller passes in.

Image formation of one noisy patch from a clean scan window (fractions of the incident beam):

1. probe-size blur: Gaussian, σ in Å (finite source size, residual aberrations);
2. scan distortion: each scan row shifted along the fast axis by its own offset in pixels (row jitter);
3. shot noise: counts ~ Poisson(dose [e⁻/Å²] × pixel area [Å²] × detected fraction);
4. read noise: additive Gaussian, σ in counts;
4b. display export (only when the config's ``noise.display_export`` is set; off by default, so existing configs
   and stores keep their bytes): what saving a frame as an 8-bit display image does. The black level is the
   image's ``black_clip_fraction`` quantile and the white level its ``1 - white_clip_fraction`` quantile (a
   display survey clips fixed fractions of the pixels); the counts between them are stretched onto [0, 1],
   raised to the palette ``gamma`` and quantised to 0..255. Deterministic given the draw;
5. crop + resample: the patch of side √3·a around the column (plus a sub-pixel offset of the centre, in pixels)
   is sampled bilinearly onto the fixed ``patch_size_px`` grid (``contract.patches.extract_patch``).

Images are indexed [row, column] = [y, x] here; the fast scan axis is x (columns).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from contract.patches import extract_patch


DISPLAY_EXPORT_KEYS = ("black_clip_fraction", "white_clip_fraction", "gamma")
"""Ranges of ``noise.display_export``, drawn in this order after the other noise values."""
DISPLAY_GREY_LEVELS = 256  # 8-bit export
DISPLAY_EXPORT_RANGES = {
    "black_clip_fraction": [0.0, 0.2],  # 0 % up to the 17-18 % of low-dose JEOL exports (docs/frame-matching.md, 3)
    "white_clip_fraction": [0.0, 0.01],  # a survey's top 0-1 % saturated
    "gamma": [0.7, 1.4],  # linear palettes and grey gamma palettes either side of 1
}
"""Ranges spanning what display exports do: the ``display_export`` of a frame-matched config starts from these."""


@dataclass(frozen=True)
class DisplayDraw:
    """One display export: fractions of the image's pixels clipped at black and at white, palette gamma."""

    black_clip_fraction: float
    white_clip_fraction: float
    gamma: float


@dataclass(frozen=True)
class NoiseDraw:
    """The noise parameters of one patch (units in the names)."""

    probe_blur_sigma_angstrom: float
    dose_e_per_angstrom2: float
    read_noise_counts: float
    scan_jitter_px: float
    centre_offset_px: tuple[float, float]  # (dy, dx)
    display: DisplayDraw | None = None  # None: counts are kept (the default)

    def as_dict(self) -> dict:
        out = asdict(self)
        if self.display is None:
            del out["display"]  # records of draws without the step keep their bytes
        return out


def draw_noise(rng: np.random.Generator, ranges: dict) -> NoiseDraw:
    """Draw one patch's noise parameters uniformly from the config's ``noise`` ranges."""
    u = lambda key: float(rng.uniform(*ranges[key]))  # noqa: E731 - fixed draw order keeps runs reproducible
    blur, dose, read, jitter = (u(k) for k in ("probe_blur_sigma_angstrom", "dose_e_per_angstrom2",
                                               "read_noise_counts", "scan_jitter_px"))
    radius, angle = u("centre_offset_px"), float(rng.uniform(0, 2 * np.pi))
    display = None
    if ranges.get("display_export"):  # drawn last: configs without the step keep their draws
        export = ranges["display_export"]
        display = DisplayDraw(*(float(rng.uniform(*export[k])) for k in DISPLAY_EXPORT_KEYS))
    return NoiseDraw(blur, dose, read, jitter, (radius * np.sin(angle), radius * np.cos(angle)), display)


def probe_blur(image: np.ndarray, sigma_angstrom: float, pixel_size_angstrom: float) -> np.ndarray:
    """Gaussian blur of a (H, W) image with σ given in Å."""
    if sigma_angstrom <= 0:
        return image.astype(np.float64, copy=True)
    return ndimage.gaussian_filter(image.astype(np.float64), sigma_angstrom / pixel_size_angstrom, mode="nearest")


def scan_jitter(image: np.ndarray, row_shifts_px: np.ndarray) -> np.ndarray:
    """Shift each row of a (H, W) image along x by ``row_shifts_px[row]`` pixels (linear interpolation,
    edge values held): the probe of row r sat at x + shift[r] while the pixel was recorded at x."""
    h, w = image.shape
    if row_shifts_px.shape != (h,):
        raise ValueError(f"row_shifts_px must have shape ({h},), got {row_shifts_px.shape}")
    x = np.arange(w, dtype=np.float64)
    return np.stack([np.interp(x + s, x, row) for row, s in zip(image, row_shifts_px)])


def shot_noise(fraction: np.ndarray, dose_e_per_angstrom2: float, pixel_size_angstrom: float,
               rng: np.random.Generator) -> np.ndarray:
    """Detector counts: Poisson with mean dose × pixel area × detected fraction of the beam."""
    if dose_e_per_angstrom2 <= 0:
        raise ValueError(f"dose_e_per_angstrom2 must be > 0, got {dose_e_per_angstrom2}")
    electrons_per_pixel = dose_e_per_angstrom2 * pixel_size_angstrom**2
    return rng.poisson(np.clip(fraction, 0, None) * electrons_per_pixel).astype(np.float64)


def read_noise(counts: np.ndarray, sigma_counts: float, rng: np.random.Generator) -> np.ndarray:
    return counts + rng.normal(0.0, sigma_counts, size=counts.shape) if sigma_counts > 0 else counts


def display_export(counts: np.ndarray, display: DisplayDraw) -> np.ndarray:
    """Step 4b on a (H, W) image of counts: float64 grey values 0..255 (integers). Pixels at or below the
    black level become 0, at or above the white level 255."""
    black, white = np.quantile(counts, [display.black_clip_fraction, 1.0 - display.white_clip_fraction])
    # integer counts tie at the level: clip the tied pixels or not, whichever comes nearer the drawn fraction
    below = counts[counts < black]
    if below.size and abs(below.size / counts.size - display.black_clip_fraction) < \
            abs(np.mean(counts <= black) - display.black_clip_fraction):
        black = float(below.max())
    above = counts[counts > white]
    if above.size and abs(above.size / counts.size - display.white_clip_fraction) < \
            abs(np.mean(counts >= white) - display.white_clip_fraction):
        white = float(above.min())
    if not white > black:  # a flat image: everything at black
        return np.zeros_like(counts, dtype=np.float64)
    stretched = np.clip((counts - black) / (white - black), 0.0, 1.0) ** display.gamma
    return np.round(stretched * (DISPLAY_GREY_LEVELS - 1))


def noisy_counts(clean: np.ndarray, draw: NoiseDraw, *, pixel_size_angstrom: float,
                 rng: np.random.Generator) -> np.ndarray:
    """Steps 1-4 (and 4b when ``draw.display`` is set) on a clean (H, W) image (fractions of the beam): float64
    counts, or grey values 0..255 after a display export. Draw order: row jitter, Poisson, read noise
    (``draw.centre_offset_px`` is not used here; the display export draws nothing)."""
    image = probe_blur(clean, draw.probe_blur_sigma_angstrom, pixel_size_angstrom)
    image = scan_jitter(image, rng.uniform(-draw.scan_jitter_px, draw.scan_jitter_px, size=image.shape[0]))
    counts = shot_noise(image, draw.dose_e_per_angstrom2, pixel_size_angstrom, rng)
    counts = read_noise(counts, draw.read_noise_counts, rng)
    return counts if draw.display is None else display_export(counts, draw.display)


def noisy_image(clean: np.ndarray, *, pixel_size_angstrom: float, probe_blur_sigma_angstrom: float,
                scan_jitter_px: float, dose_e_per_angstrom2: float, read_noise_counts: float,
                rng: np.random.Generator, display: DisplayDraw | None = None) -> np.ndarray:
    """The patch noise model (``noisy_counts``) on a whole (H, W) image. Returns float32 counts, or
    grey values 0..255 with a ``display`` export."""
    draw = NoiseDraw(probe_blur_sigma_angstrom, dose_e_per_angstrom2, read_noise_counts, scan_jitter_px, (0.0, 0.0),
                     display)
    return noisy_counts(clean, draw, pixel_size_angstrom=pixel_size_angstrom, rng=rng).astype(np.float32)


def noisy_patch(clean: np.ndarray, draw: NoiseDraw, *, pixel_size_angstrom: float, centre_px: float,
                half_width_px: float, patch_size_px: int, rng: np.random.Generator) -> np.ndarray:
    """One noisy (P, P) float32 patch, in counts, from a clean (H, W) window whose column sits on pixel
    (centre_px, centre_px): ``noisy_counts``, then step 5."""
    counts = noisy_counts(clean, draw, pixel_size_angstrom=pixel_size_angstrom, rng=rng)
    centre = (centre_px + draw.centre_offset_px[0], centre_px + draw.centre_offset_px[1])
    return extract_patch(counts, centre, half_width_px, patch_size_px)


def clean_patch(clean: np.ndarray, *, centre_px: float, half_width_px: float, patch_size_px: int) -> np.ndarray:
    """The noiseless patch (fractions of the beam) on the same grid, no blur, no offset."""
    return extract_patch(clean.astype(np.float64), (centre_px, centre_px), half_width_px, patch_size_px)
