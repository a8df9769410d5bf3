"""The zarr store of a real (tiny) simulation: layout, attributes, determinism, resume, validation."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from simulate import config
from simulate.__main__ import main
from simulate.patches import read_patches

ARRAYS = ("label", "case", "environment", "task_done",
          "clean/patches", "clean/label", "clean/case", "clean/environment", "clean/scans")
"""The arrays of every new store (``patches`` only with --keep-patches)."""


def array_paths(group, prefix: str = "") -> set[str]:
    out = {prefix + k for k in group.array_keys()}
    for k in group.group_keys():
        out |= array_paths(group[k], f"{prefix}{k}/")
    return out


def differing_arrays(a: Path, b: Path) -> list[str]:
    """Names of the arrays whose dtype, shape or bytes differ between two stores (or that only one holds)."""
    za, zb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    names_a, names_b = array_paths(za), array_paths(zb)
    out = sorted(names_a ^ names_b)
    for name in sorted(names_a & names_b):
        x, y = za[name][...], zb[name][...]
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != np.asarray(y).tobytes():
            out.append(name)
    return out


def assert_same_store(a: Path, b: Path) -> None:
    differing = differing_arrays(a, b)  # not inside the assert: pytest would diff megabytes of bytes
    assert not differing, f"arrays differ: {differing}"
    same_attrs = dict(zarr.open_group(str(a), mode="r").attrs) == dict(zarr.open_group(str(b), mode="r").attrs)
    assert same_attrs, "group attributes differ"


def file_digests(path: Path) -> dict[str, tuple[str, float]]:
    return {str(p.relative_to(path)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime)
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_layout_and_attributes(tiny_store):
    root = zarr.open_group(str(tiny_store), mode="r")
    attrs = root.attrs
    n_tasks, n_env, n_det, n_per, p = 2, 3, 2, 8, 17
    n = n_tasks * n_env * n_det * n_per
    assert array_paths(root) == set(ARRAYS)  # layout 2 without --keep-patches: no noisy patches on disk
    assert attrs["layout_version"] == 2 and attrs["patches_kept"] is False
    assert root["label"].dtype == np.uint8 and root["environment"].dtype == np.uint8
    assert np.issubdtype(root["case"].dtype, np.integer)
    assert root["label"].shards == (n_det * n_per,) == (attrs["rows_per_shard"],)
    assert root["task_done"][:].tolist() == [1, 1]
    assert attrs["patch_size_px"] == p and len(attrs["pixel_size_angstrom"]) == len(attrs["cases"]) == 4
    case = attrs["cases"][0]
    for key in ("host", "dopant", "beam_energy_kev", "detector", "detector_inner_mrad", "detector_outer_mrad"):
        assert key in case
    assert {c["detector"] for c in attrs["cases"]} == {"HAADF", "MAADF"}
    assert attrs["config_hash"] == config.config_hash(attrs["config"])
    assert "abtem" in attrs["versions"] and "stem-context" in attrs["versions"]
    assert len(attrs["environments"]) == 34
    # every row is filled, its label is its environment's, its case is in range
    patches = read_patches(tiny_store, 0, n)
    assert patches.shape == (n, p, p) and patches.dtype == np.float32
    assert np.isfinite(patches).all() and (patches.reshape(n, -1).std(axis=1) > 0).all()
    env = root["environment"][:]
    labels = np.array([attrs["environments"][e]["label"] for e in env])
    assert np.array_equal(root["label"][:], labels)
    assert set(np.unique(root["label"][:])) == {0, 3, 4}
    assert root["case"][:].max() == 3
    # noisy counts average to dose x pixel area x the clean fraction (a loose check of the noise model)
    clean = root["clean/patches"][:]
    assert clean.shape == (n_tasks * n_env * n_det, p, p) and np.isfinite(clean).all()
    centre = p // 2
    metal_rows = root["environment"][:] == 12
    assert patches[metal_rows, centre, centre].mean() > 0


@pytest.mark.slow
def test_resume_after_kill_gives_identical_store(tiny_store, tiny_config, tmp_path):
    out = tmp_path / "killed.zarr"
    cmd = [sys.executable, "-m", "simulate", "--config", str(tiny_config), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 600
    done = 0
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if (out / "task_done").exists():
            done = int(zarr.open_array(str(out / "task_done"), mode="r")[:].sum())
            if done >= 1:
                break
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job dies: driver and workers
    proc.wait()
    assert done == 1
    assert "task_done" in differing_arrays(out, tiny_store)  # really incomplete
    assert main(["--config", str(tiny_config), "--out", str(out), "--resume"]) == 0
    assert_same_store(out, tiny_store)


def test_rerun_of_finished_store_changes_nothing(tiny_store, tiny_config, tmp_path, capsys):
    out = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, out)
    before = file_digests(out)
    assert main(["--config", str(tiny_config), "--out", str(out), "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert file_digests(out) == before


def test_existing_store_without_resume_is_refused(tiny_store, tiny_config, capsys):
    assert main(["--config", str(tiny_config), "--out", str(tiny_store)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_store_from_another_config_is_refused(tiny_store, tiny_config, tmp_path, capsys):
    raw = yaml.safe_load(tiny_config.read_text())
    raw["base"] = str(tiny_config.parent / "paper.yaml")
    raw["seed"] = 1
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(raw))
    out = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, out)
    assert main(["--config", str(other), "--out", str(out), "--resume"]) == 2
    assert "different config" in capsys.readouterr().err


def _bad_config(tmp_path: Path, tiny_config: Path, edit) -> Path:
    raw = yaml.safe_load(tiny_config.read_text())
    raw["base"] = str(tiny_config.parent / "paper.yaml")
    full = config.load_yaml(tiny_config)
    edit(raw, full)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("field,edit", [
    ("materials.hosts.WSe2.metal", lambda raw, full: raw.setdefault("materials", {}).update(
        hosts={**full["materials"]["hosts"], "WSe2": {**full["materials"]["hosts"]["WSe2"], "metal": "Qq"}})),
    ("materials.dopants[10]", lambda raw, full: raw.setdefault("materials", {}).update(
        dopants=full["materials"]["dopants"] + ["Zz"])),
    ("selection.combos[0]", lambda raw, full: raw.update(selection={"combos": [["MoS2", "Nb"]]})),
    ("multislice.gpts.60", lambda raw, full: raw["multislice"].update(gpts={60: 128})),
    ("noise.dose_e_per_angstrom2[0]", lambda raw, full: raw.setdefault("noise", {}).update(
        dose_e_per_angstrom2=[0, 1000])),
    ("patches.patches_per_image", lambda raw, full: raw["patches"].update(patches_per_image=0)),
    ("patches.patch_size_px", lambda raw, full: raw["patches"].update(patch_size_px=32)),
    ("imaging.beam_energies_kev[0]", lambda raw, full: raw["imaging"].update(beam_energies_kev=[120])),
])
def test_bad_config_fails_before_anything_is_created(field, edit, tmp_path, tiny_config, capsys):
    bad = _bad_config(tmp_path, tiny_config, edit)
    out = tmp_path / "never.zarr"
    assert main(["--config", str(bad), "--out", str(out), "--cluster", "slurm"]) == 2
    err = capsys.readouterr().err
    assert f"error: {field}" in err, err
    assert not out.exists()
