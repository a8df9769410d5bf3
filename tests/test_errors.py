"""Every command answers an expected failure with one ``error:`` line on stderr and its exit code
(``contract.errors``), a traceback only with ``--debug``, and writes nothing when it refuses its input.

The damaged stores are copies of the real tiny store (real abTEM, real zarr); training runs the real
LightningCLI; encoding runs on a real LocalCluster."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

from cluster import open_client
from contract.cli import run_command
from contract.errors import EXIT_BAD_INPUT, EXIT_CORRUPT_DATA, EXIT_UNEXPECTED
from features.encode import encode_store

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("one_torch_thread")]


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """A command as a user runs it, from the repository root."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env=env)


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a failed command (and no traceback)."""
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return errors[0]


def fit_args(store: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["training", "fit", "--config", "configs/train/base.yaml", "--config", "configs/train/mlp-simple.yaml",
            "--data.store", str(store), "--run_dir", str(run_dir), "--trainer.accelerator", "cpu",
            "--trainer.strategy", "auto", "--trainer.devices", "1", "--trainer.max_epochs", "1",
            "--data.batch_size", "16", *extra]


@pytest.fixture
def lightning_stderr(capsys):
    """capsys, with the loggers that kept the stderr of an earlier test (Lightning binds a StreamHandler to
    ``sys.stderr`` when imported) pointed at this test's; call the returned ``rebind()`` in the test body (pytest
    swaps ``sys.stderr`` between setup and call)."""
    import logging

    handlers = []

    def rebind():
        loggers = [logging.getLogger(), *(v for v in logging.root.manager.loggerDict.values()
                                          if isinstance(v, logging.Logger))]
        handlers[:] = [h for lg in loggers for h in lg.handlers
                       if type(h) is logging.StreamHandler and h.stream not in (sys.__stderr__, sys.__stdout__)]
        for handler in handlers:
            handler.stream = sys.stderr  # (not setStream: it flushes the old, closed stream)

    yield rebind
    for handler in handlers:
        handler.stream = sys.__stderr__


@pytest.fixture(scope="module")
def encoded_store(tiny_store_kept, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("errors") / "encoded.zarr"
    shutil.copytree(tiny_store_kept, out)
    with open_client("local", n_workers=1) as client:
        encode_store(out, client)
    return out


@pytest.fixture
def damaged(encoded_store, tmp_path) -> Path:
    out = tmp_path / "damaged.zarr"
    shutil.copytree(encoded_store, out)
    return out


def garble(path: Path, offset: int = 60, data: bytes = b"\xde\xad\xbe\xef" * 8) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_fit_on_a_garbage_features_chunk_names_the_shard(damaged, tmp_path):
    garble(damaged / "features/c/2/0")
    proc = run(*fit_args(damaged, tmp_path / "run"))
    assert proc.returncode == EXIT_CORRUPT_DATA
    assert error_line(proc) == (f"error: store '{damaged}': array 'features' shard 2 (rows 32-47) is damaged "
                                "(ValueError: Stored and computed checksum do not match); run "
                                f"`python -m features verify --store {damaged} --repair`")
    assert not list((tmp_path / "run").rglob("*.ckpt"))
    debug = run(*fit_args(damaged, tmp_path / "run2"), "--debug")
    assert debug.returncode == EXIT_CORRUPT_DATA and "Traceback" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith(f"error: store '{damaged}': array 'features' shard 2")


def test_fit_on_a_deleted_features_shard_marked_done_is_corruption(damaged, tmp_path):
    (damaged / "features/c/4/0").unlink()
    proc = run(*fit_args(damaged, tmp_path / "run"))
    assert proc.returncode == EXIT_CORRUPT_DATA
    line = error_line(proc)
    assert "array 'features' shard 4 (rows 64-79) holds NaN or inf" in line and "marked encoded" in line
    assert f"python -m features verify --store {damaged} --repair" in line


@pytest.mark.parametrize("damage,code,message", [
    ("unmarked", EXIT_BAD_INPUT, "features of 1 of 6 shards are not encoded (first: [2]); finish them with "
                                 "`python -m features encode --store {store}`"),
    ("label", EXIT_CORRUPT_DATA, "array 'label' shard 1 (rows 16-31) is damaged (ValueError: Stored and computed "
                                 "checksum do not match); run `python -m simulate verify {store} --repair`"),
    ("missing", EXIT_BAD_INPUT, "error: store '/does/not/exist.zarr' does not exist"),
])
def test_fit_refuses_before_writing_anything(damaged, tmp_path, capsys, lightning_stderr, damage, code, message):
    from training.__main__ import main

    store = damaged
    if damage == "unmarked":
        zarr.open_group(str(damaged), mode="r+")["features_done"][2] = 0
    elif damage == "label":
        garble(damaged / "label/c/1", offset=20)
    else:
        store = Path("/does/not/exist.zarr")
    run_dir = tmp_path / "run"
    lightning_stderr()
    assert main(fit_args(store, run_dir)[1:]) == code
    err = capsys.readouterr().err
    assert message.format(store=store) in err and "Traceback" not in err
    assert not run_dir.exists()  # refused before the loggers created anything


def test_encode_on_a_garbage_patches_chunk_names_the_shard(tiny_store_kept, tmp_path):
    store = tmp_path / "patches.zarr"
    shutil.copytree(tiny_store_kept, store)
    garble(store / "patches/c/1/0/0", offset=500)
    proc = run("features", "encode", "--store", str(store), "--n-workers", "1")
    assert proc.returncode == EXIT_CORRUPT_DATA
    assert error_line(proc) == (f"error: store '{store}': array 'patches' shard 1 (rows 16-31) is damaged "
                                "(ValueError: Stored and computed checksum do not match); run "
                                f"`python -m simulate verify {store} --repair`")
    assert "features" not in zarr.open_group(str(store), mode="r") or \
        zarr.open_group(str(store), mode="r")["features_done"][1] == 0  # the bad shard is not marked encoded


def test_encode_on_a_deleted_patches_shard_names_it(tiny_store_kept, tmp_path, capsys):
    from features.__main__ import main

    store = tmp_path / "patches.zarr"
    shutil.copytree(tiny_store_kept, store)
    (store / "patches/c/3/0/0").unlink()
    assert main(["encode", "--store", str(store), "--n-workers", "1"]) == EXIT_CORRUPT_DATA
    err = capsys.readouterr().err
    assert (f"error: store '{store}': array 'patches' shard 3 (rows 48-63): 16 patch(es) with NaN or infinite values "
            "(first rows [48, 49, 50, 51, 52]) although every task is marked done: the shard is damaged; run "
            f"`python -m simulate verify {store} --repair`") in err


def test_resume_on_a_damaged_marker_names_it(tiny_store_kept, tiny_config, tmp_path, capsys):
    from simulate.__main__ import main

    store = tmp_path / "markers.zarr"
    shutil.copytree(tiny_store_kept, store)
    garble(store / "task_done/c/1", offset=0, data=b"\x00\x01")
    assert main(["run", "--config", str(tiny_config), "--out", str(store), "--resume"]) == EXIT_CORRUPT_DATA
    err = capsys.readouterr().err
    assert (f"error: store '{store}': array 'task_done' chunk 1 (rows 1-1) is damaged") in err
    assert f"python -m simulate verify {store} --repair" in err and "Traceback" not in err


@pytest.mark.parametrize("extra,message", [
    (["--data.bogus", "3"], "error: unrecognized arguments: --data.bogus 3 (`python -m training fit --help` lists "
                            "the options)"),
    (["--data.batch_size", "abc"], "error: Parser key \"data.batch_size\": Expected a <class 'int'>. Got value: abc"),
    (["--config", "/no/such.yaml"], "error: Parser key \"config\": File does not exist: '/no/such.yaml'"),
    (["--model.architecture", "transformer"], "error: model.architecture must be one of ('mlp_nocontext', "
                                              "'mlp_simple', 'mlp_deep', 'attention'), got 'transformer'"),
    (["--data.split", "by_host", "--data.test_hosts", "[MoS2]"], "error: data: test_hosts ['MoS2'] are not in the "
                                                                  "store (hosts in this store: ['TaSe2', 'WSe2'])"),
    (["--trainer.accelerator", "gpu"], "error: "),
])
def test_lightning_cli_failures_are_one_line(encoded_store, tmp_path, capsys, lightning_stderr, extra, message):
    from training.__main__ import main

    run_dir = tmp_path / "run"
    lightning_stderr()
    assert main(fit_args(encoded_store, run_dir, *extra)[1:]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "usage:" not in err, err
    assert len([x for x in err.splitlines() if x.startswith("error:")]) == 1
    assert not run_dir.exists()


def test_unknown_training_subcommand_and_missing_checkpoint(tmp_path, capsys):
    from training.__main__ import main

    assert main(["fitt"]) == EXIT_BAD_INPUT
    assert "error: unknown subcommand 'fitt'" in capsys.readouterr().err
    assert main(["evaluate", "--ckpt", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "eval")]) == EXIT_BAD_INPUT
    assert f"error: --ckpt '{tmp_path / 'none.ckpt'}' does not exist" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()


def test_unexpected_errors_are_one_line_with_a_debug_hint(capsys):
    def broken(argv):
        return {}["missing"]

    assert run_command(broken, [], prog="python -m simulate") == EXIT_UNEXPECTED
    err = capsys.readouterr().err
    assert err == "error: unexpected KeyError: 'missing' (rerun with --debug for the traceback)\n"
    assert run_command(broken, ["--debug"], prog="python -m simulate") == EXIT_UNEXPECTED
    assert "Traceback" in capsys.readouterr().err


def test_unwritable_outputs_and_missing_subcommands_are_input_errors(tiny_config, tmp_path, capsys):
    from simulate.__main__ import main as simulate_main
    from training.__main__ import main as training_main

    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "file").write_text("a file, not a directory")
    out = locked / "file" / "x.zarr"  # its parent is a file: nothing can be created there, even as root
    refused = f"error: --out {out} lies under {locked / 'file'}, which is a file, not a directory"  # before the work
    assert simulate_main(["run", "--config", str(tiny_config), "--out", str(out)]) == EXIT_BAD_INPUT
    assert refused in capsys.readouterr().err
    assert simulate_main(["structures", "--config", str(tiny_config), "--out", str(out)]) == EXIT_BAD_INPUT
    assert refused in capsys.readouterr().err
    assert training_main([]) == EXIT_BAD_INPUT
    assert "error: a subcommand is required: one of fit, " in capsys.readouterr().err
    assert training_main(["demo-table", "--runs", str(tmp_path / "none")]) == EXIT_BAD_INPUT
    assert f"error: no */eval/metrics.json under {tmp_path / 'none'}" in capsys.readouterr().err
