"""Undoped samples end to end with real abTEM: a tiny store holding an undoped combo beside a doped one (the
shorter undoped task laid out and verified), its features (the dopant block all zero), a model trained on it,
and ``inference classify --dopant none`` of a simulated undoped field (no D).

One store (``tiny.yaml``'s environments X2, M and D centres; WSe2 + none and WSe2 + Cr at 60 keV; 5 abTEM runs,
32 patches per image), one model (mlp-simple on it) and one 16 x 16 Å undoped field are made once per module.
"""
from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import zarr

from contract.classes import CLASS_IDS, CLASS_NAMES
from contract.context import SHELLS
from contract.features import CONTEXT_COLUMNS
from inference.__main__ import main as inference_main
from simulate.__main__ import main as simulate_main
from simulate.run import simulate

D, M, X2 = CLASS_IDS["D"], CLASS_IDS["M"], CLASS_IDS["X2"]
DOPANT_BLOCK = slice(CONTEXT_COLUMNS.start + 2 * len(SHELLS), CONTEXT_COLUMNS.start + 3 * len(SHELLS))


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory, repo_root):
    work = tmp_path_factory.mktemp("undoped")
    cfg = work / "tiny-undoped.yaml"
    cfg.write_text(f"base: {repo_root / 'configs' / 'dataset' / 'tiny.yaml'}\nname: tiny-undoped\n"
                   "selection:\n  combos: [[WSe2, none], [WSe2, Cr]]\npatches:\n  patches_per_image: 32\n")
    store = work / "tiny-undoped.zarr"
    simulate(cfg, store, cluster="local", n_workers=2)
    subprocess.run([sys.executable, "-m", "features", "--store", str(store)], check=True, cwd=repo_root,
                   capture_output=True)
    return store


@pytest.fixture(scope="module")
def undoped_model(mixed_store, tmp_path_factory, repo_root):
    run_dir = tmp_path_factory.mktemp("undoped-model") / "run"
    subprocess.run([sys.executable, "-m", "training", "fit", "--config", "configs/train/base.yaml", "--config",
                    "configs/train/mlp-simple.yaml", "--data.store", str(mixed_store), "--run_dir", str(run_dir)],
                   check=True, cwd=repo_root, capture_output=True)
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def undoped_field(tmp_path_factory, repo_root):
    out = tmp_path_factory.mktemp("undoped-field") / "wse2"
    subprocess.run([sys.executable, "-m", "simulate", "fullfield", "--host", "WSe2", "--dopant", "none",
                    "--energy-kev", "60", "--detector", "HAADF", "--fractions", "VacX=0.08,VacX2=0.08",
                    "--size-angstrom", "16", "--rotation-deg", "11", "--seed", "5", "--out", str(out)],
                   check=True, cwd=repo_root, capture_output=True)
    return out


def test_undoped_task_holds_only_environments_without_dopant_sites(mixed_store, capsys):
    root = zarr.open_group(str(mixed_store), mode="r")
    cases = root.attrs["cases"]
    undoped_cases = [i for i, c in enumerate(cases) if c["dopant"] == "none"]
    assert [cases[i]["detector"] for i in undoped_cases] == ["HAADF", "MAADF"]
    case, label, env = root["case"][:], root["label"][:], root["environment"][:]
    undoped = np.isin(case, undoped_cases)
    # tiny.yaml's environments 0 (X2, M M M), 12 (M) and 23 (D): the undoped task simulates only 0 and 12
    assert sorted(set(env[undoped])) == [0, 12] and sorted(set(env[~undoped])) == [0, 12, 23]
    assert set(label[undoped]) == {X2, M}  # a training on this store never sees D for the undoped cases
    assert undoped.sum() == 2 * 2 * 32 and len(case) == (2 + 3) * 2 * 32
    assert root.attrs["rows_per_task"] == [128, 192]
    assert root["clean/label"].shape == (10,) and set(root["clean/label"][:4]) == {X2, M}
    # the shorter task is laid out and verified like any other
    assert simulate_main(["verify", str(mixed_store)]) == 0
    assert "verify: OK" in capsys.readouterr().out


def test_damage_in_the_short_undoped_task_is_found_and_repaired_byte_identically(mixed_store, tmp_path, capsys):
    """Task 0 (WSe2+none) owns shards 0-1 and, with clean chunks of gcd(4, 6) = 2 rows, clean chunks 0-1; task 1
    (WSe2+Cr) shards 2-4 and clean chunks 2-4. Damage in task 0's second clean chunk (chunk 1: task 1's under the
    uniform layout) must rerun task 0 only and restore every byte."""
    store = tmp_path / "damaged.zarr"
    shutil.copytree(mixed_store, store)

    def file_bytes(path):
        return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(path.rglob("*")) if p.is_file()}

    reference = file_bytes(mixed_store)
    (store / "clean/patches/c/1/0/0").write_bytes(b"garbage!")
    (store / "clean/scans/c/1/0/0").unlink()  # the scans task 0's noisy patches are made from
    assert simulate_main(["verify", str(store)]) == 3
    out = capsys.readouterr().out
    assert "bad  clean/patches chunk 1 (rows 2-3) of task 0 (WSe2+none 60 keV)" in out, out
    assert "bad  clean/scans chunk 1 (rows 2-3) of task 0 (WSe2+none 60 keV)" in out and "task 1" not in out
    assert simulate_main(["verify", str(store), "--repair", "--workers", "1"]) == 0
    assert "verify: rerunning 1 task(s): task 0 (WSe2+none 60 keV)" in capsys.readouterr().err
    repaired = file_bytes(store)
    assert sorted(repaired) == sorted(reference)
    assert [k for k in reference if repaired[k] != reference[k]] == []


def test_undoped_features_carry_the_zero_dopant_block(mixed_store):
    root = zarr.open_group(str(mixed_store), mode="r")
    features, case = root["features"][:], root["case"][:]
    undoped = np.isin(case, [i for i, c in enumerate(root.attrs["cases"]) if c["dopant"] == "none"])
    assert np.isfinite(features).all()
    assert (features[undoped][:, DOPANT_BLOCK] == 0).all()
    assert (features[~undoped][:, DOPANT_BLOCK].sum(axis=1) == pytest.approx(1.0))  # Cr's shell fractions
    # the host block is the same for both: only the dopant tells them apart
    host = slice(CONTEXT_COLUMNS.start, CONTEXT_COLUMNS.start + 2 * len(SHELLS))
    assert len(np.unique(features[:, host], axis=0)) == 1


def test_classify_undoped_field_with_dopant_none_gives_no_dopant(undoped_field, undoped_model, tmp_path, capsys):
    truth = list(csv.DictReader(open(undoped_field / "truth.csv")))
    assert {int(r["label"]) for r in truth} == {X2, CLASS_IDS["VacX"], CLASS_IDS["VacX2"], M}
    assert json.loads((undoped_field / "image.json").read_text())["dopant"] == "none"
    out = tmp_path / "pred"
    rc = inference_main(["classify", str(undoped_field / "image.npy"), "--model", str(undoped_model),
                         "--out", str(out), "--host", "WSe2", "--dopant", "none"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["context"]["dopant"] == "none" and not summary["unseen_context"]  # a trained case
    assert summary["masked_classes"] == ["D"] and summary["counts"]["D"] == 0
    assert any("class D masked" in n for n in summary["notes"])
    rows = list(csv.DictReader(open(out / "sites.csv")))
    p = np.array([[float(r[f"p_{n}"]) for n in CLASS_NAMES] for r in rows])
    assert len(rows) >= 20 and (p[:, D] == 0).all() and np.allclose(p.sum(axis=1), 1, atol=1e-4)
    assert D not in {int(r["label"]) for r in rows}
