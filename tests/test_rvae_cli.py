"""``python -m rvae fit-image`` / ``fit-4dstem`` end to end on small real inputs (one training epoch), and the
one-line errors of bad input."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import zarr

from rvae.__main__ import main
from rvae.synthetic import FieldSpec, two_grain_field

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SMALL = ["--max-epochs", "1", "--", "--model.encoder_channels", "[8, 16]", "--model.encoder_hidden", "32",
         "--model.decoder_hidden", "32", "--data.batch_size", "64", "--trainer.accelerator", "cpu"]


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    spec = FieldSpec(size_px=160)
    image, truth = two_grain_field(spec, np.random.default_rng(0))
    d = tmp_path_factory.mktemp("field")
    np.save(d / "image.npy", image)
    (d / "image.json").write_text(json.dumps({"pixel_size_angstrom": spec.pixel_size_angstrom}))
    np.save(d / "bare.npy", image)  # no metadata beside it
    return d, truth


def test_fit_image_writes_atoms_csv_maps_and_a_weights_only_checkpoint(field, tmp_path):
    d, truth = field
    out = tmp_path / "out"
    assert main(["fit-image", str(d / "image.npy"), "--window-angstrom", "6", "--size-px", "15", "--period", "3",
                 "--out", str(out), *SMALL]) == 0
    with open(out / "atoms.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["x", "y", "border", "angle", "angle_std", "z1", "z2", "z1_std", "z2_std",
                             "shift_x_px", "shift_y_px", "reconstruction_error"]
    assert 0.8 * len(truth["x_px"]) < len(rows) <= len(truth["x_px"]) + 5
    angles = np.array([float(r["angle"]) for r in rows])
    assert (np.abs(angles) <= np.pi / 3 + 1e-6).all()  # period 3: φ in (-π/3, π/3]
    assert {r["border"] for r in rows} == {"0", "1"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_columns"] == len(rows) and summary["period"] == 3
    assert (out / "maps.png").stat().st_size > 0 and (out / "latent_traversal.png").is_file()
    ckpt = torch.load(out / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["period"] == 3 and ckpt["hyper_parameters"]["translation"] is True
    assert zarr.open_group(str(out / "encoded.zarr"), mode="r")["interior/angle"].shape[0] == \
        sum(r["border"] == "0" for r in rows)


def disc_scan(sx, sy, k, seed=0):
    """(sx, sy, kx, ky) counts: a disc whose offset turns with the scan position (abTEM's axis order)."""
    rng = np.random.default_rng(seed)
    kx, ky = np.mgrid[0:k, 0:k] - k // 2
    out = np.empty((sx, sy, k, k), np.float32)
    for i in range(sx):
        for j in range(sy):
            t = 2 * np.pi * (i / sx + j / sy)
            out[i, j] = rng.poisson(200 * (np.hypot(kx - 1.5 * np.cos(t), ky - 1.5 * np.sin(t)) < 3))
    return out


def test_fit_4dstem_on_an_npy_in_abtem_order(tmp_path):
    data = tmp_path / "scan.npy"
    np.save(data, disc_scan(10, 8, 12))
    out = tmp_path / "out"
    assert main(["fit-4dstem", str(data), "--out", str(out), "--fold-period-px", "4", "5", "--window", "whole",
                 "--angular-sampling-mrad", "2.0", *SMALL]) == 0
    assert np.load(out / "latents.npy").shape == (10, 8, 2)
    assert np.load(out / "angle.npy").shape == (10, 8) and np.load(out / "anomaly.npy").shape == (10, 8)
    com = np.load(out / "com.npz")
    assert set(com.files) == {"com_x", "com_y", "com_magnitude", "com_direction", "com_divergence", "icom"}
    assert com["com_x"].shape == (10, 8)
    # the 12 x 12 patterns were cropped to 11 x 11 about index 6 (abTEM's zero angle)
    assert torch.load(out / "run" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"][
        "image_size"] == 11
    assert json.loads((out / "summary.json").read_text())["item_size_px"] == 11


def test_bad_inputs_fail_in_one_line_with_exit_code_2(field, tmp_path, capsys):
    d, _ = field
    cases = [
        (["fit-image", str(d / "bare.npy"), "--window-angstrom", "6", "--out", str(tmp_path / "a")],
         "pass --pixel-size-angstrom"),
        (["fit-image", str(d / "image.npy"), "--window-angstrom", "0.5", "--out", str(tmp_path / "b")],
         "--window-angstrom 0.5 is only"),
        (["fit-image", str(tmp_path / "none.tif"), "--window-angstrom", "6", "--out", str(tmp_path / "c")],
         "does not exist"),
        (["fit-4dstem", str(d / "image.npy"), "--out", str(tmp_path / "d")], "expected a 4-D array"),
    ]
    fake = zarr.open_group(str(tmp_path / "store.zarr"), mode="w", zarr_format=3)
    fake.attrs.update({"kind": "fourdstem", "scans": ["graphene"]})
    cases.append((["fit-4dstem", str(tmp_path / "store.zarr"), "--out", str(tmp_path / "e")],
                  "pass --array SCAN/patterns/dose_D"))
    (tmp_path / "a_file").write_text("")
    cases.append((["fit-image", str(d / "image.npy"), "--window-angstrom", "6",
                   "--out", str(tmp_path / "a_file" / "x")], "which is a file"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err


def test_an_output_directory_of_other_inputs_is_not_resumed(field, tmp_path, capsys):
    d, _ = field
    out = tmp_path / "out"
    base = ["fit-image", str(d / "image.npy"), "--size-px", "15", "--out", str(out), *SMALL]
    assert main(base[:2] + ["--window-angstrom", "6"] + base[2:]) == 0
    capsys.readouterr()
    assert main(base[:2] + ["--window-angstrom", "7"] + base[2:]) == 2
    err = capsys.readouterr().err
    assert "holds a fit of other inputs" in err and "window_angstrom" in err
