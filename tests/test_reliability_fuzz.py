"""Issue 21: bounded, seeded fuzz of the surfaces this issue hardened, each case asserting a clean outcome.

- checkpoints: 40 seeded single-byte flips and 8 truncations of a real ``training fit`` checkpoint. Each either
  loads to exactly the original weights, or is refused in one line (exit 2 unreadable, exit 3 weights changed):
  a file whose weights torch itself reads as different is never accepted.
- images: seeded scalings over 600 orders of magnitude, sign flips and offsets of a lattice image through
  ``inference classify``: exit 0 or one ``error:`` line with exit 2, never "unexpected", never a NaN in the
  summary.
- stores: 24 seeded damages (flipped byte, truncation, deletion, swap with another shard) of the files of a
  complete store: ``simulate verify`` + ``features verify`` report the damaged array, and training's data check
  refuses the store (exit 2/3) unless the damage only touched ``patches`` (which training does not read).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from distributed import Client

from contract import store as schema
from contract.errors import EXIT_BAD_INPUT, EXIT_CORRUPT_DATA, StemError
from features.encode import encode_store
from features.verify import verify_features
from inference.__main__ import main as inference_main
from simulate.verify import verify_store
from training.data import FeatureDataModule
from training.evaluate import read_checkpoint
from training.store import read_rows
from tests.store_fixtures import TINY_CONFIG
from tests.test_inference_fuzz import CTX, lattice_image
from tests.test_reliability_stores import write_plan_store

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("one_torch_thread")]


def _outcome(path: Path) -> int:
    try:
        read_checkpoint(path)
    except StemError as err:
        assert "\n" not in str(err) and path.name in str(err), str(err)
        return err.exit_code
    return 0


def _torch_weights(path: Path) -> dict | None:
    """The state_dict torch reads from ``path`` (None when it does not load)."""
    try:
        return torch.load(path, weights_only=True)["state_dict"]
    except Exception:
        return None


def test_checkpoint_fuzz(synthetic_checkpoints, tmp_path, capsys):
    good = Path(synthetic_checkpoints["mlp-simple"])
    original = torch.load(good, weights_only=True)["state_dict"]
    data = good.read_bytes()
    rng = np.random.default_rng(21)
    outcomes = {}
    for i in range(40):
        flipped = bytearray(data)
        offset = int(rng.integers(len(data)))
        flipped[offset] ^= 1 << int(rng.integers(8))
        path = tmp_path / f"flip{i}.ckpt"
        path.write_bytes(bytes(flipped))
        rc = _outcome(path)
        outcomes[f"flip @{offset}"] = rc
        weights = _torch_weights(path)
        changed = weights is not None and any(not torch.equal(weights[k], original[k]) for k in original)
        assert rc in (0, EXIT_BAD_INPUT, EXIT_CORRUPT_DATA), (offset, rc)
        if changed:  # torch reads other weights: they must never be accepted
            assert rc == EXIT_CORRUPT_DATA, (offset, rc)
    for i, cut in enumerate(np.linspace(0, len(data) - 1, 8).astype(int)):
        path = tmp_path / f"cut{i}.ckpt"
        path.write_bytes(data[:cut])
        outcomes[f"cut {cut}"] = rc = _outcome(path)
        assert rc == EXIT_BAD_INPUT, (cut, rc)
    assert EXIT_CORRUPT_DATA in outcomes.values(), outcomes  # the seeded flips do reach the weights
    capsys.readouterr()


@pytest.mark.timeout(900)
def test_image_scale_fuzz(synthetic_checkpoints, tmp_path, capsys):
    base = lattice_image().astype(np.float64)
    rng = np.random.default_rng(7)
    transforms = {f"x 1e{e}": (lambda im, e=e: im * 10.0 ** e) for e in (300, 200, 100, -100, -200, -300)}
    transforms.update({"negated": lambda im: -im, "offset 1e12": lambda im: im + 1e12,
                       "one pixel 1e300": lambda im: np.where(np.arange(im.size).reshape(im.shape) == 77, 1e300, im)})
    for name in rng.permutation(list(transforms)):
        image = transforms[name](base)
        path = tmp_path / f"{abs(hash(name))}.npy"
        np.save(path, image)
        path.with_suffix(".json").write_text(json.dumps({"pixel_size_angstrom": 0.12}))
        out = tmp_path / f"out-{abs(hash(name))}"
        rc = inference_main(["classify", str(path), "--model", str(synthetic_checkpoints["mlp-simple"]), *CTX,
                             "--out", str(out)])
        err = capsys.readouterr().err
        errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert rc in (0, EXIT_BAD_INPUT) and "Traceback" not in err and "unexpected" not in err, (name, err)
        assert "Warning" not in err, (name, err)  # numpy overflow warnings are not a message
        if rc:
            assert len(errors) == 1 and not out.exists(), (name, err)
        else:
            json.loads((out / "summary.json").read_text(), parse_constant=lambda c: pytest.fail(f"{name}: {c}"))
        if name in ("x 1e300", "x 1e-300"):
            assert rc == EXIT_BAD_INPUT and ("overflow" in errors[0] or "underflow" in errors[0]), (name, errors)


@pytest.fixture(scope="module")
def plan_store(tmp_path_factory) -> Path:
    store = write_plan_store(tmp_path_factory.mktemp("fuzz-store") / "s.zarr", TINY_CONFIG, seed=3)
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        encode_store(store, client)
    return store


def _shard_files(store: Path, name: str) -> list[Path]:
    return sorted(p for p in (store / name / "c").rglob("*") if p.is_file())


def _damage(store: Path, rng, name: str, kind: str) -> bool:
    """Damage one shard file of ``name``; False when there was nothing to damage (no such stored shard)."""
    files = _shard_files(store, name)
    if not files or (kind == "swap" and len(files) < 2):
        return False
    f = files[int(rng.integers(len(files)))]
    size = f.stat().st_size
    if kind == "flip":
        with open(f, "r+b") as fh:
            fh.seek(int(rng.integers(size)))
            byte = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([byte[0] ^ (1 << int(rng.integers(8)))]))
    elif kind == "truncate":
        os.truncate(f, int(rng.integers(size)))
    elif kind == "delete":
        f.unlink()
    else:
        other = [g for g in files if g != f and g.read_bytes() != f.read_bytes()]
        if not other:
            return False
        g = other[int(rng.integers(len(other)))]
        a, b = f.read_bytes(), g.read_bytes()
        f.write_bytes(b)
        g.write_bytes(a)
    return True


def test_store_fuzz(plan_store, tmp_path, capsys):
    rng = np.random.default_rng(2121)
    arrays = (schema.PATCHES, schema.LABEL, schema.CASE, schema.ENVIRONMENT, schema.FEATURES)
    tried = 0
    for i in range(24):
        name, kind = arrays[i % len(arrays)], ("flip", "truncate", "delete", "swap")[int(rng.integers(4))]
        store = tmp_path / f"s{i}.zarr"
        shutil.copytree(plan_store, store)
        if not _damage(store, rng, name, kind):
            shutil.rmtree(store)
            continue
        tried += 1
        found = verify_store(store)[0].findings
        if (store / schema.FEATURES).is_dir():
            try:
                found += verify_features(store)[0].findings
            except StemError:  # case/environment the features are checked against are themselves damaged
                found.append(None)
        assert found, (name, kind, "verify saw nothing")
        if name == schema.PATCHES:
            continue
        with pytest.raises(StemError) as info:
            dm = FeatureDataModule(store=str(store), batch_size=16)
            index, train, test = dm.split_rows()
            read_rows(store, np.sort(np.r_[train, test]), dm.columns())
        assert info.value.exit_code in (EXIT_BAD_INPUT, EXIT_CORRUPT_DATA) and "\n" not in str(info.value)
        shutil.rmtree(store)
    assert tried >= 16
    capsys.readouterr()
    zarr.open_group(str(plan_store), mode="r")  # the pristine store is untouched
