"""Reading micrographs and the metadata their files hold: one reader for every stage that opens an image
(``inference classify``, ``features symmetry``, ``labelling add``, ``rvae fit-image``).

Formats: ``.npy`` (metadata from a ``<name>.json`` beside it, as ``simulate fullfield`` writes), ``.tif``/
``.tiff`` (``tifffile`` with ``imagecodecs``: uncompressed, LZW, deflate, zstd or PackBits; grey, palette (indices
mapped through the palette), RGB with equal channels, min-is-white; a JSON ImageDescription, FEI/Thermo metadata,
DigitalMicrograph's private tags, or ImageJ/TIFF resolution tags with a length unit) and ``.dm3``/``.dm4``/
``.emd`` (Velox and Berkeley) through ``rosettasciio``.

What the values are goes in ``ImageFile.intensity`` with a note: ``display`` (8-bit, palette or grey-RGB
exports: grey levels, not counts), ``normalised`` (floats within [-1, 1]) or ``raw``. docs/real-frames.md lists
the real frames these variants were checked on.

What is read from a file, and where (every value keeps its source, a tag path, for ``summary.json``):

==================  ==========================================================================================
value               tags
==================  ==========================================================================================
pixel size          the calibrated axes (scale and unit) of dm3/dm4/emd; FEI ``Scan/PixelWidth``; in a TIFF the
                    DM tag tree of tag 65027 (``ImageData/Calibrations`` of the image of the TIFF's shape), else
                    DM tags 65010/65004 (x scale, unit), else ImageJ resolution and unit (``unit=micron``,
                    escaped ``\u00B5m``); ``pixel_size_angstrom`` in a JSON description or sidecar. A file's
                    pixel size is checked against the lattice at classification (``inference.calibration``)
beam energy         dm3/dm4 (and the TIFF tag-65027 tree) ``ImageTags/Microscope Info/Voltage`` (V) or its
                    ``Formatted Voltage`` ("60kV"); Velox ``Optics/AccelerationVoltage``; FEI ``Beam/HV``/
                    ``EBeam/HV``; rosettasciio's mapped ``Acquisition_instrument/TEM/beam_energy``
detector            tags that name it (``Detector``, ``DetectorName``, ``Signal Name``, the saved name, the
                    title): a name is mapped to HAADF or MAADF only when unambiguous (HAADF, MAADF/MADF);
                    ADF, DF, DF2, ... are not (``--detector`` then), and two different names are not either
==================  ==========================================================================================

Damaged or wrong files end in ``InputError`` naming the file and what is wrong, never in a reader's traceback;
sizes are checked from the header before any pixel is read (a corrupt header declaring a 10^10-pixel image
must not allocate it).
"""
from __future__ import annotations

import io
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .context import DETECTOR_NAMES
from .errors import InputError

_UNIT_TO_ANGSTROM = {"nm": 10.0, "nanometer": 10.0, "nanometre": 10.0, "Å": 1.0, "A": 1.0, "angstrom": 1.0,
                     "pm": 0.01, "um": 1e4, "µm": 1e4, "micron": 1e4, "m": 1e10}
CONTEXT_KEYS = ("host", "dopant", "beam_energy_kev", "detector")
META_KEYS = ("pixel_size_angstrom", *CONTEXT_KEYS)
FORMATS = (".npy", ".tif", ".tiff", ".dm3", ".dm4", ".emd")

__all__ = ["MAX_IMAGE_PIXELS", "ImageFile", "check_image", "read_image", "load_image", "detector_from_names"]


MAX_IMAGE_PIXELS = 8192 * 8192
"""Largest image accepted (67 Mpx, ~0.5 GiB as float64): larger frames should be cropped or binned first."""


def check_image(image) -> np.ndarray:
    """A 2-D finite float64 copy of ``image``, or ``ValueError`` saying why not."""
    arr = np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"image must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"image must be 2-D (rows, columns), got {arr.ndim}-D with shape {arr.shape}")
    if min(arr.shape) < 16:
        raise ValueError(f"image is too small ({arr.shape[0]} x {arr.shape[1]} px): need at least 16 x 16 pixels")
    if arr.size > MAX_IMAGE_PIXELS:
        raise ValueError(f"image is too large ({arr.shape[0]} x {arr.shape[1]} px, limit {MAX_IMAGE_PIXELS} px): "
                         "crop or bin it first")
    if np.iscomplexobj(arr):
        raise ValueError(f"image holds complex numbers ({arr.dtype}): save the intensity (e.g. its modulus)")
    if arr.dtype == bool:
        raise ValueError("image holds booleans (a mask?), not intensities")
    if arr.dtype == np.int8:
        raise ValueError("image holds signed 8-bit integers (int8), which cannot hold detector counts without "
                         "wrapping: save it as uint8, uint16 or float")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ValueError(f"image holds {int(bad.sum())} NaN or infinite pixel(s), first at (row {r}, col {c})")
    if arr.max() == arr.min():
        raise ValueError("image is constant: no lattice to find")
    # the lattice is measured by an autocorrelation (sums of squared pixels over the frame): values so large or a
    # contrast so small that those sums overflow or underflow float64 are refused here, named as what they are
    peak, contrast = float(np.abs(arr).max()), float(arr.max() - arr.min())
    if peak > np.sqrt(np.finfo(np.float64).max / arr.size):
        raise ValueError(f"image values reach {peak:.3g}: squared and summed over the frame they overflow float64; "
                         "rescale the image (e.g. to detector counts)")
    if contrast < np.sqrt(np.finfo(np.float64).tiny) * 1e3:
        raise ValueError(f"image contrast is only {contrast:.3g}: squared it underflows float64; rescale the image "
                         "(e.g. to detector counts)")
    if contrast < peak * FLOAT32_LEVELS_FRACTION:  # patches are float32: the contrast must survive the offset
        raise ValueError(f"image contrast ({contrast:.3g}) is below float32 resolution at its offset ({peak:.3g}): "
                         "subtract the offset (e.g. the dark level) first")
    return arr


FLOAT32_LEVELS_FRACTION = 2.0 ** -16
"""Smallest contrast / peak value accepted: float32 patches (24-bit mantissa) then keep at least 2⁸ grey levels
across the contrast (an offset of 1e12 on counts of 1e3 would leave none)."""


@dataclass
class ImageFile:
    """An image and what its file says: ``values`` (keys of ``META_KEYS`` that were found), ``sources``
    (key -> where it was read, e.g. ``dm3 tag ImageList/TagGroup0/ImageTags/Microscope Info/Voltage =
    60000.0``), ``notes`` (what was found but not used, e.g. an ambiguous detector name)."""

    image: np.ndarray
    values: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    intensity: str = "raw"
    """What the pixel values are: ``display`` (grey levels of a display export: 8-bit, palette or grey RGB; not
    detector counts, probably contrast-stretched and clipped), ``normalised`` (floats within [0, 1] or [-1, 1]), or
    ``raw`` (anything else: counts, or processed in ways the file does not say). A note says why."""


def load_image(path) -> tuple[np.ndarray, dict]:
    """``(image (H, W) float64, metadata dict)`` with the ``META_KEYS`` found in the file (``read_image`` also
    gives their sources). Raises ``InputError`` naming the reason."""
    f = read_image(path)
    return f.image, dict(f.values)


def read_image(path) -> ImageFile:
    """Read an image file of a supported format; ``InputError`` for anything that is not one good 2-D image."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {path} does not exist" if not path.exists() else f"{path} is not a file")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{path.name}: unsupported format {suffix!r}; use .npy, .tif, .dm3, .dm4 or .emd")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name}: the file is empty (0 bytes)")
    reader = {".npy": _read_npy, ".tif": _read_tiff, ".tiff": _read_tiff, ".dm3": _read_dm, ".dm4": _read_dm,
              ".emd": _read_emd}[suffix]
    try:
        data, found = reader(path)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{path.name}: not enough memory to read the image (is its header corrupt?)") from None
    except (EOFError, struct.error):
        raise InputError(f"{path.name}: the file ends early or its structure is corrupt (a {suffix} file cut short or "
                         "damaged?)") from None
    except Exception as err:  # any reader failure on a damaged or foreign file
        raise InputError(f"{path.name}: cannot read it as a {suffix} image ({type(err).__name__}: "
                         f"{_short(err)}): is the file complete and of this format?") from None
    try:
        image = check_image(data)
    except ValueError as err:
        raise InputError(f"{path.name}: {err}") from None
    out = ImageFile(image)
    out.intensity = found.pop("intensity", (None, None))[0]
    if out.intensity is None:  # what the reader did not decide, the data type and range do
        out.intensity, note = _intensity_kind(np.asarray(data))
        out.notes.extend([note] if note else [])
    for key, (value, source) in found.items():
        if key == "notes":
            out.notes.extend(value)
        elif key in META_KEYS and value is not None:
            out.values[key] = value
            out.sources[key] = source
    return out


def _short(err, n: int = 160) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= n else text[:n] + "..."


def _check_declared(path: Path, shape, dtype) -> None:
    """Refuse, before reading pixels, a declared shape that is not one image or too large."""
    shape = tuple(int(s) for s in shape)
    dtype = np.dtype(dtype)
    if dtype.hasobject or dtype.fields is not None:
        raise InputError(f"{path.name}: holds {dtype} records, not pixel values")
    n = int(np.prod(shape, dtype=object)) if shape else 1
    if len(shape) != 2:
        raise InputError(f"{path.name}: image must be 2-D (rows, columns), the file declares shape {shape}")
    if n > MAX_IMAGE_PIXELS:
        raise InputError(f"{path.name}: declares a {shape[0]} x {shape[1]} image ({n} px), over the limit of "
                         f"{MAX_IMAGE_PIXELS} px: crop or bin it first (or the header is corrupt)")


def _read_npy(path: Path):
    with open(path, "rb") as fh:
        try:
            version = np.lib.format.read_magic(fh)
            header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)(fh)
        except Exception as err:
            raise InputError(f"{path.name}: not a NumPy .npy file ({_short(err)})") from None
        shape, _, dtype = header
        _check_declared(path, shape, dtype)
        need = fh.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if path.stat().st_size < need:
        raise InputError(f"{path.name}: the file is truncated ({path.stat().st_size} of {need} bytes)")
    data = np.load(path, allow_pickle=False)
    found = {}
    side = path.with_suffix(".json")
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise InputError(f"{side.name}: not valid JSON ({_short(err)})") from None
        if isinstance(meta, dict):
            found = {k: (meta[k], f"{side.name}: {k}") for k in META_KEYS if meta.get(k) is not None}
    return data, found


def _read_tiff(path: Path):
    import tifffile  # deferred: only TIFF files need it (~0.3 s; labelling --help imports this module)

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise InputError(f"{path.name}: the TIFF holds no image")
        series = tif.series[0]
        page = tif.pages[0]
        colour = page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR) and \
            page.samplesperpixel in (3, 4)
        shape = tuple(s for s in series.shape if s != 1) if len(series.shape) > 2 else series.shape
        _check_declared(path, shape[:2] if colour and len(shape) == 3 else shape, series.dtype)
        data = series.asarray().reshape(shape)
        found: dict = {}
        data, intensity, notes = _tiff_grey_levels(path, page, data)
        if intensity:
            found["intensity"] = (intensity, "TIFF")
        desc = page.tags.get("ImageDescription")
        if desc is not None:
            try:
                parsed = json.loads(desc.value)
            except (ValueError, TypeError):
                parsed = None
            if isinstance(parsed, dict):
                found.update({k: (parsed[k], f"TIFF ImageDescription JSON: {k}") for k in META_KEYS
                              if parsed.get(k) is not None})
        for more in (_fei_values(tif.fei_metadata, found) if tif.fei_metadata else {},
                     _tiff_dm_values(page, data.shape)):
            notes.extend(more.pop("notes", ([], None))[0])
            for key, value in more.items():
                found.setdefault(key, value)
        ij = tif.imagej_metadata or {}
        unit = _IMAGEJ_UNITS.get(ij.get("unit"), ij.get("unit"))
        xres = page.tags.get("XResolution")
        if "pixel_size_angstrom" not in found and unit in _UNIT_TO_ANGSTROM and xres is not None:
            num, den = xres.value
            if num > 0 and den > 0:
                found["pixel_size_angstrom"] = (den / num * _UNIT_TO_ANGSTROM[unit],
                                                f"ImageJ scale: TIFF XResolution {num}/{den} px per {unit}")
    found["notes"] = (notes, None)
    return data, found


_IMAGEJ_UNITS = {"\\u00B5m": "µm", "\\u00c5": "Å", "\\u00C5": "Å", "micron": "µm", "microns": "µm"}
"""ImageJ writes non-ASCII units escaped in its ImageDescription (``unit=\\u00B5m``)."""

DISPLAY = "display"
NORMALISED = "normalised"
RAW = "raw"


def _tiff_grey_levels(path: Path, page, data: np.ndarray) -> tuple[np.ndarray, str | None, list]:
    """``(grey levels, DISPLAY or None, notes)`` of a TIFF's pixels: palette indices through the palette, equal
    colour channels as one, min-is-white inverted; ``DISPLAY`` for palette and colour exports (None leaves the
    decision to ``_intensity_kind``)."""
    import tifffile  # deferred: only TIFF files need it (~0.3 s; labelling --help imports this module)

    notes, kind = [], None
    photometric = page.photometric
    if photometric == tifffile.PHOTOMETRIC.PALETTE:
        cmap = page.colormap
        if cmap is None:
            raise InputError(f"{path.name}: a palette TIFF without its colour map")
        cmap = np.asarray(cmap, dtype=np.float64)
        if cmap.ndim == 1:
            cmap = np.stack([cmap] * 3)
        if np.ptp(cmap, axis=0).max() > 0.01 * max(cmap.max(), 1):
            raise InputError(f"{path.name}: a palette TIFF with a colour (not grey) palette: intensities cannot be "
                             "recovered from false colour; export the grey image")
        data = cmap[0][np.clip(data.astype(np.int64), 0, cmap.shape[1] - 1)]
        kind = DISPLAY
        notes.append(f"palette TIFF: {page.bitspersample}-bit indices mapped through its grey palette (which may "
                     "carry a display gamma): display grey levels, not detector counts")
    elif photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR) and data.ndim == 3 \
            and data.shape[-1] in (3, 4):
        rgb = data[..., :3]
        if (rgb != rgb[..., :1]).any():
            raise InputError(f"{path.name}: a colour (RGB) image with different channels, e.g. a false-colour "
                             "export: intensities cannot be recovered; export the grey image")
        data = rgb[..., 0]
        kind = DISPLAY
        notes.append("RGB TIFF with equal channels read as one grey channel: display grey levels, not detector "
                     "counts")
    if photometric == tifffile.PHOTOMETRIC.MINISWHITE:
        data = (np.iinfo(data.dtype).max if np.issubdtype(data.dtype, np.integer) else data.max()) - data
        notes.append("min-is-white TIFF: grey levels inverted so that columns are bright")
    return data, kind, notes


def _intensity_kind(data: np.ndarray) -> tuple[str, str | None]:
    """``(kind, note)`` from the values alone: 8-bit integers are display data, floats within [-1, 1] normalised,
    anything else raw."""
    if data.dtype == np.uint8:
        black, white = 100 * float((data == 0).mean()), 100 * float((data == 255).mean())
        return DISPLAY, (f"8-bit image: display data (grey levels 0-255, probably contrast-stretched; {black:.1f} % "
                         f"of the pixels at 0 and {white:.1f} % at 255, clipped), not detector counts")
    if np.issubdtype(data.dtype, np.floating) and data.size:
        lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
        if -1.0 <= lo and hi <= 1.0:
            return NORMALISED, (f"floating-point values within [{lo:.3g}, {hi:.3g}]: normalised data, not "
                                "detector counts")
    return RAW, None


DM_TIFF_TAG_TREE = 65027
"""Private TIFF tag in which DigitalMicrograph's TIFF export keeps the image's whole DM tag tree (the same tree as
a .dm3 file's: ImageList, ImageTags/Microscope Info, Calibrations); 65003/65004 (units) and 65009/65010 (scales)
hold the axis calibration alone."""


def _tiff_dm_values(page, shape) -> dict:
    """Pixel size, beam energy and detector from DigitalMicrograph's private TIFF tags (the tag tree of tag
    65027, else the axis calibration of tags 65003/65009)."""
    out: dict = {}
    tree = page.tags.get(DM_TIFF_TAG_TREE)
    if tree is not None:
        try:
            tags = _dm_tag_tree(tree.value)
        except Exception as err:  # a damaged or unknown tree: the pixels are still good
            return {"notes": ([f"TIFF tag {DM_TIFF_TAG_TREE} (DigitalMicrograph tags) could not be read "
                               f"({type(err).__name__}: {_short(err, 80)}): calibration and context not taken "
                               "from it"], None)}
        out.update(_dm_tag_values(list(_walk(tags)), f"TIFF tag {DM_TIFF_TAG_TREE} DM", shape))
        out.update(_detector(out.pop("detector_names")[0]))
    if "pixel_size_angstrom" not in out:
        for scale_code, unit_code in ((65010, 65004), (65009, 65003)):
            scale, unit = page.tags.get(scale_code), page.tags.get(unit_code)
            if scale is None or unit is None:
                continue
            value, u = _number(_scalar(scale.value)), str(_scalar(unit.value)).strip("\x00 ")
            if value and u in _UNIT_TO_ANGSTROM:
                out["pixel_size_angstrom"] = (value * _UNIT_TO_ANGSTROM[u], f"DigitalMicrograph TIFF tags "
                                              f"{scale_code}/{unit_code}: scale {value:g} {u}")
                break
    return out


def _scalar(value):
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (tuple, list, np.ndarray)) and len(value) == 1:
        return value[0]
    return value


def _dm_tag_tree(raw) -> dict:
    """The DM tag tree held by TIFF tag 65027: with a .dm3/.dm4 header (version, size, byte order) or as the bare
    root tag group; read by rosettasciio's DigitalMicrograph tag parser."""
    from rsciio.digitalmicrograph._api import DigitalMicrographReader  # deferred: heavy (~1.5 s), DM tags only

    raw = bytes(raw) if not isinstance(raw, bytes) else raw
    reader = DigitalMicrographReader(io.BytesIO(raw))
    if struct.unpack(">l", raw[:4])[0] in (3, 4):
        reader.parse_file()  # fills tags_dict itself, beside an empty "root"
        return {k: v for k, v in reader.tags_dict.items() if k != "root"}
    reader.dm_version, reader.endian = 3, "little"
    tags: dict = {}
    reader.parse_tags(reader.parse_tag_group()[2], group_name="root", group_dict=tags)
    return tags


def _fei_values(fei: dict, found: dict) -> dict:
    """Pixel size, beam energy and detector from FEI/Thermo TIFF metadata (``tifffile.TiffFile.fei_metadata``)."""
    out = {}
    scan = fei.get("Scan", {})
    if "pixel_size_angstrom" not in found and _number(scan.get("PixelWidth")):
        out["pixel_size_angstrom"] = (_number(scan["PixelWidth"]) * 1e10, f"FEI Scan/PixelWidth = {scan['PixelWidth']} m")
    for group in ("Beam", "EBeam"):
        hv = _number(fei.get(group, {}).get("HV"))
        if hv and "beam_energy_kev" not in found:
            out["beam_energy_kev"] = (hv / 1000, f"FEI {group}/HV = {fei[group]['HV']} V")
            break
    names = [(f"FEI Detectors/{k}", str(v)) for k, v in fei.get("Detectors", {}).items() if k in ("Name", "Mode")]
    if "detector" not in found:
        det, source, note = detector_from_names(names)
        if det:
            out["detector"] = (det, source)
        if note:
            out["notes"] = ([note], None)
    return out


def _number(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None


_DETECTOR_PATTERNS = (("HAADF", re.compile(r"(?<![A-Z])HAADF(?![A-Z])")),
                      ("MAADF", re.compile(r"(?<![A-Z])MA?ADF(?![A-Z])")))
_AMBIGUOUS = re.compile(r"(?<![A-Z])(LAADF|ADF|DF\d*)(?![A-Z])")


def detector_from_names(names) -> tuple[str | None, str | None, str | None]:
    """(detector, source, note) from ``[(tag path, text), ...]``: HAADF or MAADF when every text that names a
    detector names that one; None and a note when a text names only an ambiguous detector (ADF, DF2, ...)
    or texts disagree."""
    hits, vague = {}, []
    for where, text in names:
        up = str(text).upper()
        matched = False
        for det, pat in _DETECTOR_PATTERNS:
            if pat.search(up):
                hits.setdefault(det, f"{where} = {text}")
                matched = True
        if not matched and _AMBIGUOUS.search(up):
            vague.append(f"{where} = {text}")
    if len(hits) == 1:
        det, source = next(iter(hits.items()))
        return det, source, None
    if len(hits) > 1:
        return None, None, "the file names different detectors (" + "; ".join(hits.values()) + "): give --detector"
    if vague:
        return None, None, (f"the file names a detector ({vague[0]}) that is not unambiguously "
                            f"{' or '.join(DETECTOR_NAMES)}: give --detector")
    return None, None, None


def _walk(tree, prefix=""):
    """(path, value) of every leaf of a nested dict."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _walk(v, f"{prefix}/{k}" if prefix else str(k))
    else:
        yield prefix, tree


def _signal(path: Path, signals: list):
    """The first 2-D signal of an rsciio reader's list (a stack or spectrum is refused)."""
    if not signals:
        raise InputError(f"{path.name}: no image in the file")
    for sig in signals:
        shape = tuple(sig["data"].shape)
        if len(shape) == 2:
            _check_declared(path, shape, sig["data"].dtype)
            return sig
    shapes = ", ".join(str(tuple(s["data"].shape)) for s in signals)
    raise InputError(f"{path.name}: no 2-D image in the file (datasets of shape {shapes}): save one frame")


def _axes_pixel_size(sig, fmt: str):
    axes = sig.get("axes", [])
    if axes:
        unit, scale = str(axes[-1].get("units", "")), axes[-1].get("scale")
        if unit in _UNIT_TO_ANGSTROM and _number(scale) and (len(axes) < 2 or axes[0].get("units") == unit):
            return (float(scale) * _UNIT_TO_ANGSTROM[unit], f"{fmt} calibration: x axis scale {float(scale):g} {unit}")
    return None


def _read_dm(path: Path):
    from rsciio.digitalmicrograph import file_reader  # deferred: heavy (~1.5 s), .dm3/.dm4 only

    fmt = path.suffix.lower()[1:]
    sig = _signal(path, file_reader(str(path), lazy=True))
    data = np.asarray(sig["data"])
    found = {}
    px = _axes_pixel_size(sig, fmt)
    if px:
        found["pixel_size_angstrom"] = px
    found.update(_dm_tag_values(list(_walk(sig.get("original_metadata", {}))), f"{fmt} tag"))
    if "beam_energy_kev" not in found:
        found.update(_mapped_energy(sig, fmt))
    title = sig.get("metadata", {}).get("General", {}).get("title", "")
    found.update(_detector(found.pop("detector_names", ([], None))[0] + [(f"{fmt} title", title)]))
    return data, found


def _dm_tag_values(leaves, where_prefix: str, shape=None) -> dict:
    """Beam energy (``Microscope Info/Voltage`` in V, else ``Formatted Voltage``), the names that may name the
    detector (``detector_names``, for ``_detector``) and, with ``shape`` given, the pixel size of the image of
    that shape in ``ImageList`` (its ``ImageData/Calibrations``), from a DM tag tree's ``(path, value)`` leaves."""
    found: dict = {}
    for where, value in leaves:
        if where.endswith("Microscope Info/Voltage") and _number(value):
            found["beam_energy_kev"] = (_number(value) / 1000, f"{where_prefix} {where} = {value}")
            break
    if "beam_energy_kev" not in found:
        for where, value in leaves:
            m = re.fullmatch(r"\s*([\d.]+)\s*kV\s*", str(value)) if where.endswith("Formatted Voltage") else None
            if m and _number(m.group(1)):
                found["beam_energy_kev"] = (float(m.group(1)), f"{where_prefix} {where} = {value}")
                break
    names = [(f"{where_prefix} {w}", v) for w, v in leaves
             if re.search(r"(Detector|Signal Name|saved as|/Name)$", w) and isinstance(v, str) and "ImageTags" in w]
    names.sort(key=lambda wv: not wv[0].endswith("Detector"))  # a tag named Detector is the best source
    found["detector_names"] = (names, None)
    if shape is not None:
        px = _dm_tree_pixel_size(dict(leaves), shape, where_prefix)
        if px:
            found["pixel_size_angstrom"] = px
    return found


def _dm_tree_pixel_size(leaves: dict, shape, where_prefix: str):
    """(Å, source) from the x-axis calibration of the ImageList image whose dimensions are ``shape`` (a DM tree
    also holds a thumbnail), or None."""
    groups = sorted({w.split("/ImageData/")[0] for w in leaves if "/ImageData/Dimensions/" in w})
    for g in groups:
        dims = [leaves.get(f"{g}/ImageData/Dimensions/Data{i}") for i in (0, 1)]
        if dims != [shape[1], shape[0]]:
            continue
        base = f"{g}/ImageData/Calibrations/Dimension/TagGroup0"
        scale, unit = _number(leaves.get(f"{base}/Scale")), str(leaves.get(f"{base}/Units", "")).strip()
        if scale and unit in _UNIT_TO_ANGSTROM:
            return scale * _UNIT_TO_ANGSTROM[unit], f"{where_prefix} {base}/Scale = {scale:g} {unit}"
    return None


def _read_emd(path: Path):
    from rsciio.emd import file_reader  # deferred: ~0.4 s, .emd only

    sig = _signal(path, file_reader(str(path), lazy=True))
    data = np.asarray(sig["data"])
    found = {}
    px = _axes_pixel_size(sig, "emd")
    if px:
        found["pixel_size_angstrom"] = px
    leaves = list(_walk(sig.get("original_metadata", {})))
    for where, value in leaves:
        if re.search(r"(AccelerationVoltage|HighTension|Voltage)$", where) and "Extractor" not in where \
                and _number(value) and _number(value) > 1000:
            found["beam_energy_kev"] = (_number(value) / 1000, f"emd {where} = {value} V")
            break
    if "beam_energy_kev" not in found:
        found.update(_mapped_energy(sig, "emd"))
    title = sig.get("metadata", {}).get("General", {}).get("title", "")
    names = [("emd title", title)]  # Velox: the signal's own detector; the Detectors list names every one
    found.update(_detector(names))
    return data, found


def _mapped_energy(sig, fmt) -> dict:
    e = _number(sig.get("metadata", {}).get("Acquisition_instrument", {}).get("TEM", {}).get("beam_energy"))
    return {"beam_energy_kev": (e, f"{fmt} Acquisition_instrument/TEM/beam_energy = {e} keV")} if e else {}


def _detector(names) -> dict:
    det, source, note = detector_from_names([(w, v) for w, v in names if v])
    out = {}
    if det:
        out["detector"] = (det, source)
    if note:
        out["notes"] = ([note], None)
    return out
