"""Fuzz-style: damaged stores and bad configs against every command that reads them. Each case must end in
one ``error:`` line naming the store/array/field, with its exit code, no traceback, and within its timeout.

Stores are copies of the real tiny store (``sim``: simulated only; ``enc``: with features encoded); the
damage is done to the files on disk, the way a failed copy, a full disk or a hand edit would."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
import zarr

from cluster import open_client
from contract.errors import EXIT_BAD_INPUT, EXIT_CORRUPT_DATA, EXIT_OK
from features.encode import encode_store
from tests.test_errors import fit_args, garble, lightning_stderr  # noqa: F401  (fixture)

pytestmark = [pytest.mark.timeout(180), pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def base_stores(tiny_store_kept, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    enc = root / "enc.zarr"
    shutil.copytree(tiny_store_kept, enc)
    with open_client("local", n_workers=1) as client:
        encode_store(enc, client)
    return {"sim": tiny_store_kept, "enc": enc}


def _retype(store: Path, name: str, dtype: str) -> None:
    g = zarr.open_group(str(store), mode="r+")
    old = g[name]
    attrs = dict(old.attrs)
    g.create_array(name, data=old[:].astype(dtype), chunks=old.chunks, overwrite=True, attributes=attrs)


def _clear_attrs(store: Path, name: str | None) -> None:
    g = zarr.open_group(str(store), mode="r+")
    (g[name] if name else g).attrs.put({})


DAMAGES = {
    "garbage features chunk": ("enc", lambda s: garble(s / "features/c/2/0")),
    "garbage label chunk": ("enc", lambda s: garble(s / "label/c/1", offset=20)),
    "garbage patches chunk": ("sim", lambda s: garble(s / "patches/c/1/0/0", offset=500)),
    "garbage marker": ("enc", lambda s: (s / "features_done/c/3").write_bytes(b"\x13\x37")),
    "truncated features shard": ("enc", lambda s: os.truncate(s / "features/c/1/0", 40)),
    "truncated patches shard": ("sim", lambda s: os.truncate(s / "patches/c/4/0/0", 9000)),
    "missing label": ("enc", lambda s: shutil.rmtree(s / "label")),
    "missing features": ("enc", lambda s: (shutil.rmtree(s / "features"), shutil.rmtree(s / "features_done"))),
    "missing patches": ("sim", lambda s: shutil.rmtree(s / "patches")),
    "case as float32": ("enc", lambda s: _retype(s, "case", "float32")),
    "features as float64": ("enc", lambda s: _retype(s, "features", "float64")),
    "group attrs removed": ("enc", lambda s: _clear_attrs(s, None)),
    "features attrs removed": ("enc", lambda s: _clear_attrs(s, "features")),
    "array zarr.json garbled": ("enc", lambda s: garble(s / "case/zarr.json", offset=10, data=b"\x00{]")),
    "group zarr.json garbled": ("enc", lambda s: garble(s / "zarr.json", offset=3, data=b"\xff\xfe")),
    "not a store": ("enc", lambda s: (shutil.rmtree(s), s.write_text("these are not the patches\n"))),
    "empty directory": ("enc", lambda s: (shutil.rmtree(s), s.mkdir())),
}

# (damage, command, exit code, text the error line contains; {store} is the damaged store)
CASES = [
    ("garbage features chunk", "fit", 3, "array 'features' shard 2 (rows 32-47) is damaged (ValueError: Stored and "
                                         "computed checksum do not match); run `python -m features verify --store "
                                         "{store} --repair`"),
    ("garbage features chunk", "features verify", 3, "1 problem(s) in the feature arrays (1 shard(s) [2])"),
    ("garbage features chunk", "simulate verify", 0, None),  # not the simulation's arrays
    ("garbage label chunk", "fit", 3, "array 'label' shard 1 (rows 16-31) is damaged"),
    ("garbage label chunk", "simulate verify", 3, "1 problem(s) in 1 task(s) [0]"),
    ("garbage patches chunk", "encode", 3, "array 'patches' shard 1 (rows 16-31) is damaged (ValueError: Stored and "
                                           "computed checksum do not match); run `python -m simulate verify {store} "
                                           "--repair`"),
    ("garbage patches chunk", "simulate verify", 3, "1 problem(s) in 1 task(s) [0]"),
    ("garbage marker", "fit", 3, "array 'features_done' chunk 3 (rows 3-3) is damaged"),
    ("garbage marker", "features verify", 3, "(1 shard(s) [3])"),
    ("garbage marker", "encode", 3, "array 'features_done' chunk 3 (rows 3-3) is damaged"),
    ("truncated features shard", "fit", 3, "array 'features' shard 1 (rows 16-31) is damaged"),
    ("truncated features shard", "features verify", 3, "(1 shard(s) [1])"),
    ("truncated patches shard", "encode", 3, "array 'patches' shard 4 (rows 64-79) is damaged"),
    ("truncated patches shard", "simulate verify", 3, "1 problem(s) in 1 task(s) [1]"),
    ("missing label", "fit", 2, "store '{store}' has no array 'label'"),
    ("missing label", "simulate verify", 3, "cannot be repaired in place"),
    ("missing features", "fit", 2, "has no array 'features': run `python -m features encode --store {store}` first"),
    ("missing features", "features verify", 2, "has no features yet: run `python -m features encode --store {store}`"),
    ("missing patches", "encode", 2, "store '{store}' has no array 'patches': is the simulation finished?"),
    ("case as float32", "fit", 2, "'case' has dtype float32, expected int32"),
    ("case as float32", "encode", 2, "'case' has dtype float32, expected int32"),
    ("case as float32", "simulate verify", 3, "cannot be repaired in place"),
    ("features as float64", "fit", 2, "'features' has dtype float64, expected float32"),
    ("features as float64", "features verify", 3, "(all shards)"),
    ("group attrs removed", "fit", 2, "has no attrs['cases']"),
    ("group attrs removed", "encode", 2, "has no attrs['cases']"),
    ("group attrs removed", "simulate verify", 3, "cannot be repaired in place (attrs: attrs['config'] is missing"),
    ("group attrs removed", "features verify", 2, "has no attrs['cases']"),
    ("features attrs removed", "fit", 2, "features.attrs['feature_names'] must list 31 names"),
    ("features attrs removed", "features verify", 3, "(all shards)"),
    ("array zarr.json garbled", "fit", 3, "an array's metadata (zarr.json) does not parse"),
    ("array zarr.json garbled", "simulate verify", 3, "cannot be repaired in place"),
    ("group zarr.json garbled", "fit", 2, "is not a readable zarr v3 store"),
    ("group zarr.json garbled", "simulate verify", 2, "is not a readable zarr v3 store"),
    ("not a store", "fit", 2, "is not a readable zarr v3 store"),
    ("not a store", "encode", 2, "is not a readable zarr v3 store"),
    ("not a store", "simulate verify", 2, "is not a readable zarr v3 store"),
    ("empty directory", "features verify", 2, "is not a readable zarr v3 store"),
]


def _command(name: str, store: Path, run_dir: Path):
    if name == "fit":
        from training.__main__ import main

        return main, fit_args(store, run_dir)[1:]
    if name == "encode":
        from features.__main__ import main

        return main, ["encode", "--store", str(store), "--n-workers", "1"]
    if name == "features verify":
        from features.__main__ import main

        return main, ["verify", "--store", str(store)]
    from simulate.__main__ import main

    return main, ["verify", str(store)]


@pytest.mark.parametrize("damage,command,code,text", CASES, ids=[f"{d}-{c}" for d, c, _, _ in CASES])
def test_damaged_store(base_stores, tmp_path, capsys, lightning_stderr, damage, command, code, text):
    kind, apply = DAMAGES[damage]
    store = tmp_path / "store.zarr"
    shutil.copytree(base_stores[kind], store)
    apply(store)
    main, argv = _command(command, store, tmp_path / "run")
    lightning_stderr()
    assert main(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    if code == EXIT_OK:
        assert errors == []
        return
    assert len(errors) == 1, err
    assert text.format(store=store) in errors[0], errors[0]
    if command == "fit" and code == EXIT_BAD_INPUT:
        assert not (tmp_path / "run").exists()  # refused before anything was written


# ----------------------------------------------------------------------------------------- configs
def _drop(path: str):
    def edit(cfg):
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        del node[last]
    return edit


def _set(path: str, value):
    def edit(cfg):
        *parents, last = path.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        node[last] = value
    return edit


DATASET_CASES = [  # (what, edit of the full tiny config, the error line starts with)
    ("wrong type: seed", _set("seed", "abc"), "error: seed: must be a non-negative integer, got 'abc'"),
    ("wrong type: noise", _set("noise", [1, 2]), "error: noise: must be a mapping, got list [1, 2]"),
    ("wrong type: patch size", _set("patches.patch_size_px", "33"),
     "error: patches.patch_size_px: must be a positive integer, got '33'"),
    ("wrong type: energies", _set("imaging.beam_energies_kev", 60),
     "error: imaging.beam_energies_kev: must be a non-empty list"),
    ("wrong type: phonons", _set("multislice.frozen_phonons", 1.5),
     "error: multislice.frozen_phonons: must be an integer >= 0, got 1.5"),
    ("wrong type: environments", _set("environments", "some"),
     "error: environments: must be `all` or a non-empty list of ids 0..33"),
    ("wrong type: dose", _set("noise.dose_e_per_angstrom2", "high"),
     "error: noise.dose_e_per_angstrom2: must be a range [low, high], got 'high'"),
    ("missing: name", _drop("name"), "error: name: missing"),
    ("missing: noise", _drop("noise"), "error: noise: missing"),
    ("missing: scan margin", _drop("multislice.scan_margin_px"),
     "error: multislice.scan_margin_px: missing"),
    ("missing: patches per image", _drop("patches.patches_per_image"), "error: patches.patches_per_image: missing"),
    ("missing: detectors", _drop("imaging.detectors"), "error: imaging.detectors: missing"),
    ("unknown key: top level", _set("nosie", {"read_noise_counts": [0, 1]}),
     "error: nosie: unknown key; did you mean 'noise'?"),
    ("unknown key: multislice", _set("multislice.frozen_phonon", 4),
     "error: multislice.frozen_phonon: unknown key; did you mean 'frozen_phonons'?"),
    ("unknown key: patches", _set("patches.size_px", 17), "error: patches.size_px: unknown key"),
]


@pytest.fixture(scope="module")
def tiny_raw(tiny_config) -> dict:
    from simulate.config import load_yaml

    return load_yaml(tiny_config)


@pytest.mark.parametrize("what,edit,message", DATASET_CASES, ids=[c[0] for c in DATASET_CASES])
def test_bad_dataset_config(tiny_raw, tmp_path, capsys, what, edit, message):
    import copy

    from simulate.__main__ import main

    cfg = copy.deepcopy(tiny_raw)
    edit(cfg)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["check", "--config", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    out = tmp_path / "never.zarr"
    assert main(["run", "--config", str(path), "--out", str(out)]) == EXIT_BAD_INPUT
    assert not out.exists()  # refused before anything was created


@pytest.mark.parametrize("text,message", [
    ("name: x\nnoise: [1, 2\n", "is not valid YAML"),
    ("- a list\n- not a mapping\n", "must hold a mapping"),
    (None, "no such file"),
])
def test_unreadable_dataset_config(tmp_path, capsys, text, message):
    from simulate.__main__ import main

    path = tmp_path / "bad.yaml"
    if text is not None:
        path.write_text(text)
    assert main(["check", "--config", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: config: ") and message in err and err.count("\n") == 1, err


TRAINING_CASES = [  # (what, YAML given as the last --config, the error line contains)
    ("wrong type: batch size", "data: {batch_size: many}",
     "error: Parser key \"data.batch_size\": Expected a <class 'int'>. Got value: many"),
    ("wrong type: lr", "model: {lr: fast}", "error: Parser key \"model.lr\": Expected a <class 'float'>"),
    ("wrong type: epochs", "trainer: {max_epochs: ten}", "error: Parser key \"trainer.max_epochs\""),
    ("wrong type: store", "data: {store: 5}", "error: Parser key \"data.store\": Expected a <class 'str'>"),
    ("wrong value: feature set", "data: {feature_set: pixels}",
     "error: data.feature_set must be one of ('all', 'zernike'), got 'pixels'"),
    ("missing: architecture", "model: {architecture: null}", "error: model.architecture must be one of"),
    ("missing: store", "data: {store: null}", "error: data.store is not set: pass --data.store STORE.zarr"),
    ("unknown key: data", "data: {batchsize: 4}", "error: Subcommand 'fit' does not accept option 'data.batchsize'"),
    ("unknown key: trainer", "trainer: {max_epoch: 1}",
     "error: Subcommand 'fit' does not accept option 'trainer.max_epoch'"),
    ("unknown key: section", "modle: {lr: 1}", "error: Subcommand 'fit' does not accept option 'modle.lr'"),
    ("not a mapping", "- 1\n", "error: Unexpected config: - 1"),
    ("not YAML", "data: [1, 2\n", "is not valid YAML"),
]


@pytest.mark.parametrize("what,text,message", TRAINING_CASES, ids=[c[0] for c in TRAINING_CASES])
def test_bad_training_config(base_stores, tmp_path, capsys, lightning_stderr, what, text, message):
    from training.__main__ import main

    path = tmp_path / "bad.yaml"
    path.write_text(text)
    run_dir = tmp_path / "run"
    lightning_stderr()
    assert main([*fit_args(base_stores["enc"], run_dir)[1:], "--config", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not run_dir.exists()


def test_submit_refuses_a_bad_model_config_before_submitting(base_stores, tmp_path, capsys, repo_root):
    from training.__main__ import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {architecture: attention, hidden_size: 3}\n")
    base = repo_root / "configs" / "train" / "base.yaml"
    code = main(["submit", "--config", str(base), "--config", str(bad), "--data.store", str(base_stores["enc"]),
                 "--run_dir", str(tmp_path / "run")])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert err.startswith(f"error: {base}, {bad}: ") and "hidden_size" in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_fuzz_covers_every_damage():
    assert {d for d, *_ in CASES} == set(DAMAGES)
    assert {c for _, c, *_ in CASES} == {"fit", "encode", "simulate verify", "features verify"}
    assert np.isin([c for *_, c, _ in CASES], [EXIT_OK, EXIT_BAD_INPUT, EXIT_CORRUPT_DATA]).all()
