"""The 4D-STEM kind of the simulation stage, on a real (tiny) abTEM simulation on a real LocalCluster: layout,
physics, Poisson counts, determinism, resume, config errors."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from contract import fourdstem as schema
from contract.errors import ConfigError
from contract.fourdstem import pattern_path, read_scan_meta
from contract.store import StoreError
from simulate import fourdstem as fd
from simulate.fourdstem_run import simulate_fourdstem

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dataset" / "fourdstem-tiny.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fourdstem") / "tiny4d.zarr"
    simulate_fourdstem(CONFIG, out, n_workers=2)
    return out


def test_layout_and_attributes(store):
    meta = read_scan_meta(store, "graphene")
    assert meta.scan_shape == (12, 12) and meta.pattern_size_px == 15 and meta.fold_period_px == (6, 4)
    assert meta.rows_per_shard == 6 * 12 and meta.doses_e_per_angstrom2 == (100000.0,)
    assert [d["kind"] for d in meta.defects] == ["vacancy"]
    root = zarr.open_group(str(store), mode="r")
    clean = root[pattern_path("graphene")]
    assert clean.shape == (144, 15, 15) and clean.dtype == np.float32 and clean.shards == (72, 15, 15)
    assert root[schema.TASK_DONE][:].tolist() == [1, 1]
    for name in schema.ROW_ARRAYS:
        assert np.isfinite(root["graphene"][name][:]).all()
    # row 13 = scan line 1, column 1: (x, y) one step along each axis
    np.testing.assert_allclose(root["graphene"][schema.POSITION][13], [0.615, 0.71014], atol=1e-4)
    with pytest.raises(StoreError, match="no scan 'graphite'"):
        read_scan_meta(store, "graphite")


def test_patterns_conserve_the_beam_and_counts_are_poisson_at_the_dose(store):
    root = zarr.open_group(str(store), mode="r")
    meta = read_scan_meta(store, "graphene")
    clean = root[pattern_path("graphene")][:].astype(np.float64)
    counts = root[pattern_path("graphene", 1e5)][:].astype(np.float64)
    sums = clean.sum(axis=(1, 2))
    assert (sums > 0.98).all() and (sums <= 1.0 + 1e-5).all()  # the pattern holds ~all the beam
    area = meta.scan_sampling_angstrom[0] * meta.scan_sampling_angstrom[1]
    expected = clean * 1e5 * area
    assert np.array_equal(counts, np.round(counts))
    z = (counts.sum() - expected.sum()) / np.sqrt(expected.sum())
    assert abs(z) < 4
    bright = expected > 50  # per-pixel variance equals the mean
    resid = (counts[bright] - expected[bright]) / np.sqrt(expected[bright])
    assert abs(resid.mean()) < 0.1 and 0.9 < resid.std() < 1.1


def test_com_points_at_the_nearest_atom_and_the_vacancy_breaks_the_lattice(store):
    from kernels.com import center_of_mass
    from rvae.maps import periodic_residual
    from rvae.metrics import circular_correlation

    root = zarr.open_group(str(store), mode="r")
    meta = read_scan_meta(store, "graphene")
    ny, nx = meta.scan_shape
    clean = root[pattern_path("graphene")][:].reshape(ny, nx, 15, 15)
    cx, cy = center_of_mass(clean, meta.angular_sampling_mrad)
    distance = root["graphene"][schema.NEAREST_ATOM_DISTANCE][:]
    direction = root["graphene"][schema.NEAREST_ATOM_DIRECTION][:]
    ring = (distance > 0.2) & (distance < 0.9) & (root["graphene"][schema.DEFECT_DISTANCE][:] > 1.5)
    assert circular_correlation(np.arctan2(cy, cx).ravel()[ring], direction[ring]) > 0.5
    # the vacancy: the periodic residual of the patterns is largest next to it
    resid = np.abs(periodic_residual(clean.reshape(ny, nx, -1), meta.fold_period_px)).sum(-1)
    defect_d = root["graphene"][schema.DEFECT_DISTANCE][:].reshape(ny, nx)
    assert defect_d[np.unravel_index(np.argmax(resid), resid.shape)] < 1.0


@pytest.mark.slow
def test_rerun_is_byte_identical_and_resume_finishes_a_killed_run(store, tmp_path):
    again = tmp_path / "again.zarr"
    simulate_fourdstem(CONFIG, again, n_workers=1)
    a, b = zarr.open_group(str(store), mode="r"), zarr.open_group(str(again), mode="r")
    for name in ("patterns/clean", "patterns/dose_100000", *schema.ROW_ARRAYS):
        x, y = a["graphene"][name][:], b["graphene"][name][:]
        assert x.tobytes() == y.tobytes(), name
    # a run that died after task 0: task 1's shard lost, its marker unset
    g = zarr.open_group(str(again), mode="r+")
    g["graphene/patterns/dose_100000"][72:] = np.nan
    g[schema.TASK_DONE][1] = 0
    with pytest.raises(StoreError, match="--resume"):
        simulate_fourdstem(CONFIG, again, n_workers=1)
    summary = simulate_fourdstem(CONFIG, again, n_workers=1, resume=True)
    assert summary["tasks_run"] == 1
    assert a["graphene/patterns/dose_100000"][:].tobytes() == \
        zarr.open_group(str(again), mode="r")["graphene/patterns/dose_100000"][:].tobytes()


@pytest.mark.parametrize("path, value, field", [
    (("detector", "pattern_size_px"), 16, "detector.pattern_size_px"),
    (("detector", "bin_factor"), 2, "detector.bin_factor"),
    (("imaging", "doses_e_per_angstrom2"), [1.5e4, 0.5], "imaging.doses_e_per_angstrom2[1]"),
    (("scans", "graphene", "structure"), "graphite", "scans.graphene.structure"),
    (("scans", "graphene", "vacancies"), [{"at": [1.2, 0.1]}], "scans.graphene.vacancies[0].at"),
    (("scans", "graphene", "dopants"), [{"element": "Xx", "at": [0.1, 0.1]}], "scans.graphene.dopants[0].element"),
    (("kind",), "patches", "kind"),
])
def test_config_errors_name_the_field(path, value, field):
    raw = yaml.safe_load(CONFIG.read_text())
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = copy.deepcopy(value)
    with pytest.raises(ConfigError, match="^" + re.escape(field)):
        fd.resolve(raw)


def test_cli_reports_a_bad_config_in_one_line(tmp_path, capsys):
    from simulate.__main__ import main

    raw = yaml.safe_load(CONFIG.read_text())
    raw["detector"]["pattern_size_px"] = 14
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    assert main(["fourdstem", "--config", str(bad), "--out", str(tmp_path / "x.zarr")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: detector.pattern_size_px")
    assert not (tmp_path / "x.zarr").exists()


def test_bin_patterns_keeps_the_zero_angle_on_the_centre_pixel():
    p = np.zeros((1, 46, 47))
    p[0, 23, 23] = 1.0  # abTEM's zero angle of even/odd sizes: index n // 2
    p[0, 23, 26] = 2.0  # 3 px to +kx
    out = fd.bin_patterns(p, 7, 3)
    assert out.shape == (1, 7, 7) and out[0, 3, 3] == 1.0 and out[0, 3, 4] == 2.0 and out.sum() == 3.0
    with pytest.raises(ValueError, match="too small"):
        fd.bin_patterns(p, 31, 3)
