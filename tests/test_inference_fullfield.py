"""The inference stage on real simulated full fields (abTEM, ``python -m simulate fullfield``): lattice,
columns, double-vacancy sites from the lattice, and end to end (classify + score) with the shipped starter
model; bad inputs of ``python -m inference classify``; a field scanned through every distortion of a
real frame against the same field scanned cleanly.

One field (22 x 22 Å, WSe2 + Cr, 60 keV MAADF, static, rotated 23°) is simulated once per module (~30 s on
2 cores); the distorted-field
test simulates a 32 x 32 Å field once (~1-3 min on 2 cores; kept in pytest's cache directory, keyed by its
parameters and the abTEM version) and scans it twice.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from inference.__main__ import main as inference_main
from inference.classify import locate_sites
from inference.score import match_sites

SQRT3 = 3 ** 0.5
FRACTIONS = "D=0.1,VacX=0.08,VacX2=0.1"


@pytest.fixture(scope="module")
def field(tmp_path_factory, repo_root):
    out = tmp_path_factory.mktemp("field") / "wse2_cr"
    subprocess.run([sys.executable, "-m", "simulate", "fullfield", "--host", "WSe2", "--dopant", "Cr",
                    "--energy-kev", "60", "--detector", "MAADF", "--fractions", FRACTIONS, "--size-angstrom", "22",
                    "--rotation-deg", "23", "--seed", "3", "--out", str(out)], check=True, cwd=repo_root)
    return out


@pytest.fixture(scope="module")
def model(repo_root):
    """The shipped starter model (``inference/models/starter.ckpt``: attn-4k, WSe2/MoS2 x Ti, V, Mn, Co, Cr, none
    x 60/80 keV x HAADF/MAADF, the five classes): it covers the field's context, so the end-to-end scores measure
    the shipped model on a field it was not trained on.

    A model trained in the fixture on tiny.yaml (3 environments, 768 patches) scored 43/45 X2/M/D columns here
    while the site-symmetry flag happened to equal the sublattice in every tiny case (old rule: the mean of all
    patches). Under rule 2 the WSe2 HAADF case flags the metal brighter and the MAADF case the chalcogen, so the
    flag no longer names the sublattice without the detector, and the tiny model called 17 of 27 metal columns
    X2 (2026-12-07): too little data to learn that interaction, not a fault of the pipeline."""
    return repo_root / "inference" / "models" / "starter.ckpt"


def _truth(field):
    rows = list(csv.DictReader(open(field / "truth.csv")))
    xy = np.array([[float(r["y_px"]), float(r["x_px"])] for r in rows])
    return xy, np.array([int(r["label"]) for r in rows]), json.loads((field / "image.json").read_text())


def test_fullfield_outputs_and_truth(field):
    image = np.load(field / "image.npy")
    xy, label, meta = _truth(field)
    assert image.ndim == 2 and image.shape[0] == image.shape[1] and np.isfinite(image).all()
    assert meta["pixel_size_angstrom"] * image.shape[0] == pytest.approx(22.0)
    assert set(np.unique(label)) == {0, 1, 2, 3, 4}  # every class present at these fractions
    # the ground truth is a honeycomb: nearest-column distance a/√3
    from scipy.spatial import cKDTree

    d, _ = cKDTree(xy).query(xy, k=2)
    a_px = meta["lattice_constant_angstrom"] / meta["pixel_size_angstrom"]
    inner = (xy > 2).all(axis=1) & (xy < image.shape[0] - 3).all(axis=1)
    assert np.allclose(d[inner, 1], a_px / SQRT3, rtol=1e-3)


def test_lattice_columns_and_double_vacancies_on_simulated_field(field):
    image = np.load(field / "image.npy")
    xy, label, meta = _truth(field)
    a_true = meta["lattice_constant_angstrom"] / meta["pixel_size_angstrom"]
    sites = locate_sites(image)
    assert abs(sites.autocorrelation_lattice_constant_px / a_true - 1) < 0.02
    assert abs(sites.lattice_constant_px / a_true - 1) < 0.02
    h, w = image.shape
    # columns inside the scanned pixels by at least half a bond (a column centred on the edge pixel is half
    # outside the frame: its maximum lies on the edge, where no peak is taken; measured: the 6 missed columns
    # of this field are all within 0.5 px of the edge)
    edge = 0.5 * a_true / SQRT3
    in_scan = (xy >= edge).all(axis=1) & (xy[:, 0] <= h - 1 - edge) & (xy[:, 1] <= w - 1 - edge)
    match, dist = match_sites(sites.positions, xy[in_scan], 0.3 * a_true / SQRT3)
    found = match >= 0
    assert found.mean() >= 0.99
    assert dist[found].mean() < 0.1 * a_true
    vac2 = label[in_scan] == 2
    assert vac2.sum() >= 2 and found[vac2].all()
    assert not sites.has_peak[match[vac2]].any()  # placed from the lattice: no peak there


def test_classify_and_score_end_to_end(field, model, tmp_path, capsys):
    pred = tmp_path / "pred"
    rc = inference_main(["classify", str(field / "image.npy"), "--model", str(model), "--out", str(pred),
                         "--host", "WSe2", "--dopant", "Cr"])  # energy, detector, pixel size from image.json
    assert rc == 0, capsys.readouterr().err
    for name in ("sites.csv", "overlay.png", "summary.json"):
        assert (pred / name).stat().st_size > 0
    summary = json.loads((pred / "summary.json").read_text())
    assert summary["context"]["detector"] == "MAADF" and summary["context"]["beam_energy_kev"] == 60
    assert summary["pixel_size_source"] == "file" and summary["patch_size_px"] == 33  # the starter card's
    # In MAADF at 60 keV WSe2's intact Se2 column outshines W: the starter's case ratio is 0.75 in its noiseless
    # patches (site-symmetry rule 3), outside the band where brightness is not trusted, so the frame's dimmer
    # sublattice is the metal. (Under rule 2 the noisy patches' mean gave 0.79, inside the band, and the model's
    # consistency chose; both gave kappa 1.00 here.)
    assert summary["metal_sublattice_source"].startswith("brightness")
    assert summary["n_counted_called_other_sublattice"] <= 2
    assert sum(summary["counts"].values()) == summary["n_counted"] == summary["n_sites"] - summary["n_border"]
    rows = list(csv.DictReader(open(pred / "sites.csv")))
    assert len(rows) == summary["n_sites"]
    probs = np.array([[float(r[f"p_{n}"]) for n in ("X2", "VacX", "VacX2", "M", "D")] for r in rows])
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert np.allclose([float(r["entropy_nats"]) for r in rows],
                       -(probs * np.log(probs.clip(1e-30))).sum(axis=1), atol=1e-4)
    rc = inference_main(["score", "--pred", str(pred), "--truth", str(field)])
    assert rc == 0
    score = json.loads((pred / "score.json").read_text())
    assert score["recall"] >= 0.99 and score["sublattice_agreement"] == 1.0
    assert score["position_error_fraction_of_a"] < 0.1
    # Measured with the starter model on this field (2026-12-07): 53 counted columns (17 X2, 6 VacX, 2 VacX2,
    # 27 M, 1 D), all right, kappa 1.00. 0.9 allows about two errors; a swapped sublattice assignment gives
    # kappa < 0 and a model at chance ~0.
    assert score["cohen_kappa"] >= 0.9
    cm = np.array(score["confusion_matrix"])
    assert np.trace(cm) / cm.sum() >= 0.95


def test_classify_bad_inputs_are_clear_errors(field, model, tmp_path, capsys):
    ckpt = str(model)

    def err(args):
        assert inference_main(["classify", *args, "--model", ckpt, "--out", str(tmp_path / "o")]) == 2
        return capsys.readouterr().err

    bare = tmp_path / "bare.npy"
    np.save(bare, np.load(field / "image.npy"))  # no metadata beside it
    msg = err([str(bare)])
    assert all(k in msg for k in ("--host", "--dopant", "--energy-kev", "--detector"))
    cube = tmp_path / "cube.npy"
    np.save(cube, np.zeros((2, 40, 40)))
    assert "must be 2-D" in err([str(cube), "--host", "WSe2", "--dopant", "Cr", "--energy-kev", "60",
                                 "--detector", "HAADF"])
    nan = np.load(field / "image.npy")
    nan[3, 4] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    assert "NaN" in err([str(tmp_path / "nan.npy"), "--host", "WSe2", "--dopant", "Cr", "--energy-kev", "60",
                         "--detector", "HAADF"])
    rc = inference_main(["classify", str(field / "image.npy"), "--model", str(tmp_path / "none.ckpt"),
                         "--out", str(tmp_path / "o"), "--host", "WSe2", "--dopant", "Cr"])
    assert rc == 2 and "not found" in capsys.readouterr().err


def test_classify_tif_inferred_and_disagreeing_pixel_size(field, model, tmp_path, capsys):
    import tifffile

    image = np.load(field / "image.npy")
    px = json.loads((field / "image.json").read_text())["pixel_size_angstrom"]
    ctx = ["--host", "WSe2", "--dopant", "Cr", "--energy-kev", "60", "--detector", "MAADF"]
    # .tif with its pixel size in the ImageJ resolution tags (nm)
    tifffile.imwrite(tmp_path / "f.tif", image, imagej=True, resolution=(1 / (px / 10), 1 / (px / 10)),
                     metadata={"unit": "nm"})
    assert inference_main(["classify", str(tmp_path / "f.tif"), "--model", str(model), *ctx,
                           "--out", str(tmp_path / "tif")]) == 0
    s = json.loads((tmp_path / "tif" / "summary.json").read_text())
    assert s["pixel_size_source"] == "file" and s["pixel_size_angstrom"] == pytest.approx(px, rel=1e-4)
    # no pixel size anywhere: inferred from the catalog lattice constant and the fitted lattice
    np.save(tmp_path / "bare.npy", image)
    assert inference_main(["classify", str(tmp_path / "bare.npy"), "--model", str(model), *ctx,
                           "--out", str(tmp_path / "bare")]) == 0
    s = json.loads((tmp_path / "bare" / "summary.json").read_text())
    assert s["pixel_size_source"] == "lattice" and abs(s["pixel_size_angstrom"] / px - 1) < 0.02
    assert "inferred" in capsys.readouterr().out
    # a pixel size 10 % off: both lattice constants are reported
    assert inference_main(["classify", str(tmp_path / "bare.npy"), "--model", str(model), *ctx,
                           "--pixel-size-angstrom", str(1.1 * px), "--out", str(tmp_path / "off")]) == 0
    s = json.loads((tmp_path / "off" / "summary.json").read_text())
    assert any("differs from the catalog" in n for n in s["notes"])
    assert s["lattice_constant_angstrom_image"] == pytest.approx(1.1 * 3.282, rel=0.02)


DISTORTED = ["--drift-shear", "0.03", "--row-wobble-angstrom", "0.12", "--row-wobble-period-angstrom", "10",
             "--glitches", "2", "--glitch-shift-angstrom", "0.36", "--glitch-height-angstrom", "2",
             "--scan-skew-deg", "2", "--hole-radius-angstrom", "4", "--contamination-radius-angstrom", "4",
             "--dc-offset-counts", "1e6", "--pixel-miscalibration", "0.05"]
"""The issue's real frame, in physical units at 0.12 Å/px: a 3 % drift shear and a 1 px (0.12 Å) row wobble, two
glitch bands shifted 3 px (0.36 Å), a 2° non-orthogonal scan, a hole and a contamination blob, a DC offset of
1e6 counts, and a pixel size recorded 5 % too large."""


@pytest.fixture(scope="module")
def clean_field_32(request, tmp_path_factory):
    """The clean 32 x 32 Å WSe2 + Cr field (60 keV MAADF, 10 % dopants, 4 % double vacancies), simulated once
    and kept in pytest's cache directory."""
    import abtem

    from simulate.fullfield import CleanField, simulate_clean_field

    params = dict(host="WSe2", dopant="Cr", beam_energy_kev=60, detector="MAADF",
                  fractions={"D": 0.1, "VacX": 0.0, "VacX2": 0.04}, size_angstrom=32.0, rotation_deg=23.0, seed=3)
    import hashlib

    from simulate.config import load

    # the multislice settings are part of the key: a field cached under other slicing is not this field
    multislice = load(request.config.rootpath / "configs/dataset/paper.yaml").multislice
    key = hashlib.sha256(json.dumps([params, abtem.__version__, multislice], sort_keys=True, default=str)
                         .encode()).hexdigest()[:12]
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider: simulate into a temp dir
    folder = cache.mkdir("stem-context-fields") if cache is not None else tmp_path_factory.mktemp("fields")
    path = folder / f"clean-{key}.npz"
    if not path.is_file():
        simulate_clean_field(**params, config_path=request.config.rootpath / "configs/dataset/paper.yaml").save(path)
    return CleanField.load(path)


@pytest.mark.slow
def test_distorted_field_columns_hole_and_kappa(clean_field_32, model, tmp_path, capsys):
    """The same specimen scanned cleanly and through every distortion (``DISTORTED``), both at 0.12 Å/px:
    on the distorted scan column recall >= 99 % and mean position error <= 0.1 a on the lattice area, no site
    in the hole, and Cohen's kappa of the shipped starter model on both scans (see the measured values below)."""
    from simulate.__main__ import build_parser
    from simulate.fullfield import ScanDistortion, scan_field

    args = build_parser().parse_args(["fullfield", "--host", "WSe2", "--dopant", "Cr", "--energy-kev", "60",
                                      "--detector", "MAADF", "--out", "x", *DISTORTED])
    dist = ScanDistortion(**{k: getattr(args, k) for k in ScanDistortion.__dataclass_fields__
                             if k != "contamination_strength"})
    clean_dir = scan_field(clean_field_32, tmp_path / "clean", seed=3, pixel_size_angstrom=0.12)
    dist_dir = scan_field(clean_field_32, tmp_path / "distorted", seed=3, distortion=dist, pixel_size_angstrom=0.12)
    scores = {}
    for name, d in (("clean", clean_dir), ("distorted", dist_dir)):
        pred = tmp_path / f"pred-{name}"
        assert inference_main(["classify", str(d / "image.npy"), "--model", str(model), "--out", str(pred)]) == 0
        assert inference_main(["score", "--pred", str(pred), "--truth", str(d)]) == 0
        scores[name] = json.loads((pred / "score.json").read_text())
        scores[name]["summary"] = json.loads((pred / "summary.json").read_text())
    capsys.readouterr()
    s = scores["distorted"]
    assert s["recall"] >= 0.99 and s["n_true"] >= 60  # measured: 74 of 74
    assert s["position_error_fraction_of_a"] <= 0.1
    assert s["sublattice_agreement"] == 1.0
    # Measured with the starter model (2026-12-07): kappa 1.00 on the clean scan, 0.88 on the distorted one (5 of
    # 75 counted columns wrong: 3 X2 called VacX, 2 M called D; two at the contamination's edge, three with
    # entropy 0.1-0.7 nats against 0.01 on the clean scan). The starter was trained with scan jitter <= 0.5 px;
    # this scan wobbles 1 px and jumps 3 px at its glitches: a frame-matched model is the remedy (docs/models.md).
    # With a 3-environment model (kappa 0.68 clean) the two agreed within 0.05. 0.8 allows about two more errors.
    assert scores["clean"]["cohen_kappa"] >= 0.95 and s["cohen_kappa"] >= 0.8, (s["cohen_kappa"],
                                                                               scores["clean"]["cohen_kappa"])
    summ = s["summary"]
    # the 5 % miscalibration shows as a lattice constant 5 % off the catalog's: reported, and the lattice's pixel
    # size used instead (inference.calibration)
    assert summ["calibration"]["deviation"] == pytest.approx(0.05, abs=0.02) and summ["pixel_size_source"] == "lattice"
    assert summ["masked_area_fraction"] > 0.05
    # no site inside the hole (beyond half a bond inside its edge)
    meta = json.loads((dist_dir / "truth.json").read_text())
    from simulate.fullfield import ScanGeometry, specimen_to_scan_px

    g = meta["scan_geometry"]
    geo = ScanGeometry(tuple(g["origin_angstrom"]), tuple(map(tuple, g["glitch_rows"])), g["wobble_phase"], None, None)
    hr, hc = specimen_to_scan_px(np.array(g["hole_centre_angstrom"][:1]), np.array(g["hole_centre_angstrom"][1:]),
                                 0.12, dist, geo)
    rows = list(csv.DictReader(open(tmp_path / "pred-distorted" / "sites.csv")))
    xy = np.array([[float(r["y_px"]), float(r["x_px"])] for r in rows])
    r_hole = np.hypot(xy[:, 0] - hr[0], xy[:, 1] - hc[0]) * 0.12
    assert (r_hole > 4.0 - 0.5 * 3.282 / SQRT3).all()
    print(json.dumps({k: {m: v[m] for m in ("recall", "position_error_fraction_of_a", "cohen_kappa", "n_true")}
                      for k, v in scores.items()}))


@pytest.mark.parametrize("shape, factor", [((41, 41), 2.0), ((40, 41), 1.5), ((32, 32), 2.0), ((33, 30), 3.0)])
def test_fourier_upsample_is_exact_for_band_limited_images(shape, factor):
    """Odd sizes included: the zero frequency must land on the zero frequency of the finer grid (an odd 41 x 41
    field once came out with mean -0.0002 instead of 0.013)."""
    from simulate.fullfield import fourier_upsample

    h, w = shape
    def image(n_rows, n_cols):  # periodic and band-limited on the coarse grid: exact on any finer one
        y, x = np.meshgrid(np.arange(n_rows) / n_rows, np.arange(n_cols) / n_cols, indexing="ij")
        return 0.013 + 0.2 * np.cos(2 * np.pi * (3 * x + 2 * y)) + 0.1 * np.sin(2 * np.pi * (x - 4 * y))

    up = fourier_upsample(image(h, w), factor)
    nh, nw = int(round(h * factor)), int(round(w * factor))
    assert up.shape == (nh, nw)
    np.testing.assert_allclose(up, image(nh, nw), atol=1e-10)


def test_scan_field_applies_the_display_export_of_its_noise_ranges(repo_root, tmp_path):
    """A field simulated under a config with ``noise.display_export`` is written as 8-bit display data (the draw
    was recorded but not applied before)."""
    import dataclasses

    from simulate.fullfield import CleanField, scan_field

    field = CleanField.load(repo_root / "tests" / "fields" / "wse2_60kev_haadf_16A_clean.npz")
    export = {"black_clip_fraction": [0.1, 0.1], "white_clip_fraction": [0.0, 0.0], "gamma": [1.0, 1.0]}
    shown = dataclasses.replace(field, noise_ranges={**field.noise_ranges, "display_export": export})
    image = np.load(scan_field(shown, tmp_path / "shown", seed=1) / "image.npy")
    counts = np.load(scan_field(field, tmp_path / "counts", seed=1) / "image.npy")
    assert image.min() == 0 and image.max() <= 255 and np.array_equal(image, np.round(image))
    assert abs((image == 0).mean() - 0.1) < 0.03  # the black level clips the drawn fraction
    assert counts.max() > 255 or not np.array_equal(counts, np.round(counts)) or (counts == 0).mean() < 0.05
