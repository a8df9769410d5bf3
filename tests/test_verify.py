"""``python -m simulate verify`` and ``python -m features verify`` on the real tiny store (real abTEM, real zarr,
real LocalCluster): damaged in several ways, named shard by shard, repaired byte-identically."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from cluster import open_client
from contract.store import chunk_compressors
from features.__main__ import main as features_main
from features.encode import encode_store
from simulate.__main__ import main as simulate_main

from .store_fixtures import TINY_CONFIG

pytestmark = pytest.mark.timeout(900)


def file_bytes(path: Path) -> dict[str, str]:
    """sha256 of every file of a store, by relative path."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def mtimes(path: Path, under: str) -> dict[str, int]:
    return {str(p.relative_to(path)): p.stat().st_mtime_ns for p in sorted((path / under).rglob("*")) if p.is_file()}


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def truncate(path: Path, fraction: float = 0.5) -> None:
    os.truncate(path, int(path.stat().st_size * fraction))


@pytest.fixture(scope="module")
def encoded_store(tiny_store_kept, tmp_path_factory) -> Path:
    """The tiny store with its features encoded (a copy: the session's tiny_store_kept stays untouched)."""
    out = tmp_path_factory.mktemp("verify") / "encoded.zarr"
    shutil.copytree(tiny_store_kept, out)
    with open_client("local", n_workers=1) as client:
        encode_store(out, client)
    return out


def test_new_stores_checksum_every_chunk(encoded_store):
    g = zarr.open_group(str(encoded_store), mode="r")
    for name in ("patches", "label", "clean/patches", "task_done", "features", "features_done"):
        codecs = g[name].metadata.to_dict()["codecs"]
        inner = codecs[0]["configuration"]["codecs"] if codecs[0]["name"] == "sharding_indexed" else codecs
        assert [c["name"] for c in inner][-1] == "crc32c", (name, inner)
    assert [c.to_dict()["name"] for c in chunk_compressors()] == ["zstd", "crc32c"]


def tiny_hash() -> str:
    """tiny.yaml's config hash (12 characters), computed from the file, not read from the store under test."""
    from simulate import config

    return config.config_hash(config.load(TINY_CONFIG))[:12]


def test_undamaged_store_verifies_and_nothing_changes(encoded_store, capsys):
    before = (file_bytes(encoded_store), mtimes(encoded_store, "."))
    assert simulate_main(["verify", str(encoded_store)]) == 0
    assert features_main(["verify", "--store", str(encoded_store)]) == 0
    out = capsys.readouterr().out
    assert f"config hash {tiny_hash()} OK, 2 tasks, 6 shards x 4 arrays" in out and out.count("verify: OK") == 2
    assert (file_bytes(encoded_store), mtimes(encoded_store, ".")) == before


@pytest.mark.slow
def test_simulate_verify_names_damage_and_repair_is_byte_identical(tiny_store_kept, tmp_path, capsys):
    store = tmp_path / "damaged.zarr"
    shutil.copytree(tiny_store_kept, store)
    reference = file_bytes(tiny_store_kept)
    # task 1 owns shards 3, 4, 5 and clean chunk 1; every kind of damage goes there, so task 0 must not rerun
    truncate(store / "patches/c/3/0/0")                                   # a truncated shard
    overwrite(store / "patches/c/4/0/0", 2000, b"\xff" * 64)              # bytes overwritten inside a chunk
    (store / "case/c/5").unlink()                                         # a deleted shard
    assert not (store / "label/c/3").exists()                             # all-zero labels are never stored...
    (store / "label/c/3").write_bytes(os.urandom(300))                    # ...a garbage file where none belongs
    overwrite(store / "clean/patches/c/1/0/0", 100, b"garbage!")           # a damaged clean chunk
    zarr.open_group(str(store), mode="r+")["task_done"][1] = 0            # a flipped marker
    g = zarr.open_group(str(store), mode="r+")
    attrs = dict(g.attrs)
    del attrs["tasks"]                                                    # a derived attribute removed
    g.attrs.put(attrs)
    task0 = {k: v for k, v in mtimes(store, ".").items() if k.split("/c/")[-1].split("/")[0] in ("0", "1", "2")
             and not k.startswith(("clean", "task_done"))}

    assert simulate_main(["verify", str(store)]) == 3
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    for line in ("bad  attrs: tasks differ from what attrs['config'] gives",
                 "bad  patches shard 3 (rows 48-63) of task 1 (TaSe2+V 60 keV): does not decode (ValueError: Stored "
                 "and computed checksum do not match)",
                 "bad  patches shard 4 (rows 64-79) of task 1 (TaSe2+V 60 keV): does not decode",
                 "bad  case shard 5 (rows 80-95) of task 1 (TaSe2+V 60 keV): 16 of 16 rows differ from the plan",
                 "bad  label shard 3 (rows 48-63) of task 1 (TaSe2+V 60 keV): does not decode",
                 "bad  clean/patches chunk 1 (rows 6-11) of task 1 (TaSe2+V 60 keV): does not decode",
                 "bad  task_done[1] of task 1 (TaSe2+V 60 keV): marker 0: not done"):
        assert line in out, out
    assert "task 0" not in out
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: store '{store}': 7 problem(s) in 1 task(s) [1]; repair with "
                          f"`python -m simulate verify {store} --repair`")

    assert simulate_main(["verify", str(store), "--repair", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "verify: rerunning 1 task(s): task 1 (TaSe2+V 60 keV)" in captured.err
    assert "verify: repaired: reran 1 task(s); the store verifies OK" in captured.out
    repaired = file_bytes(store)
    assert sorted(repaired) == sorted(reference)
    assert [k for k in reference if repaired[k] != reference[k]] == []  # every file, byte for byte
    assert {k: v for k, v in mtimes(store, ".").items() if k in task0} == task0  # task 0 was not rewritten


def test_features_verify_names_damage_and_repair_is_byte_identical(encoded_store, tmp_path, capsys):
    store = tmp_path / "features.zarr"
    shutil.copytree(encoded_store, store)
    reference = file_bytes(encoded_store)
    overwrite(store / "features/c/1/0", 100, b"XXXX")        # bytes overwritten inside a chunk
    truncate(store / "features/c/2/0", 0.3)                  # a truncated shard
    zarr.open_group(str(store), mode="r+")["features_done"][3] = 7   # a marker of another value
    (store / "features/c/4/0").unlink()                      # a deleted shard (still marked done)
    zarr.open_group(str(store), mode="r+")["features_done"][5] = 0   # a flipped marker
    shard0 = mtimes(store, "features/c/0")

    assert features_main(["verify", "--store", str(store)]) == 3
    captured = capsys.readouterr()
    for line in ("bad  features shard 1 (rows 16-31): does not decode (ValueError: Stored and computed checksum",
                 "bad  features shard 2 (rows 32-47): does not decode",
                 "bad  features_done[3]: marker 7: not 0 or 1 (damaged)",
                 "bad  features shard 4 (rows 64-79): 16 of 16 rows hold NaN or inf",
                 "bad  features_done[5]: marker 0: not done"):
        assert line in captured.out, captured.out
    assert "shard 0" not in captured.out
    assert captured.err == (f"error: store '{store}': 5 problem(s) in the feature arrays (5 shard(s) [1, 2, 3, 4, 5]); "
                            f"repair with `python -m features verify --store {store} --repair` (re-encodes exactly "
                            "those shards)\n")

    assert features_main(["verify", "--store", str(store), "--repair", "--n-workers", "1"]) == 0
    assert "re-encoded 5 shard(s) [1, 2, 3, 4, 5]; the feature arrays verify OK" in capsys.readouterr().out
    assert file_bytes(store) == reference
    assert mtimes(store, "features/c/0") == shard0  # the good shard was not rewritten


@pytest.mark.parametrize("damage,finding", [
    ("names", "bad  features: attrs['feature_names'] missing or not this version's layout"),
    ("table", "bad  features: attrs['site_symmetry'] missing"),
    ("dtype", "bad  features: dtype float64, expected float32"),
    ("markers", "bad  features_done: missing"),
])
def test_damaged_feature_arrays_are_re_encoded_whole(encoded_store, tmp_path, capsys, damage, finding):
    store = tmp_path / "features.zarr"
    shutil.copytree(encoded_store, store)
    reference = file_bytes(encoded_store)
    g = zarr.open_group(str(store), mode="r+")
    if damage in ("names", "table"):
        attrs = dict(g["features"].attrs)
        del attrs["feature_names" if damage == "names" else "site_symmetry"]
        g["features"].attrs.put(attrs)
    elif damage == "dtype":
        data = g["features"][:]
        g.create_array("features", data=data.astype(np.float64), overwrite=True)
    else:
        shutil.rmtree(store / "features_done")
    assert features_main(["verify", "--store", str(store)]) == 3
    out = capsys.readouterr()
    assert finding in out.out and "(all shards)" in out.err
    assert features_main(["verify", "--store", str(store), "--repair", "--n-workers", "1"]) == 0
    assert file_bytes(store) == reference


@pytest.mark.parametrize("damage,problem", [
    ("hash", "bad  attrs: attrs['config_hash'] '000000000000' is not the hash of attrs['config'] ({hash})"),
    ("config", "bad  attrs: attrs['config'] is missing"),
    ("array", "bad  environment: missing [not repairable in place]"),
    ("dtype", "bad  label: dtype int64, expected uint8 [not repairable in place]"),
    ("metadata", "bad  case: metadata unreadable (JSONDecodeError"),
])
def test_unrepairable_damage_is_named_and_refused(tiny_store_kept, tmp_path, capsys, damage, problem):
    store = tmp_path / "unrepairable.zarr"
    shutil.copytree(tiny_store_kept, store)
    g = zarr.open_group(str(store), mode="r+")
    problem = problem.format(hash=tiny_hash())
    if damage in ("hash", "config"):
        attrs = dict(g.attrs)
        if damage == "hash":
            attrs["config_hash"] = "0" * 64
        else:
            del attrs["config"]
        g.attrs.put(attrs)
    elif damage == "array":
        shutil.rmtree(store / "environment")
    elif damage == "dtype":
        g.create_array("label", data=g["label"][:].astype(np.int64), overwrite=True)
    else:
        (store / "case" / "zarr.json").write_text('{"shape": [96], "data_ty')
    before = file_bytes(store)
    assert simulate_main(["verify", str(store)]) == 3
    captured = capsys.readouterr()
    assert problem in captured.out, captured.out
    assert "it cannot be repaired in place (" in captured.err and "): simulate its config into a new store" \
        in captured.err and problem[5:].split(" [not")[0] in captured.err
    assert simulate_main(["verify", str(store), "--repair"]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"error: store '{store}' cannot be repaired in place:") and err.count("\n") == 1
    assert file_bytes(store) == before  # refused: nothing written


def test_store_without_chunk_checksums_is_verified_by_decoding_finiteness_and_markers(tiny_store_kept, tmp_path, capsys):
    """Stores written before chunk checksums (inner codecs end in zstd) are still checked: a deleted shard
    reads as NaN, a garbled index fails its own crc32c, a flipped marker is 0."""
    store = tmp_path / "old.zarr"
    shutil.copytree(tiny_store_kept, store)
    g = zarr.open_group(str(store), mode="r+")
    for name in ("patches", "label"):
        old = g[name]
        data = old[:]
        g.create_array(name, shape=old.shape, dtype=old.dtype, chunks=old.chunks, shards=old.shards,
                       fill_value=old.fill_value, overwrite=True)[:] = data  # zarr's default codecs: no chunk crc
    assert simulate_main(["verify", str(store)]) == 0
    (store / "patches/c/0/0/0").unlink()
    overwrite(store / "label/c/2", -8 + (store / "label/c/2").stat().st_size, b"\x00" * 8)
    zarr.open_group(str(store), mode="r+")["task_done"][1] = 0
    assert simulate_main(["verify", str(store)]) == 3
    out = capsys.readouterr().out
    assert "bad  patches shard 0 (rows 0-15) of task 0 (WSe2+Cr 60 keV): 16 of 16 rows hold NaN or inf" in out
    assert "bad  label shard 2 (rows 32-47) of task 0 (WSe2+Cr 60 keV): does not decode" in out
    assert "bad  task_done[1] of task 1 (TaSe2+V 60 keV): marker 0" in out


def test_progress_of_in_process_work_is_sparse():
    import io

    from cluster import track_items

    quiet = io.StringIO()
    assert list(track_items(range(4), label="verify", unit="task", stream=quiet)) == [0, 1, 2, 3]
    assert quiet.getvalue() == ""  # short work prints nothing
    loud = io.StringIO()
    assert list(track_items(iter(range(3)), label="verify", unit="task", total=3, stream=loud, interval_s=0)) == [0, 1, 2]
    lines = loud.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].startswith("verify: 1/3 tasks (33.3%)") and lines[-1].endswith("done")
