"""The TIFF variants real frames come in, read by ``contract.images`` (the one reader of every stage): LZW/deflate
compression, palette images, 8-bit display exports, colour exports, DigitalMicrograph's tag tree in TIFF tag 65027
and its private scale tags, ImageJ scales. Files are written here by tifffile (and ``tests/dm_writer.py`` for the
DM tag tree); one test re-exports the real temul-toolkit MoS2 .dm3 as DigitalMicrograph would."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile

from contract.errors import InputError
from contract.images import DM_TIFF_TAG_TREE, read_image
from tests.dm_writer import write_dm


def _lattice(shape=(64, 80), seed=0) -> np.ndarray:
    """Smooth, non-constant test pixels (uint16 counts)."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    noise = np.random.default_rng(seed).integers(0, 50, shape)
    return (1000 + 800 * np.cos(x / 2.1) * np.cos(y / 1.7) + noise).astype(np.uint16)


@pytest.mark.parametrize("compression", ["lzw", "deflate", "zstd", "packbits"])
def test_compressed_tiffs_read_pixel_for_pixel(tmp_path, compression):
    """DigitalMicrograph and ImageJ exports come LZW- or deflate-compressed: imagecodecs decodes them."""
    image = _lattice()
    tifffile.imwrite(tmp_path / "c.tif", image, compression=compression)
    assert tifffile.TiffFile(tmp_path / "c.tif").pages[0].compression != 1
    f = read_image(tmp_path / "c.tif")
    assert np.array_equal(f.image, image.astype(float))
    assert f.intensity == "raw" and not f.notes


def test_palette_tiff_gives_grey_levels_through_its_palette(tmp_path):
    """A palette export holds indices; the grey level of index i is palette[i] (here a gamma 0.5 grey ramp)."""
    idx = (_lattice() // 16 % 256).astype(np.uint8)
    ramp = (65535 * (np.arange(256) / 255) ** 0.5).astype(np.uint16)
    tifffile.imwrite(tmp_path / "p.tif", idx, photometric="palette", colormap=np.stack([ramp] * 3),
                     compression="lzw")
    f = read_image(tmp_path / "p.tif")
    assert np.array_equal(f.image, ramp[idx].astype(float))  # not the indices
    assert f.intensity == "display" and any("palette" in n and "not detector counts" in n for n in f.notes)


def test_colour_palette_and_colour_rgb_are_refused_grey_rgb_read(tmp_path):
    idx = (_lattice() % 256).astype(np.uint8)
    cmap = np.stack([np.arange(256), np.arange(256)[::-1], np.zeros(256)]).astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "false.tif", idx, photometric="palette", colormap=cmap)
    with pytest.raises(InputError, match="colour .not grey. palette"):
        read_image(tmp_path / "false.tif")
    rgb = np.stack([idx, idx, idx], axis=-1)
    tifffile.imwrite(tmp_path / "grey-rgb.tif", rgb, photometric="rgb")
    f = read_image(tmp_path / "grey-rgb.tif")
    assert np.array_equal(f.image, idx.astype(float)) and f.intensity == "display"
    rgb[..., 1] = 255 - idx
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with pytest.raises(InputError, match="different channels"):
        read_image(tmp_path / "rgb.tif")


@pytest.mark.parametrize("dtype, kind", [(np.uint8, "display"), (np.uint16, "raw"), (np.float32, "raw"),
                                         ("unit-float", "normalised")])
def test_what_the_values_are_is_recorded(tmp_path, dtype, kind):
    """8-bit frames are display data and normalised floats are not counts either: the reader says so, for the
    stages that model noise or dose."""
    image = _lattice()
    if dtype == "unit-float":
        image = (image - image.min()) / np.ptp(image)
    elif dtype == np.uint8:
        image = (image // 16).astype(np.uint8)
    tifffile.imwrite(tmp_path / "k.tif", np.asarray(image, dtype=np.float32 if dtype == "unit-float" else dtype))
    f = read_image(tmp_path / "k.tif")
    assert f.intensity == kind
    if kind == "display":  # how much of the frame the export clipped, for noise models
        at_zero = 100 * (image == 0).mean()
        assert any(f"{at_zero:.1f} % of the pixels at 0" in n for n in f.notes)
    assert any("not detector counts" in n for n in f.notes) == (kind != "raw")
    np.save(tmp_path / "k.npy", np.asarray(image, dtype=np.float32 if dtype == "unit-float" else dtype))
    assert read_image(tmp_path / "k.npy").intensity == kind  # the same rule for every format


def test_min_is_white_is_inverted(tmp_path):
    image = (_lattice() // 16).astype(np.uint8)
    tifffile.imwrite(tmp_path / "w.tif", image, photometric="miniswhite")
    assert np.array_equal(read_image(tmp_path / "w.tif").image, 255.0 - image)


def _dm_tree(tmp_path, image, header: bool) -> bytes:
    """The DM tag tree of ``image`` as tests/dm_writer.py writes a .dm3 (80 kV, HAADF, 0.0123 nm/px), with or
    without the .dm3 header."""
    tags = {"Microscope Info": {"Voltage": 80000.0, "Formatted Voltage": "80.0 kV"},
            "DigiScan": {"Detector": "HAADF"}}
    raw = write_dm(tmp_path / "tree.dm3", image, pixel_size_nm=0.0123, image_tags=tags).read_bytes()
    return raw if header else raw[12:]  # the header: version, size, byte order (3 x 4 bytes)


@pytest.mark.parametrize("header", [True, False], ids=["with-dm3-header", "bare-tag-group"])
def test_dm_tag_tree_in_tiff_tag_65027(tmp_path, header):
    """DigitalMicrograph's TIFF export keeps its tag tree in tag 65027: beam energy, detector and the pixel size of
    the image of the TIFF's shape are read from it as from a .dm3."""
    image = (_lattice() // 16).astype(np.uint8)
    tree = _dm_tree(tmp_path, image, header)
    tifffile.imwrite(tmp_path / "dm.tif", image, compression="lzw",
                     extratags=[(DM_TIFF_TAG_TREE, 7, len(tree), tree, True)])
    f = read_image(tmp_path / "dm.tif")
    assert f.values["beam_energy_kev"] == 80.0 and f.values["detector"] == "HAADF"
    assert f.values["pixel_size_angstrom"] == pytest.approx(0.123)
    assert "65027" in f.sources["beam_energy_kev"] and "Microscope Info/Voltage" in f.sources["beam_energy_kev"]
    assert "65027" in f.sources["pixel_size_angstrom"] and f.intensity == "display"


def test_damaged_dm_tag_tree_is_a_note_not_a_failure(tmp_path):
    image = _lattice()
    junk = _dm_tree(tmp_path, image, header=True)[:300]  # a tree cut short
    tifffile.imwrite(tmp_path / "bad.tif", image, extratags=[(DM_TIFF_TAG_TREE, 7, len(junk), junk, True)])
    f = read_image(tmp_path / "bad.tif")
    assert np.array_equal(f.image, image.astype(float)) and "pixel_size_angstrom" not in f.values
    assert any("65027" in n and "could not be read" in n for n in f.notes)


def test_dm_private_scale_tags(tmp_path):
    """Without the tree, DigitalMicrograph's axis tags 65003 (unit) and 65009 (scale) give the pixel size."""
    image = _lattice()
    tifffile.imwrite(tmp_path / "s.tif", image, extratags=[(65003, "s", 0, "nm", True), (65004, "s", 0, "nm", True),
                                                           (65009, "d", 1, 0.0211, True),
                                                           (65010, "d", 1, 0.0211, True)])
    f = read_image(tmp_path / "s.tif")
    assert f.values["pixel_size_angstrom"] == pytest.approx(0.211) and "65010" in f.sources["pixel_size_angstrom"]


@pytest.mark.parametrize("unit, factor", [("nm", 10.0), ("micron", 1e4), ("\\u00B5m", 1e4), ("\\u00C5", 1.0)])
def test_imagej_scale(tmp_path, unit, factor):
    """ImageJ keeps its scale in the resolution tags and the unit in its description (non-ASCII escaped)."""
    px_per_unit = 78.125 if unit == "nm" else (78.125e-3 if factor == 1e4 else 7.8125)
    tifffile.imwrite(tmp_path / "ij.tif", _lattice(), imagej=True, resolution=(px_per_unit, px_per_unit),
                     metadata={"unit": unit})
    f = read_image(tmp_path / "ij.tif")
    assert f.values["pixel_size_angstrom"] == pytest.approx(factor / px_per_unit, rel=1e-5)
    assert "ImageJ" in f.sources["pixel_size_angstrom"]


def test_real_dm3_exported_as_digitalmicrograph_tiff(real_dm3, tmp_path):
    """The real temul-toolkit MoS2 frame as a DigitalMicrograph 'export as TIFF' looks: 8-bit display levels,
    LZW, its own .dm3 tag tree (real Gatan tags) in tag 65027. The context and calibration read from the TIFF are
    those of the .dm3."""
    dm = read_image(real_dm3)
    lo, hi = np.percentile(dm.image, [0.5, 99.5])
    display = (255 * np.clip((dm.image - lo) / (hi - lo), 0, 1)).astype(np.uint8)
    tree = real_dm3.read_bytes()
    tifffile.imwrite(tmp_path / "ADF.tif", display, compression="lzw",
                     extratags=[(DM_TIFF_TAG_TREE, 7, len(tree), tree, True)])
    f = read_image(tmp_path / "ADF.tif")
    assert f.values == dm.values  # 60 kV, HAADF, 0.127 Å/px
    assert f.intensity == "display" and dm.intensity == "raw"
    assert np.array_equal(f.image, display.astype(float))
