"""The physical context encoding (contract.physical_context): the column-signal table against real abTEM, the
vector's exact properties, a data module and a fit with it, checkpoints that carry it, and old ones that load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from contract.catalog import catalog_from_mapping, load_catalog
from contract.features import model_feature_columns, model_input_names
from contract.physical_context import (
    PHYSICAL_CONTEXT_NAMES,
    PHYSICAL_CONTEXT_SIZE,
    column_signal,
    read_column_signals,
)
from inference.__main__ import main as inference_main
from inference.classifier import load_classifier
from inference.unseen_context import material_distance
from kernels.context import case_physical_context, model_inputs, physical_context_vector
from simulate.column_signals import compute_table
from training.cli import run_cli
from training.data import FeatureDataModule
from training.splits import dopant_split
from training.store import read_index
from training.synthetic import write_synthetic_store
from tests.inference_fixtures import render_specimen

REPO = Path(__file__).resolve().parents[1]
STARTER = REPO / "inference" / "models" / "starter.ckpt"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("physical") / "s.zarr", n_rows=3000)


def test_shipped_table_is_what_abtem_computes():
    """Two entries recomputed with real abTEM (a metal atom, a chalcogen pair at its host's thickness)."""
    one = catalog_from_mapping({"hosts": {"WSe2": load_catalog().hosts["WSe2"].as_config()}, "dopants": ["V"]})
    fresh = compute_table(energies=(80,), elements=["W"], catalog=one, progress=lambda _: None)
    shipped = read_column_signals()
    for kind, key in (("atoms", "W"), ("pairs", "WSe2"), ("vacuum", "")):
        for detector in ("HAADF", "MAADF"):
            assert column_signal(fresh, kind, key, 80, detector) == pytest.approx(
                column_signal(shipped, kind, key, 80, detector), rel=1e-4, abs=1e-9)


def test_vector_layout_and_exact_properties():
    v = physical_context_vector("WSe2", "W", "Se", "V", "MAADF", 80)
    assert v.shape == (PHYSICAL_CONTEXT_SIZE,) == (10,) and v.dtype == np.float32
    np.testing.assert_array_equal(v[5:], [0, 1, 0, 1, 0])  # MAADF, 80 keV one-hots
    # the host metal as "dopant" is the metal column itself: ln 1 = 0
    assert physical_context_vector("WSe2", "W", "Se", "W", "HAADF", 60)[2] == pytest.approx(0.0, abs=1e-6)
    undoped = physical_context_vector("WSe2", "W", "Se", "none", "HAADF", 60)
    assert undoped[2] == 0 and undoped[3] == 0 and v[3] == 1
    # HAADF collects nothing of the unscattered beam; MAADF (inner angle 30 < 31 mrad) collects its rim
    assert 0 <= undoped[4] < 1e-5 and v[4] > 0.05
    # the pair outshines one atom of it
    assert v[0] > v[1]


def test_column_order_follows_the_physics_where_shell_fractions_do_not():
    """WSe2: W brighter than Se2 in HAADF, Se2 brighter in MAADF (as the store's clean patches measure);
    WTe2's Te2/W contrast lies between WSe2's and MoTe2's (an interpolation, not a new regime)."""
    haadf = {h: physical_context_vector(h, m, x, "V", "HAADF", 80)[0]
             for h, m, x in (("WSe2", "W", "Se"), ("WTe2", "W", "Te"), ("MoTe2", "Mo", "Te"))}
    assert physical_context_vector("WSe2", "W", "Se", "V", "MAADF", 80)[0] > 0 > haadf["WSe2"]
    assert haadf["WSe2"] < haadf["WTe2"] < haadf["MoTe2"]


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="detector"):
        physical_context_vector("WSe2", "W", "Se", "V", "BF", 80)
    with pytest.raises(ValueError, match="beam_energy_kev"):
        physical_context_vector("WSe2", "W", "Se", "V", "HAADF", 90)
    with pytest.raises(ValueError, match="python -m simulate column-signals"):
        physical_context_vector("WSe2", "W", "Se", "Xe", "HAADF", 80)
    with pytest.raises(ValueError, match="host 'Foo2'"):
        physical_context_vector("Foo2", "W", "Se", "V", "HAADF", 80)
    with pytest.raises(ValueError, match="context_encoding"):
        model_feature_columns("all", "orbitals")


def test_model_inputs_put_the_context_before_the_stored_columns():
    stored = np.arange(2 * 31, dtype=np.float32).reshape(2, 31)
    cols = model_feature_columns("all", "physical")
    assert cols == list(range(23, 31))
    ctx = physical_context_vector("MoS2", "Mo", "S", "V", "HAADF", 60)
    x = model_inputs(stored, cols, ctx)
    assert x.shape == (2, 18)
    np.testing.assert_array_equal(x[:, :10], np.stack([ctx, ctx]))
    np.testing.assert_array_equal(x[:, 10:], stored[:, 23:])
    np.testing.assert_array_equal(model_inputs(stored, model_feature_columns("all", "shells"), None), stored)
    names = model_input_names("all", "physical")
    assert names[:10] == list(PHYSICAL_CONTEXT_NAMES) and names[10] == "zernike_n0_m0" and len(names) == 18
    assert model_input_names("zernike", "physical") == model_input_names("zernike", "shells")


def test_datamodule_replaces_the_stored_context_per_case(store):
    dm = FeatureDataModule(store=store, context_encoding="physical", seed=0)
    dm.setup("fit")
    index = read_index(store)
    full = np.asarray(zarr.open_group(store, mode="r")["features"][:])
    expected = np.stack([case_physical_context(index.meta.cases[k]) for k in index.case[dm.train_rows]])
    assert dm.n_features == 18 and dm.train_x.shape == (len(dm.train_rows), 18)
    np.testing.assert_array_equal(dm.train_x.numpy()[:, :10], expected)
    np.testing.assert_array_equal(dm.train_x.numpy()[:, 10:], full[dm.train_rows][:, 23:])
    with pytest.raises(ValueError, match="data.context_encoding"):
        FeatureDataModule(store=store, context_encoding="orbitals")


def test_dopant_split_holds_out_a_dopant_from_every_host():
    dopants = np.array(["V", "Re", "V", "Nb", "Re"])
    train, test = dopant_split(dopants, ["Re"])
    np.testing.assert_array_equal(test, [1, 4])
    np.testing.assert_array_equal(train, [0, 2, 3])
    with pytest.raises(ValueError, match=r"test_dopants \['Fe'\].*dopants in this store"):
        dopant_split(dopants, ["Fe"])
    with pytest.raises(ValueError, match="needs test_dopants"):
        dopant_split(dopants, [])


def test_fit_with_the_physical_encoding_and_the_checkpoint_says_so(store, tmp_path, capsys):
    run_dir = tmp_path / "phys"
    train = REPO / "configs" / "train"
    run_cli(["fit", "--config", str(train / "base.yaml"), "--config", str(train / "mlp-simple.yaml"),
             "--config", str(train / "physical.yaml"), "--data.store", store, "--run_dir", str(run_dir),
             "--trainer.accelerator", "cpu", "--trainer.strategy", "auto", "--trainer.devices", "1",
             "--data.batch_size", "256", "--schedule.kind", "paper", "--trainer.max_epochs", "2"])
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"]["model.blocks.0.weight"].shape[1] == 18
    clf = load_classifier(run_dir / "checkpoints" / "last.ckpt")
    assert clf.context_encoding == "physical" and clf.feature_columns == list(range(23, 31))
    # inference computes the frame's physical context and writes which encoding the model uses
    image = np.random.default_rng(0).poisson(200 * render_specimen(20.2, 0.12)[0][:160, :160] + 50)
    np.save(tmp_path / "frame.npy", image.astype(np.uint16))
    (tmp_path / "frame.json").write_text(json.dumps({"pixel_size_angstrom": 0.12}))
    rc = inference_main(["classify", str(tmp_path / "frame.npy"), "--model", str(run_dir / "checkpoints" / "last.ckpt"),
                         "--host", "MoS2", "--dopant", "V", "--energy-kev", "60", "--detector", "HAADF",
                         "--patch-size-px", "17", "--out", str(tmp_path / "out")])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert rc == 0 and summary["context_encoding"] == "physical" and summary["n_sites"] > 20
    # an unseen host is graded by the column-contrast distance
    rc = inference_main(["classify", str(tmp_path / "frame.npy"), "--model", str(run_dir / "checkpoints" / "last.ckpt"),
                         "--host", "WTe2", "--dopant", "V", "--energy-kev", "60", "--detector", "HAADF",
                         "--patch-size-px", "17", "--out", str(tmp_path / "unseen")])
    assert rc == 4 and "column-contrast distance to the nearest trained material" in capsys.readouterr().err
    # an element the column-signal table lacks: exit 2 naming the command, not a traceback
    rc = inference_main(["classify", str(tmp_path / "frame.npy"), "--model", str(run_dir / "checkpoints" / "last.ckpt"),
                         "--host", "MoS2", "--dopant", "Ga", "--energy-kev", "60", "--detector", "HAADF",
                         "--patch-size-px", "17", "--allow-unseen-context", "--out", str(tmp_path / "ga")])
    err = capsys.readouterr().err
    assert rc == 2 and "python -m simulate column-signals" in err and "Traceback" not in err
    # without physical.yaml's in_features the mismatch is named
    with pytest.raises(ValueError, match="context_encoding='physical'.*in_features: 18"):
        run_cli(["fit", "--config", str(train / "base.yaml"), "--config", str(train / "mlp-simple.yaml"),
                 "--data.store", store, "--run_dir", str(tmp_path / "bad"), "--data.context_encoding", "physical",
                 "--trainer.accelerator", "cpu", "--trainer.strategy", "auto", "--trainer.devices", "1",
                 "--trainer.max_epochs", "1"])


def test_old_checkpoints_load_as_the_paper_encoding():
    clf = load_classifier(STARTER)  # written before the encoding was recorded
    assert clf.context_encoding == "shells" and len(clf.feature_columns) == 31


def test_material_distance_in_the_physical_space_compares_the_same_detector():
    cat = load_catalog()

    def case(host, dopant, detector):
        return {"host": host, "metal": cat.hosts[host].metal, "chalcogen": cat.hosts[host].chalcogen,
                "dopant": dopant, "beam_energy_kev": 80, "detector": detector}

    cases = [case("WSe2", "V", "HAADF"), case("MoTe2", "V", "HAADF"), case("WTe2", "V", "MAADF")]
    d, nearest = material_distance(case("WTe2", "V", "HAADF"), cases, "physical")
    assert nearest["detector"] == "HAADF" and d > 0
    d0, same = material_distance(case("WSe2", "V", "HAADF"), cases, "physical")
    assert d0 == 0 and same["host"] == "WSe2"
