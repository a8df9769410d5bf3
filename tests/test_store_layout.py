"""Layout 2 of a simulated store: noisy patches optional, made again bit-identically from the clean scans and
seeds; stores of layout 1 (every store made before 2026-12-07) keep working: verified, encoded, repaired."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from cluster import open_client
from features.encode import encode_store
from simulate.__main__ import main as simulate_main
from simulate.patches import read_patches
from tests.test_simulate_store import array_paths, differing_arrays
from tests.test_verify import file_bytes, overwrite

REPO = Path(__file__).resolve().parents[1]
N_ROWS = 96  # the tiny store: 2 tasks x 3 environments x 2 detectors x 8 patches


def _encoded(src: Path, out: Path) -> np.ndarray:
    shutil.copytree(src, out)
    with open_client("local", n_workers=1) as client:
        encode_store(out, client)
    return zarr.open_group(str(out), mode="r")["features"][:]


def _as_layout_1(kept: Path, out: Path) -> Path:
    """A copy of a kept-patches store as a store made before layout 2 looks: no clean/scans, no layout attrs."""
    shutil.copytree(kept, out)
    shutil.rmtree(out / "clean" / "scans")
    g = zarr.open_group(str(out), mode="r+")
    attrs = dict(g.attrs)
    del attrs["layout_version"], attrs["patches_kept"]
    g.attrs.put(attrs)
    return out


def test_patches_made_from_the_scans_are_the_stored_bytes(tiny_store, tiny_store_kept):
    made, stored = read_patches(tiny_store, 0, N_ROWS), zarr.open_group(str(tiny_store_kept), mode="r")["patches"][:]
    assert made.dtype == stored.dtype == np.float32 and made.shape == stored.shape == (N_ROWS, 17, 17)
    assert made.tobytes() == stored.tobytes()  # bit-identical, every row
    assert read_patches(tiny_store_kept, 16, 48).tobytes() == stored[16:48].tobytes()
    # everything else is the same bytes; only the patches (and their digests) are missing
    assert differing_arrays(tiny_store, tiny_store_kept) == ["patches", "patches_digest"]
    a, b = dict(zarr.open_group(str(tiny_store)).attrs), dict(zarr.open_group(str(tiny_store_kept)).attrs)
    assert a.pop("patches_kept") is False and b.pop("patches_kept") is True and a == b
    with pytest.raises(ValueError, match="whole shards of 16 rows"):
        read_patches(tiny_store, 3, 16)


def test_store_without_patches_is_a_fraction_of_the_bytes(tiny_store, tiny_store_kept):
    def size(path: Path) -> int:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    patches = size(tiny_store_kept / "patches")
    assert size(tiny_store) < size(tiny_store_kept) - 0.9 * patches
    # the scans: one float32 window per (task, environment, detector), NaN beyond the window of each case
    scans = zarr.open_group(str(tiny_store), mode="r")["clean/scans"][:]
    assert scans.shape[0] == 12 and np.isfinite(scans).any(axis=(1, 2)).all()


def test_features_are_the_same_with_and_without_stored_patches(tiny_store, tiny_store_kept, tmp_path):
    without = _encoded(tiny_store, tmp_path / "without.zarr")
    kept = _encoded(tiny_store_kept, tmp_path / "kept.zarr")
    old = _encoded(_as_layout_1(tiny_store_kept, tmp_path / "old-src.zarr"), tmp_path / "old.zarr")
    assert without.tobytes() == kept.tobytes() == old.tobytes()
    assert np.isfinite(without).all()


@pytest.mark.slow
def test_damaged_scans_are_found_and_repaired_byte_identically(tiny_store, tmp_path, capsys):
    store = tmp_path / "damaged.zarr"
    shutil.copytree(tiny_store, store)
    reference = file_bytes(tiny_store)
    overwrite(store / "clean/scans/c/1/0/0", 100, b"garbage!")  # task 1's scans: its patches cannot be made
    with pytest.raises(Exception, match="clean/scans"):
        read_patches(store, 48, 64)
    assert simulate_main(["verify", str(store)]) == 3
    out = capsys.readouterr().out
    assert "bad  clean/scans chunk 1 (rows 6-11) of task 1 (TaSe2+V 60 keV): does not decode" in out
    assert "task 0" not in out
    assert simulate_main(["verify", str(store), "--repair", "--workers", "1"]) == 0
    assert file_bytes(store) == reference
    assert read_patches(store, 0, N_ROWS).tobytes() == read_patches(tiny_store, 0, N_ROWS).tobytes()


def test_a_layout_1_store_verifies_and_is_repaired_without_gaining_scans(tiny_store_kept, tmp_path, capsys):
    store = _as_layout_1(tiny_store_kept, tmp_path / "old.zarr")
    assert simulate_main(["verify", str(store)]) == 0
    assert "layout 1 (patches stored)" in capsys.readouterr().out
    reference = file_bytes(store)
    (store / "patches/c/4/0/0").unlink()
    assert simulate_main(["verify", str(store), "--repair", "--workers", "1"]) == 0
    assert file_bytes(store) == reference
    assert "scans" not in array_paths(zarr.open_group(str(store / "clean"), mode="r"))


def test_resume_keeps_the_layout_the_store_was_made_with(tiny_store, tiny_config, tmp_path, capsys):
    store = tmp_path / "copy.zarr"
    shutil.copytree(tiny_store, store)
    assert simulate_main(["--config", str(tiny_config), "--out", str(store), "--resume", "--keep-patches"]) == 2
    assert "created without its noisy patches; resume it without --keep-patches" in capsys.readouterr().err
    assert simulate_main(["--config", str(tiny_config), "--out", str(store), "--resume"]) == 0


def test_a_store_with_neither_patches_nor_scans_is_refused_before_encoding(tiny_store, tmp_path, capsys):
    from features.__main__ import main as features_main

    store = tmp_path / "bare.zarr"
    shutil.copytree(tiny_store, store)
    shutil.rmtree(store / "clean" / "scans")
    assert features_main(["encode", "--store", str(store)]) == 2
    assert "keeps no noisy patches and has no clean/scans" in capsys.readouterr().err
    assert not (store / "features").exists()


def test_check_prints_the_multislice_runs_of_the_paper_config(capsys):
    assert simulate_main(["check", "--config", str(REPO / "configs" / "dataset" / "paper.yaml")]) == 0
    out = capsys.readouterr().out
    # 96 combos x 3 energies x 34 environments, the 14 without a dopant site once per (host, energy)
    line = next(x for x in out.splitlines() if "multislice runs" in x)
    runs, fewer = int(line.split(": ")[1].split()[0]), int(line.split("(")[1].split()[0])
    assert runs + fewer == 96 * 3 * 34 and fewer > 0
