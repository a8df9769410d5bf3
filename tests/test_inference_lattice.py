"""Unit tests of the inference stage's pure functions on rendered honeycomb images (Gaussian columns, exact
known positions; scanned through ``simulate.fullfield.distort_scan`` for drift, shear, wobble, glitches, holes)
and on small arrays: lattice constant, peaks, the local honeycomb, sites, patches, features, matching, input
checks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from contract.catalog import load_catalog
from inference.io import InputError, load_image, resolve_context
from kernels.lattice import (
    band_pass,
    border_flags,
    check_image,
    find_peaks,
    lattice_constant_px,
    locate_columns,
    periodicity_map,
    radial_autocorrelation,
    refine_centroids,
)
from simulate.fullfield import ScanDistortion, distort_scan, specimen_to_scan_px
from tests.inference_fixtures import render_specimen
from kernels.patches import cut_patches, patch_half_width_px, site_features
from inference.score import match_sites, score_sites

SQRT3 = 3 ** 0.5


def honeycomb(shape=(160, 170), a_px=14.0, angle_deg=13.0, metal=1.0, chalcogen=0.7, sigma_px=1.6,
              empty_chalcogen=(), noise=0.0, seed=0):
    """Image of a honeycomb of Gaussian columns; returns (image, positions (N, 2), sublattice (N,) 0 metal /
    1 chalcogen). ``empty_chalcogen``: indices into the chalcogen sites left dark (double vacancies)."""
    t = np.radians(angle_deg)
    a1 = a_px * np.array([np.sin(t), np.cos(t)])
    a2 = a_px * np.array([np.sin(t + np.pi / 3), np.cos(t + np.pi / 3)])
    basis = np.c_[a1, a2]
    origin = np.array(shape) / 2 + np.array([0.31, -0.27])
    n = int(max(shape) / a_px) + 3
    i, j = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij")
    ij = np.c_[i.ravel(), j.ravel()].astype(float)
    pos, sub = [], []
    for s, k in enumerate((0, 1)):
        p = origin + (ij + k / 3) @ basis.T
        pos.append(p)
        sub.append(np.full(len(p), s))
    pos, sub = np.concatenate(pos), np.concatenate(sub)
    keep = (pos[:, 0] > -3 * sigma_px) & (pos[:, 0] < shape[0] + 3 * sigma_px) & \
           (pos[:, 1] > -3 * sigma_px) & (pos[:, 1] < shape[1] + 3 * sigma_px)
    pos, sub = pos[keep], sub[keep]
    weight = np.where(sub == 0, metal, chalcogen)
    chal_idx = np.flatnonzero(sub == 1)
    for e in empty_chalcogen:
        weight[chal_idx[e]] = 0.0
    yy, xx = np.indices(shape)
    img = np.full(shape, 0.05)
    for (r, c), w in zip(pos, weight):
        if w:
            img += w * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma_px**2))
    if noise:
        img = img + np.random.default_rng(seed).normal(0, noise, shape)
    inside = (pos[:, 0] >= 0) & (pos[:, 0] <= shape[0] - 1) & (pos[:, 1] >= 0) & (pos[:, 1] <= shape[1] - 1)
    return img, pos[inside], sub[inside], weight[inside]


@pytest.mark.parametrize("a_px,angle", [(14.0, 13.0), (24.0, 41.0), (9.5, 0.0)])
def test_lattice_constant_is_a_not_a_over_sqrt3(a_px, angle):
    # the first autocorrelation peak is the M-X distance a/√3; the estimate must be a
    img, *_ = honeycomb(shape=(200, 210), a_px=a_px, angle_deg=angle, sigma_px=a_px / 9)
    est = lattice_constant_px(img)
    assert abs(est / a_px - 1) < 0.02
    prof = radial_autocorrelation(img)
    near = int(round(a_px / SQRT3))
    # there is a local maximum at a/√3 that a first-peak rule would take
    assert any(prof[k] > prof[k - 1] and prof[k] >= prof[k + 1] for k in range(near - 1, near + 2))


def test_lattice_constant_with_equal_sublattices_and_noise():
    img, *_ = honeycomb(metal=1.0, chalcogen=1.0, noise=0.2)
    assert abs(lattice_constant_px(img) / 14.0 - 1) < 0.02


def test_radial_autocorrelation_shape_and_normalisation():
    img, *_ = honeycomb(shape=(64, 80))
    prof = radial_autocorrelation(img)
    assert prof.shape == (33,) and prof[0] == pytest.approx(1.0)


def test_locate_columns_recovers_every_column_including_empty_sites():
    empty = (60, 77, 100)
    img, pos, sub, weight = honeycomb(shape=(200, 210), empty_chalcogen=empty, noise=0.02)
    lat = locate_columns(img)
    assert abs(lat.lattice_constant_px / 14.0 - 1) < 0.005
    assert np.allclose(lat.transforms, np.eye(2), atol=0.02)  # a perfect lattice: identity everywhere
    assert lat.lattice_area_fraction > 0.95 and lat.stats["sublattice_consistency"] == 1.0
    match, dist = match_sites(lat.positions, pos, 0.3 * 14.0 / SQRT3)
    inner = ~border_flags(pos, img.shape, 14.0)
    assert (match[inner] >= 0).all()
    assert dist[match >= 0].mean() < 0.05 * 14.0
    # every empty (dark) site is placed from its neighbours, without a peak
    dark = np.flatnonzero((weight == 0) & inner)
    assert len(dark) >= 2 and (match[dark] >= 0).all() and not lat.has_peak[match[dark]].any()
    # the two sublattices are the true ones (up to naming), with no column on the wrong one
    agree = (lat.sublattice[match[match >= 0]] == sub[match >= 0]).mean()
    assert agree in (0.0, 1.0)


DISTORTIONS = {
    "drift 6 %": ScanDistortion(drift_shear=0.06),
    "skew 2 deg + drift 3 %": ScanDistortion(scan_skew_deg=2.0, drift_shear=0.03),
    "wobble 1 px": ScanDistortion(row_wobble_angstrom=0.12, row_wobble_period_angstrom=7.0),
    "2 glitches of 3 px": ScanDistortion(glitches=2, glitch_shift_angstrom=0.36, glitch_height_angstrom=2.0),
    "all + hole": ScanDistortion(drift_shear=0.03, scan_skew_deg=2.0, row_wobble_angstrom=0.12, glitches=2,
                                 glitch_shift_angstrom=0.36, hole_radius_angstrom=5.0),
}


@pytest.mark.parametrize("name", list(DISTORTIONS))
def test_locate_columns_follows_a_distorted_scan(name):
    """A honeycomb (a = 3.16 Å, 0.12 Å/px: 26 px) scanned through drift, skew, wobble and glitches: every
    column found near its true scan position, both sublattices consistent across the glitch bands, no site
    in the hole."""
    dist = DISTORTIONS[name]
    specimen, y, x, sub, empty = render_specimen(40.0, 0.06, empty_fraction=0.03, seed=1)
    image, geo = distort_scan(specimen, 0.06, (280, 280), 0.12, dist, np.random.default_rng(2), periodic=False)
    image = np.random.default_rng(3).poisson(200 * image + 20).astype(float)
    rows, cols = specimen_to_scan_px(y, x, 0.12, dist, geo)
    xy = np.c_[rows, cols]
    a_px = 3.16 / 0.12
    inner = ~border_flags(xy, image.shape, SQRT3 * a_px / 2) & (xy >= 0).all(axis=1) & (xy <= 279).all(axis=1)
    if geo.hole_centre_angstrom is not None:
        r_hole = np.hypot(y - geo.hole_centre_angstrom[0], x - geo.hole_centre_angstrom[1])
        inner &= r_hole > dist.hole_radius_angstrom + 3.16 / SQRT3
    lat = locate_columns(image)
    match, d = match_sites(lat.positions, xy[inner], 0.3 * a_px / SQRT3)
    assert (match >= 0).mean() >= 0.99, name
    assert d[match >= 0].mean() <= 0.1 * a_px
    agree = (lat.sublattice[match[match >= 0]] == sub[inner][match >= 0]).mean()
    assert agree in (0.0, 1.0), f"{name}: sublattices mixed ({agree:.3f})"
    assert not lat.has_peak[match[empty[inner]]].any() if (match[empty[inner]] >= 0).all() else False
    assert abs(lat.lattice_constant_px / a_px - 1) < 0.02
    if geo.hole_centre_angstrom is not None:
        hr, hc = specimen_to_scan_px(np.array([geo.hole_centre_angstrom[0]]), np.array([geo.hole_centre_angstrom[1]]),
                                     0.12, dist, geo)
        inside = np.hypot(lat.positions[:, 0] - hr[0], lat.positions[:, 1] - hc[0]) * 0.12
        assert (inside > dist.hole_radius_angstrom - 0.5 * 3.16 / SQRT3).all()  # no site in the hole
        assert not lat.lattice_mask[int(hr[0]), int(hc[0])]


def test_locate_columns_with_one_visible_sublattice():
    """MoS2-like contrast where the chalcogen columns barely show (a fifth of the metal's, in noise): the metal
    columns are found, most chalcogen sites are placed from their three metal neighbours (too faint for a
    peak of their own), sublattices consistent. (With no chalcogen signal at all the honeycomb is undefined:
    the chalcogen and hollow offsets look alike.)"""
    specimen, y, x, sub, _ = render_specimen(36.0, 0.06, chalcogen=0.2)
    image, geo = distort_scan(specimen, 0.06, (260, 260), 0.12, ScanDistortion(), np.random.default_rng(0),
                              periodic=False)
    image = np.random.default_rng(1).poisson(30 * image + 20).astype(float)
    rows, cols = specimen_to_scan_px(y, x, 0.12, ScanDistortion(), geo)
    xy = np.c_[rows, cols]
    a_px = 3.16 / 0.12
    inner = ~border_flags(xy, image.shape, SQRT3 * a_px / 2) & (xy >= 0).all(axis=1) & (xy <= 259).all(axis=1)
    lat = locate_columns(image)
    match, _ = match_sites(lat.positions, xy[inner], 0.3 * a_px / SQRT3)
    assert (match >= 0).all()
    chal = sub[inner] == 1
    assert (~lat.has_peak[match[chal]]).mean() > 0.25  # many placed, not seen (42 % here)
    assert lat.has_peak[match[~chal]].all()
    assert (lat.sublattice[match] == sub[inner]).mean() in (0.0, 1.0)
    assert lat.stats["sublattice_consistency"] == 1.0


def test_periodicity_map_separates_lattice_from_noise():
    img, *_ = honeycomb(shape=(160, 160), noise=0.05)
    noise = np.random.default_rng(0).normal(0, 1, (160, 160))
    a = 14.0
    t = np.radians(13.0)
    vec = a * np.array([[np.sin(t), np.cos(t)], [np.sin(t + np.pi / 3), np.cos(t + np.pi / 3)]])
    vectors = np.stack([vec[0], vec[1], vec[1] - vec[0]])
    assert np.median(periodicity_map(band_pass(img, a), vectors, a)) > 0.8
    assert abs(np.median(periodicity_map(band_pass(noise, a), vectors, a))) < 0.1


def test_refine_centroids_batched_subpixel():
    yy, xx = np.indices((64, 64))
    true = np.array([[15.3, 14.8], [40.6, 20.2], [30.1, 50.7]])
    img = sum(np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * 2.0**2)) for r, c in true)
    got = refine_centroids(img, np.rint(true) + [[1, -1], [-1, 1], [1, 1]], 4.0, iterations=5)
    assert np.allclose(got, true, atol=0.05)


def test_find_peaks_min_distance_merges_close_maxima():
    img = np.zeros((40, 40))
    img[20, 18], img[20, 22] = 1.0, 0.95
    img[5, 5] = 0.9
    p_far, _ = find_peaks(img, 2.0, smooth_sigma_px=0)
    p_near, _ = find_peaks(img, 6.0, smooth_sigma_px=0)
    assert len(p_far) == 3 and len(p_near) == 2


def test_find_peaks_subpixel_refinement():
    yy, xx = np.indices((31, 31))
    img = np.exp(-((yy - 15.3) ** 2 + (xx - 14.8) ** 2) / (2 * 2.0**2))
    (peak,), _ = find_peaks(img, 4.0, smooth_sigma_px=0)
    assert np.allclose(peak, (15.3, 14.8), atol=0.05)


def test_locate_columns_refuses_noise():
    noise = np.random.default_rng(0).normal(0, 1, (200, 200))
    with pytest.raises(ValueError, match="no lattice|no honeycomb|candidates|autocorrelation"):
        locate_columns(noise, a_px=14.0)


def test_border_flags_margin():
    pos = np.array([[5.0, 50.0], [50.0, 50.0], [50.0, 95.0], [94.0, 10.0]])
    flags = border_flags(pos, (100, 100), 6.0)
    assert flags.tolist() == [True, False, True, True]


def test_cut_patches_centre_pixel_size_and_border_sites():
    img, pos, sub, _ = honeycomb(shape=(120, 120), a_px=14.0)
    patches = cut_patches(img, pos, 14.0, 17)
    assert patches.shape == (len(pos), 17, 17) and patches.dtype == np.float32
    inner = ~border_flags(pos, img.shape, patch_half_width_px(14.0))
    # the column sits on the centre pixel: a local maximum for every site, the patch maximum on metal sites
    block = patches[:, 7:10, 7:10].reshape(len(pos), -1)
    assert (patches[inner, 8, 8] >= block[inner].max(axis=1) - 1e-6).all()
    metal = inner & (sub == 0)
    assert (patches[metal, 8, 8] >= patches[metal].reshape(metal.sum(), -1).max(axis=1) - 1e-6).all()
    # a border site gets a full patch from the mirrored image
    assert np.isfinite(patches[~inner]).all() and (~inner).any()
    # the patch spans √3·a: the three nearest other-sublattice columns lie at a/√3 = 2/3 of the half-width
    with pytest.raises(ValueError, match="odd"):
        cut_patches(img, pos, 14.0, 16)


def test_cut_patches_local_transforms_undo_a_shear():
    """Patches of a sheared lattice cut through its local transform equal those of the unsheared lattice; the
    identity gives the plain patches."""
    img, pos, sub, _ = honeycomb(shape=(120, 120), a_px=14.0, angle_deg=0.0)
    plain = cut_patches(img, pos, 14.0, 17)
    assert np.allclose(cut_patches(img, pos, 14.0, 17, np.broadcast_to(np.eye(2), (len(pos), 2, 2))), plain, atol=1e-5)
    shear = np.array([[1.0, 0.0], [0.06, 1.0]])  # col += 0.06 row
    yy, xx = np.indices(img.shape).astype(float)
    from scipy import ndimage

    sheared = ndimage.map_coordinates(img, [yy, xx - 0.06 * yy], order=3, mode="nearest")
    pos_s = pos @ shear.T
    inner = ~border_flags(pos, img.shape, 20) & ~border_flags(pos_s, img.shape, 20)
    got = cut_patches(sheared, pos_s[inner], 14.0, 17, np.broadcast_to(shear, (inner.sum(), 2, 2)))
    assert np.abs(got - plain[inner]).max() < 0.03 * plain.max()


def test_site_features_layout_and_flags():
    img, pos, sub, _ = honeycomb(shape=(120, 120), a_px=14.0, metal=1.0, chalcogen=0.5)
    patches = cut_patches(img, pos, 14.0, 17)
    feats = site_features(patches, sub, metal="W", chalcogen="Se", dopant="Cr", detector="HAADF",
                          beam_energy_kev=60)
    from kernels.context import context_vector, feature_names

    assert feats.shape == (len(pos), len(feature_names())) == (len(pos), 31)
    assert np.allclose(feats[:, :23], context_vector("W", "Se", "Cr", "HAADF", 60))
    # metal columns are brighter here: metal sites get [1, 0], chalcogen sites [0, 1]
    assert (feats[sub == 0, 29:] == [1, 0]).all() and (feats[sub == 1, 29:] == [0, 1]).all()
    assert np.isfinite(feats).all()


def test_check_image_rejects_bad_images():
    with pytest.raises(ValueError, match="2-D"):
        check_image(np.zeros((3, 32, 32)))
    bad = np.ones((32, 32))
    bad[4, 7] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*row 4, col 7"):
        check_image(bad)
    with pytest.raises(ValueError, match="constant"):
        check_image(np.ones((32, 32)))


def test_load_image_npy_tif_and_metadata(tmp_path):
    import tifffile

    img, *_ = honeycomb(shape=(64, 64))
    np.save(tmp_path / "a.npy", img)
    (tmp_path / "a.json").write_text(json.dumps({"pixel_size_angstrom": 0.25, "detector": "HAADF"}))
    arr, meta = load_image(tmp_path / "a.npy")
    assert np.array_equal(arr, img) and meta == {"pixel_size_angstrom": 0.25, "detector": "HAADF"}
    tifffile.imwrite(tmp_path / "b.tif", img.astype(np.float32), imagej=True, resolution=(1 / 0.025, 1 / 0.025),
                     metadata={"unit": "nm"})
    arr, meta = load_image(tmp_path / "b.tif")
    assert arr.shape == (64, 64) and meta["pixel_size_angstrom"] == pytest.approx(0.25, rel=1e-4)
    np.save(tmp_path / "c.npy", np.zeros((2, 64, 64)))
    with pytest.raises(InputError, match="c.npy: image must be 2-D"):
        load_image(tmp_path / "c.npy")
    with pytest.raises(InputError, match="unsupported format"):
        (tmp_path / "d.png").write_bytes(b"x")
        load_image(tmp_path / "d.png")
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "nope.npy")


def test_resolve_context_lists_every_missing_value_and_checks_values():
    hosts = load_catalog()  # the shipped catalog (contract/catalog.yaml)
    with pytest.raises(InputError) as err:
        resolve_context({}, {"host": "WSe2"}, hosts)
    msg = str(err.value)
    assert "--dopant" in msg and "--energy-kev" in msg and "--detector" in msg and "--host" not in msg
    ctx = resolve_context({"detector": "maadf", "beam_energy_kev": 80}, {"host": "WSe2", "dopant": "Cr",
                                                                        "beam_energy_kev": 60}, hosts)
    assert ctx.beam_energy_kev == 60 and ctx.detector == "MAADF" and ctx.pixel_size_angstrom is None
    with pytest.raises(InputError, match="catalog"):
        resolve_context({}, {"host": "XY2", "dopant": "Cr", "beam_energy_kev": 60, "detector": "HAADF"}, hosts)
    with pytest.raises(InputError, match="70 keV"):
        resolve_context({}, {"host": "WSe2", "dopant": "Cr", "beam_energy_kev": 70, "detector": "HAADF"}, hosts)
    with pytest.raises(InputError, match="pixel-size"):
        resolve_context({}, {"host": "WSe2", "dopant": "Cr", "beam_energy_kev": 60, "detector": "HAADF",
                             "pixel_size_angstrom": -1}, hosts)


def test_match_and_score_exact_values():
    true = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [30.0, 0.0]])
    pred = np.array([[0.5, 0.0], [10.0, 0.2], [29.0, 0.0], [100.0, 0.0]])
    match, dist = match_sites(pred, true, 1.5)
    assert match.tolist() == [0, 1, -1, 2] and np.allclose(dist[[0, 1, 3]], [0.5, 0.2, 1.0])
    s = score_sites(pred, [0, 3, 4, 4], true, [0, 3, 4, 3], 1.5, 0.5)
    assert s["recall"] == 0.75 and s["n_matched"] == 3
    assert s["position_error_pm_mean"] == pytest.approx((0.5 + 0.2 + 1.0) / 3 * 50)
    # matched: true 0, 3, 3 vs predicted 0, 3, 4: p_o = 2/3, p_e = 1/3 * 1/3 + 2/3 * 1/3 = 1/3, kappa = 1/2
    assert s["accuracy"] == pytest.approx(2 / 3) and s["cohen_kappa"] == pytest.approx(0.5)
    s2 = score_sites(pred, [0, 3, 3, 4], true, [0, 3, 4, 3], 1.5, 0.5, ["chalcogen", "metal", "metal", "metal"],
                     ["chalcogen", "metal", "metal", "chalcogen"], n_pred_counted=3)
    assert s2["cohen_kappa"] == pytest.approx(1.0) and s2["precision"] == 1.0
    assert s2["sublattice_agreement"] == pytest.approx(2 / 3)  # true[3] (chalcogen) matched a metal prediction


def test_load_image_emd_through_rosettasciio(tmp_path):
    emd = pytest.importorskip("rsciio.emd", reason="rosettasciio (+ h5py) reads .emd/.dm3/.dm4")
    img, *_ = honeycomb(shape=(64, 64))
    axis = {"size": 64, "scale": 0.025, "offset": 0.0, "units": "nm", "navigate": False}
    emd.file_writer(str(tmp_path / "f.emd"), {
        "data": img.astype(np.float32), "axes": [{"name": "y", **axis}, {"name": "x", **axis}],
        "metadata": {"General": {"title": "HAADF image"}, "Signal": {}}, "original_metadata": {}})
    arr, meta = load_image(tmp_path / "f.emd")
    assert np.allclose(arr, img.astype(np.float32))
    assert meta["pixel_size_angstrom"] == pytest.approx(0.25) and meta["detector"] == "HAADF"


def test_dm_tags_give_energy_detector_and_pixel_size_with_sources(tmp_path):
    from tests.dm_writer import write_dm
    from inference.io import read_image

    img, *_ = honeycomb(shape=(64, 64))
    tags = {"Microscope Info": {"Voltage": 80000.0}, "QuickSaved": {"Temp-Tags": {"Detector": "MAADF"}}}
    for suffix in ("dm3", "dm4"):
        f = read_image(write_dm(tmp_path / f"a.{suffix}", img.astype(np.float32), 0.02, tags, name="MAADF 8Mx"))
        assert f.values == {"pixel_size_angstrom": pytest.approx(0.2), "beam_energy_kev": 80.0, "detector": "MAADF"}
        assert f.sources["beam_energy_kev"].endswith("Microscope Info/Voltage = 80000.0")
        assert "Temp-Tags/Detector = MAADF" in f.sources["detector"]
    # only the formatted voltage; an ambiguous detector name (ADF) is not mapped
    f = read_image(write_dm(tmp_path / "b.dm3", img.astype(np.float32), 0.02,
                            {"Microscope Info": {"Formatted Voltage": "100kV"}, "Detector": "ADF"}, name="image"))
    assert f.values["beam_energy_kev"] == 100.0 and "detector" not in f.values
    assert any("ADF" in n and "--detector" in n for n in f.notes)
    # two different names: ambiguous
    f = read_image(write_dm(tmp_path / "c.dm3", img.astype(np.float32), 0.02, {"Detector": "HAADF"}, name="MAADF"))
    assert "detector" not in f.values and any("different detectors" in n for n in f.notes)


def test_fei_tiff_metadata(tmp_path):
    import tifffile

    from inference.io import read_image

    img, *_ = honeycomb(shape=(64, 64))
    ini = "[User]\nUser=x\n[Beam]\nHV=60000\n[Scan]\nPixelWidth=2.5e-11\n[Detectors]\nName=HAADF\nMode=Z-contrast\n"
    tifffile.imwrite(tmp_path / "f.tif", img.astype(np.float32), extratags=[(34682, "s", 0, ini, True)])
    f = read_image(tmp_path / "f.tif")
    assert f.values == {"pixel_size_angstrom": pytest.approx(0.25), "beam_energy_kev": 60.0, "detector": "HAADF"}
    assert f.sources["beam_energy_kev"].startswith("FEI Beam/HV")


def test_resolve_context_records_sources():
    hosts = load_catalog()
    ctx = resolve_context({"beam_energy_kev": 60.0, "detector": "HAADF"}, {"host": "MoS2", "dopant": "Re",
                                                                           "detector": "MAADF"},
                          hosts, {"beam_energy_kev": "dm3 tag .../Voltage = 60000.0", "detector": "dm3 title"})
    assert ctx.detector == "MAADF" and ctx.sources["detector"] == "option --detector"
    assert ctx.sources["beam_energy_kev"].startswith("dm3 tag")
