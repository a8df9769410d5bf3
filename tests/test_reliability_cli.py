"""Issue 21, finding 5: every expected failure is one ``error:`` line and exit 2 (or the documented 3/4/5), before
any work starts: ``--out``/``--run_dir`` that is a file, lies under a file or cannot be written, for every command
that writes one; a text file given as checkpoint to resume from; non-UTF-8 configs; an infinite convergence angle
or field size; a ``--kernel-px``/``--window-angstrom`` far larger than the image. And Ctrl-C any number of times
ends with exit 130 and one line (``contract.cli.run_command``), never a traceback.

Each command runs in-process through its stage's ``main`` (the checks come before any simulation, training or
model loading, so each case takes well under a second), except the Ctrl-C cases, which are real processes
receiving real SIGINTs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from contract.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED
from features.__main__ import main as features_main
from inference.__main__ import main as inference_main
from rvae.__main__ import main as rvae_main
from simulate.__main__ import main as simulate_main
from training.__main__ import main as training_main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(120)
MAIN = {"simulate": simulate_main, "features": features_main, "inference": inference_main, "rvae": rvae_main,
        "training": training_main}
CTX = ["--host", "WSe2", "--dopant", "Cr", "--energy-kev", "60", "--detector", "HAADF"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    np.save(d / "img.npy", np.random.default_rng(0).random((64, 64)).astype(np.float32))
    (d / "img.json").write_text('{"pixel_size_angstrom": 0.1}')
    (d / "text.ckpt").write_text("these are not weights\n")
    (d / "afile").write_text("x\n")
    return {"img": d / "img.npy", "ckpt": d / "text.ckpt", "file": d / "afile"}


def commands(i: dict, out: str) -> dict[str, tuple[str, list[str]]]:
    """Every command with an output option, each with inputs that would otherwise start its work."""
    img, ckpt = str(i["img"]), str(i["ckpt"])
    return {
        "simulate run": ("simulate", ["run", "--config", "configs/dataset/tiny.yaml", "--out", out]),
        "simulate structures": ("simulate", ["structures", "--config", "configs/dataset/tiny.yaml", "--out", out]),
        "simulate fullfield": ("simulate", ["fullfield", *CTX, "--out", out]),
        "simulate fourdstem": ("simulate", ["fourdstem", "--config", "configs/dataset/fourdstem-tiny.yaml",
                                            "--out", out]),
        "simulate planegroups": ("simulate", ["planegroups", "--config", "configs/dataset/planegroups-tiny.yaml",
                                              "--out", out]),
        "simulate planegroups-materials": ("simulate", ["planegroups-materials", "--out", out]),
        "features symmetry": ("features", ["symmetry", img, "--out", out + ".npz"]),
        "inference classify": ("inference", ["classify", img, "--model", ckpt, *CTX, "--out", out]),
        "inference phase": ("inference", ["phase", img, "--model", ckpt, "--out", out]),
        "rvae fit-image": ("rvae", ["fit-image", img, "--window-angstrom", "2", "--out", out]),
        "training fit": ("training", ["fit", "--config", "configs/train/base.yaml", "--config",
                                      "configs/train/mlp-simple.yaml", "--data.store", "/no/store.zarr",
                                      "--run_dir", out]),
        "training evaluate": ("training", ["evaluate", "--ckpt", ckpt, "--out", out]),
        "training demo": ("training", ["demo", "--store", "/no/store.zarr", "--out", out]),
        "training phase demo": ("training", ["phase", "demo", "--store", "/no/store.zarr", "--out", out]),
    }


def run_main(stage: str, argv: list[str], capsys) -> tuple[int, str]:
    rc = MAIN[stage](argv)
    return rc, capsys.readouterr().err


def one_error_line(rc: int, err: str, code: int = EXIT_BAD_INPUT) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == code and len(errors) == 1, f"exit {rc}, stderr: {err}"
    assert "Traceback" not in err and "unexpected" not in err, err
    return errors[0]


@pytest.mark.parametrize("where", ["a file", "under a file", "not writable"])
@pytest.mark.parametrize("name", list(commands({"img": "", "ckpt": ""}, "")))
def test_bad_out_is_refused_before_the_work(name, where, inputs, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    out = {"a file": str(inputs["file"]), "under a file": str(inputs["file"] / "sub"),
           "not writable": "/proc/stem-out"}[where]  # /proc refuses new files, for root as well
    stage, argv = commands(inputs, out)[name]
    if name == "features symmetry":
        argv[-1] = out if where != "under a file" else out + "/maps.npz"
        if where == "a file":
            argv[-1] = str(inputs["file"].parent)  # a directory given as the output file
    line = one_error_line(*run_main(stage, argv, capsys))
    assert ("--out" in line or "--run_dir" in line) and ("file" in line or "directory" in line or "write" in line), line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a mode-555 folder (covered by /proc above)")
def test_read_only_folder_is_refused(inputs, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    line = one_error_line(*run_main("inference", commands(inputs, str(ro / "x"))["inference classify"][1], capsys))
    assert "cannot write" in line


def test_non_utf8_configs_are_refused(tmp_path, inputs, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    for stage, argv in [("simulate", ["check", "--config", str(bad)]),
                        ("simulate", ["run", "--config", str(bad), "--out", str(tmp_path / "o")]),
                        ("training", ["fit", "--config", str(bad)]),
                        ("rvae", ["fit-image", str(inputs["img"]), "--window-angstrom", "2", "--config", str(bad),
                                  "--out", str(tmp_path / "r")])]:
        line = one_error_line(*run_main(stage, argv, capsys))
        assert "latin1.yaml" in line and "UTF-8" in line, line


def test_infinite_and_huge_values_are_refused(tmp_path, inputs, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    inf = tmp_path / "inf.yaml"
    inf.write_text(f"base: {REPO}/configs/dataset/tiny.yaml\nimaging:\n  convergence_semiangle_mrad: .inf\n")
    img = str(inputs["img"])
    cases = {
        "infinite convergence (check)": ("simulate", ["check", "--config", str(inf)], "finite"),
        "infinite convergence (fullfield)": ("simulate", ["fullfield", *CTX, "--config", str(inf),
                                                          "--out", str(tmp_path / "f1")], "finite"),
        "infinite field": ("simulate", ["fullfield", *CTX, "--size-angstrom", "inf", "--out", str(tmp_path / "f2")],
                           "finite"),
        "huge kernel": ("features", ["symmetry", img, "--kernel-px", "100000001", "--out", str(tmp_path / "m.npz")],
                        "larger than the image"),
        "huge window": ("rvae", ["fit-image", img, "--window-angstrom", "1e300", "--out", str(tmp_path / "r1")],
                        "window"),
        "infinite window": ("rvae", ["fit-image", img, "--window-angstrom", "inf", "--out", str(tmp_path / "r2")],
                            "window"),
    }
    for name, (stage, argv, words) in cases.items():
        rc, err = run_main(stage, argv, capsys)
        if "finite" == words:  # argparse's own usage error: usage lines, then one error line
            assert rc == EXIT_BAD_INPUT and "not a finite number" in err and "Traceback" not in err, err
            continue
        assert words in one_error_line(rc, err), (name, err)


def test_text_checkpoint_to_resume_from_is_refused(inputs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    argv = ["fit", "--config", "configs/train/base.yaml", "--config", "configs/train/mlp-simple.yaml",
            "--data.store", "/no/store.zarr", "--ckpt_path", str(inputs["ckpt"]), "--run_dir", str(tmp_path / "r")]
    line = one_error_line(*run_main("training", argv, capsys))
    assert "text.ckpt" in line and "text file" in line, line


CTRL_C_SCRIPT = """
import sys, time
from contract.cli import run_command

def main(argv):
    print("started", flush=True)
    try:
        time.sleep(60)
    finally:
        time.sleep(float(sys.argv[1]))  # a slow cleanup (a cluster closing): a second Ctrl-C lands here

sys.exit(run_command(main, [], prog="python -m probe"))
"""


@pytest.mark.parametrize("presses", [1, 2, 5])
def test_ctrl_c_any_number_of_times_is_exit_130_and_one_line(presses):
    cleanup_s = 0.5 if presses == 1 else 60
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT, str(cleanup_s)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "started"
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert err.strip().splitlines() == ["error: python -m probe: interrupted (Ctrl-C)"], err
