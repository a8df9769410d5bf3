"""Fuzz-style tests of ``python -m inference classify``: every damaged or wrong input gets one ``error:`` line
on stderr and its exit code (``contract.errors``: 2 bad input), never a traceback, a hang or a memory blow-up,
and nothing is written to ``--out``.

Inputs: small valid files of every supported format made with the libraries' writers (``numpy``, ``tifffile``,
rosettasciio's EMD writer, ``tests/dm_writer.py`` for .dm3/.dm4), then truncated, bit-flipped and zeroed;
wrong dtypes, shapes and declared sizes; NaN/inf; images with no lattice (noise, amorphous texture, a square
lattice, a constant); unsafe or wrong checkpoints. Each case runs under a ``pytest-timeout`` limit; a few also
run as a real subprocess.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.__main__ import main as inference_main
from tests.dm_writer import write_dm
from tests.inference_fixtures import render_specimen

CTX = ["--host", "MoS2", "--dopant", "V", "--energy-kev", "60", "--detector", "HAADF", "--patch-size-px", "17"]
FORMATS = ("npy", "tif", "dm3", "dm4", "emd")


def lattice_image(n: int = 160) -> np.ndarray:
    """A small noisy honeycomb (0.12 Å/px, a = 26 px) in uint16 counts."""
    spec, *_ = render_specimen(n * 0.12 + 1, 0.12)
    return np.random.default_rng(0).poisson(200 * spec[:n, :n] + 50).astype(np.uint16)


def write_valid(path: Path, image: np.ndarray) -> Path:
    """``image`` in the format of ``path``'s suffix, with its pixel size (0.12 Å) where the format has one."""
    fmt = path.suffix[1:]
    if fmt == "npy":
        np.save(path, image)
        path.with_suffix(".json").write_text(json.dumps({"pixel_size_angstrom": 0.12}))
    elif fmt == "tif":
        import tifffile

        tifffile.imwrite(path, image, imagej=True, resolution=(1 / 0.012, 1 / 0.012), metadata={"unit": "nm"})
    elif fmt in ("dm3", "dm4"):
        write_dm(path, image, 0.012, {"Microscope Info": {"Voltage": 60000.0}, "Detector": "HAADF"})
    elif fmt == "emd":
        from rsciio.emd import file_writer

        axis = {"size": image.shape[0], "scale": 0.012, "offset": 0.0, "units": "nm", "navigate": False}
        file_writer(str(path), {"data": image, "axes": [{"name": "y", **axis}, {"name": "x", **axis}],
                                "metadata": {"General": {"title": "HAADF"}, "Signal": {}}, "original_metadata": {}})
    return path


def run_cli(args, capsys) -> tuple[int, str]:
    rc = inference_main(["classify", *args])
    return rc, capsys.readouterr().err


def assert_one_line_refusal(rc: int, err: str, out: Path, code: int = 2) -> str:
    assert rc == code, f"exit {rc}, stderr: {err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and "unexpected" not in err, err
    assert not out.exists(), "a refused input must leave --out untouched"
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(synthetic_checkpoints) -> str:
    return str(synthetic_checkpoints["mlp-simple"])


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("valid")
    image = lattice_image()
    return {fmt: write_valid(d / f"ok.{fmt}", image) for fmt in FORMATS}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", FORMATS)
def test_valid_files_of_every_format_classify(fmt, valid_files, ckpt, tmp_path, capsys):
    """The undamaged base files run end to end (so the damage below is what makes the others fail)."""
    rc, err = run_cli([str(valid_files[fmt]), "--model", ckpt, *CTX, "--out", str(tmp_path / "o")], capsys)
    assert rc == 0, err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["pixel_size_angstrom"] == pytest.approx(0.12, rel=1e-4)


def _damaged(base: Path, kind: str, out_dir: Path) -> Path:
    data = bytearray(base.read_bytes())
    rng = np.random.default_rng(zlib.crc32(f"{base.suffix} {kind}".encode()))  # same damage every run
    if kind.startswith("truncated"):
        frac = float(kind.split("-")[1]) / 100
        data = data[:max(int(len(data) * frac), 1)]
    elif kind == "header-only":
        data = data[:16]
    elif kind.startswith("bitflip-header"):
        for _ in range(8):
            i = int(rng.integers(0, min(256, len(data))))
            data[i] ^= 1 << int(rng.integers(0, 8))
    elif kind.startswith("bitflip"):
        for _ in range(32):
            i = int(rng.integers(0, len(data)))
            data[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == "zeroed-block":
        lo = len(data) // 3
        data[lo:lo + len(data) // 3] = bytes(len(data) // 3)
    elif kind == "text":
        data = bytearray(b"this is not an image, just text\n" * 20)
    elif kind == "empty":
        data = bytearray()
    path = out_dir / f"{kind}{base.suffix}"
    path.write_bytes(bytes(data))
    if base.suffix == ".npy" and base.with_suffix(".json").exists():
        path.with_suffix(".json").write_text(base.with_suffix(".json").read_text())
    return path


MUST_REFUSE = ("truncated-10", "truncated-50", "header-only", "text", "empty")
MAY_PASS = ("truncated-95", "bitflip-header-1", "bitflip-header-2", "bitflip-1", "bitflip-2", "zeroed-block")
"""Damage that may leave a readable image (a flipped bit in the pixels or a tag nobody reads): classified or
refused, but never a traceback."""

OUTCOMES: dict = {}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", MUST_REFUSE + MAY_PASS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_files_give_one_line_errors(fmt, kind, valid_files, ckpt, tmp_path, capsys):
    path = _damaged(valid_files[fmt], kind, tmp_path)
    out = tmp_path / "out"
    rc, err = run_cli([str(path), "--model", ckpt, *CTX, "--out", str(out)], capsys)
    OUTCOMES[f"{fmt} {kind}"] = (rc, err.strip()[:140])
    if kind in MUST_REFUSE or rc != 0:
        line = assert_one_line_refusal(rc, err, out)
        assert path.name in line or "no lattice" in line or "image" in line, line
    else:
        assert (out / "summary.json").is_file() and err.strip() == ""


def _npy_with_header(path: Path, shape, dtype="<f8", payload: bytes = b"") -> Path:
    header = {"descr": dtype, "fortran_order": False, "shape": tuple(shape)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(payload)
    return path


def _tif_with_declared_size(path: Path, width: int, height: int) -> Path:
    import tifffile

    tifffile.imwrite(path, np.zeros((4, 4), np.uint16))
    with tifffile.TiffFile(path) as tif:
        offsets = {t.name: t.valueoffset for t in tif.pages[0].tags.values()}
    data = bytearray(path.read_bytes())
    import struct

    for name, value in (("ImageWidth", width), ("ImageLength", height)):
        data[offsets[name]:offsets[name] + 4] = struct.pack("<I", value)
    path.write_bytes(bytes(data))
    return path


WRONG = {
    "complex npy": lambda d: np.save(d / "x.npy", np.ones((64, 64), np.complex64)) or d / "x.npy",
    "bool npy": lambda d: np.save(d / "x.npy", np.ones((64, 64), bool)) or d / "x.npy",
    "int8 npy": lambda d: np.save(d / "x.npy", np.ones((64, 64), np.int8)) or d / "x.npy",
    "object npy": lambda d: np.save(d / "x.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    or d / "x.npy",
    "empty npy": lambda d: np.save(d / "x.npy", np.zeros((0, 0))) or d / "x.npy",
    "1xN npy": lambda d: np.save(d / "x.npy", np.arange(500.0)[None]) or d / "x.npy",
    "stack npy": lambda d: np.save(d / "x.npy", np.zeros((3, 64, 64))) or d / "x.npy",
    "NaN npy": lambda d: np.save(d / "x.npy", np.where(np.eye(64) > 0, np.nan, 1.0)) or d / "x.npy",
    "inf npy": lambda d: np.save(d / "x.npy", np.where(np.eye(64) > 0, np.inf, 1.0)) or d / "x.npy",
    "constant npy": lambda d: np.save(d / "x.npy", np.full((128, 128), 7.0)) or d / "x.npy",
    "huge declared npy": lambda d: _npy_with_header(d / "x.npy", (100000, 100000), payload=b"\0" * 64),
    "huge sparse npy": lambda d: _sparse_npy(d / "x.npy", (40000, 40000)),
    "complex tif": lambda d: _tif(d / "x.tif", np.ones((64, 64), np.complex64)),
    "bool tif": lambda d: _tif(d / "x.tif", np.ones((64, 64), bool)),
    "int8 tif": lambda d: _tif(d / "x.tif", np.ones((64, 64), np.int8)),
    "1xN tif": lambda d: _tif(d / "x.tif", np.arange(500, dtype=np.uint16)[None]),
    "huge declared tif": lambda d: _tif_with_declared_size(d / "x.tif", 200000, 200000),
    "int8 dm3": lambda d: write_dm(d / "x.dm3", np.ones((64, 64), np.int8)),
    "complex dm4": lambda d: write_dm(d / "x.dm4", np.ones((64, 64), np.complex64)),
    "huge declared dm3": lambda d: _dm_declared(d / "x.dm3", 300000, 300000),
    "stack dm4": lambda d: write_dm(d / "x.dm4", np.ones((3, 32, 32), np.float32)),
    "huge sparse emd": lambda d: _huge_emd(d / "x.emd"),
    "NaN emd": lambda d: write_valid(d / "x.emd", np.where(np.eye(64) > 0, np.nan, 1.0).astype(np.float32)),
    "wrong suffix png": lambda d: _bytes(d / "x.png", b"\x89PNG\r\n\x1a\n"),
    "a directory": lambda d: (d / "dir.tif").mkdir() or d / "dir.tif",
    "missing file": lambda d: d / "nope.npy",
}


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _tif(path, image):
    import tifffile

    tifffile.imwrite(path, image)
    return path


def _sparse_npy(path: Path, shape) -> Path:
    _npy_with_header(path, shape, "<f4")
    with open(path, "r+b") as f:  # a sparse file of the full declared size: nothing on disk
        f.truncate(os.path.getsize(path) + int(np.prod(shape)) * 4)
    return path


def _dm_declared(path: Path, width: int, height: int) -> Path:
    """A valid small dm3 whose Dimensions tags then claim a huge image (same byte length: int32 values)."""
    write_dm(path, np.ones((8, 8), np.float32))
    data = bytearray(path.read_bytes())
    import struct

    for name, value in ((b"Data0", width), (b"Data1", height)):
        i = data.rfind(name)
        j = data.index(b"%%%%", i) + 4 + 8  # delimiter, info count, type code (dm3: 4 bytes each)
        data[j:j + 4] = struct.pack("<l", value)
    path.write_bytes(bytes(data))
    return path


def _huge_emd(path: Path) -> Path:
    """A valid small Berkeley EMD whose dataset is then replaced by a chunked 10^5 x 10^5 one with no chunk
    written (a few KiB on disk, 40 GB declared)."""
    import h5py

    write_valid(path, np.ones((16, 16), np.float32))
    with h5py.File(path, "r+") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and o.ndim == 2 and o.shape[0] == 16 else None)
        name = names[0]
        attrs = dict(f[name].attrs)
        del f[name]
        ds = f.create_dataset(name, shape=(100000, 100000), dtype="f4", chunks=(256, 256))
        ds.attrs.update(attrs)
        parent = f[name].parent
        for k in ("dim1", "dim2"):
            if k in parent:
                n = 100000
                del parent[k]
                parent.create_dataset(k, data=np.arange(n, dtype="f8") * 0.012).attrs.update({"name": k, "units": "[n_m]"})
    return path


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(WRONG))
def test_wrong_images_give_one_line_errors(case, ckpt, tmp_path, capsys):
    path = WRONG[case](tmp_path)
    out = tmp_path / "out"
    rc, err = run_cli([str(path), "--model", ckpt, *CTX, "--out", str(out)], capsys)
    OUTCOMES[case] = (rc, err.strip()[:160])
    assert_one_line_refusal(rc, err, out)


def _no_lattice_images():
    rng = np.random.default_rng(7)
    from scipy import ndimage

    yy, xx = np.indices((384, 384))
    square = np.cos(np.pi * yy / 22) ** 8 + np.cos(np.pi * xx / 22) ** 8
    return {
        "gaussian noise": rng.normal(100, 10, (384, 384)),
        "poisson noise": rng.poisson(3, (384, 384)).astype(np.float32),
        "amorphous texture (2 px)": ndimage.gaussian_filter(rng.normal(0, 1, (384, 384)), 2) + 50,
        "amorphous texture (5 px)": ndimage.gaussian_filter(rng.normal(0, 1, (384, 384)), 5) + 50,
        "square lattice": rng.poisson(30 * square + 10).astype(np.float32),
    }


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", list(_no_lattice_images()))
def test_images_without_a_honeycomb_are_refused(case, ckpt, tmp_path, capsys):
    np.save(tmp_path / "x.npy", _no_lattice_images()[case])
    out = tmp_path / "out"
    rc, err = run_cli([str(tmp_path / "x.npy"), "--model", ckpt, *CTX, "--out", str(out)], capsys)
    OUTCOMES[case] = (rc, err.strip()[:160])
    line = assert_one_line_refusal(rc, err, out)
    assert "no lattice" in line or "lattice constant" in line


def test_lattice_constant_far_from_every_host_is_refused(ckpt, tmp_path, capsys):
    """A honeycomb at a pixel size that makes it 3.16 x 1.6 Å: not a 1H-MX2 at that scale."""
    np.save(tmp_path / "x.npy", lattice_image(256).astype(np.float32))
    out = tmp_path / "out"
    rc, err = run_cli([str(tmp_path / "x.npy"), "--model", ckpt, *CTX, "--pixel-size-angstrom", "0.192",
                       "--out", str(out)], capsys)
    line = assert_one_line_refusal(rc, err, out)
    assert "from the nearest catalog host" in line and "--pixel-size-angstrom" in line


class Payload:
    """A pickled object: what ``weights_only`` loading must refuse."""

    def __reduce__(self):
        return (print, ("this must never run",))


def _bad_checkpoints(d: Path, good: Path) -> dict:
    ck = torch.load(good, weights_only=True)
    out = {}
    (d / "text.ckpt").write_text("not a checkpoint\n")
    out["text file"] = d / "text.ckpt"
    (d / "trunc.ckpt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    out["truncated"] = d / "trunc.ckpt"
    with open(d / "pickle.ckpt", "wb") as f:
        pickle.dump({"state_dict": Payload(), "hyper_parameters": {}}, f)
    out["pickled object"] = d / "pickle.ckpt"
    torch.save({"model": Payload()}, d / "torchpickle.ckpt")
    out["pickled object in a torch zip"] = d / "torchpickle.ckpt"
    torch.save(ck["state_dict"], d / "bare.ckpt")
    out["bare state_dict"] = d / "bare.ckpt"
    torch.save({**ck, "hyper_parameters": {"num_layers": 12, "vocab_size": 30000}}, d / "kind.ckpt")
    out["a model of another kind"] = d / "kind.ckpt"
    torch.save({**ck, "hyper_parameters": {**ck["hyper_parameters"], "architecture": "attention"}}, d / "arch.ckpt")
    out["weights of another architecture"] = d / "arch.ckpt"
    meta = dict(ck["stem_context"])
    meta["feature_names"] = list(meta["feature_names"])[::-1]
    torch.save({**ck, "stem_context": meta}, d / "layout.ckpt")
    out["another feature layout"] = d / "layout.ckpt"
    out["missing"] = d / "none.ckpt"
    return out


@pytest.mark.timeout(120)
def test_unsafe_or_wrong_checkpoints_are_refused(synthetic_checkpoints, valid_files, tmp_path, capsys):
    cases = _bad_checkpoints(tmp_path, Path(synthetic_checkpoints["mlp-simple"]))
    expect = {"text file": "not a", "truncated": "not a", "pickled object": "pickled", "bare state_dict": "Lightning",
              "pickled object in a torch zip": "pickled", "a model of another kind": "another kind",
              "weights of another architecture": "do not fit", "another feature layout": "feature layout",
              "missing": "not found"}
    for name, path in cases.items():
        out = tmp_path / f"out-{name}"
        rc, err = run_cli([str(valid_files["npy"]), "--model", str(path), *CTX, "--out", str(out)], capsys)
        OUTCOMES[f"checkpoint: {name}"] = (rc, err.strip()[:160])
        line = assert_one_line_refusal(rc, err, out)
        assert expect[name] in line and "this must never run" not in line, (name, line)
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", ["truncated dm3", "text tif", "pickled checkpoint", "noise npy", "huge npy"])
def test_real_subprocess_exit_codes(case, synthetic_checkpoints, valid_files, tmp_path, repo_root):
    """The same through ``python -m inference classify`` as a process: exit status 2, one stderr line."""
    ckpt = Path(synthetic_checkpoints["mlp-simple"])
    image = valid_files["npy"]
    if case == "truncated dm3":
        image = _damaged(valid_files["dm3"], "truncated-50", tmp_path)
    elif case == "text tif":
        image = _damaged(valid_files["tif"], "text", tmp_path)
    elif case == "pickled checkpoint":
        ckpt = _bad_checkpoints(tmp_path, ckpt)["pickled object in a torch zip"]
    elif case == "noise npy":
        image = tmp_path / "noise.npy"
        np.save(image, np.random.default_rng(0).normal(0, 1, (256, 256)))
    elif case == "huge npy":
        image = _sparse_npy(tmp_path / "huge.npy", (40000, 40000))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "inference", "classify", str(image), "--model", str(ckpt), *CTX,
                           "--out", str(out)], cwd=repo_root, capture_output=True, text=True, timeout=240)
    assert_one_line_refusal(proc.returncode, proc.stderr, out)


def test_zz_outcome_table(tmp_path_factory):
    """Writes the cases tried and their outcomes (exit code, first words of the message) to a JSON file under
    the session's temporary directory, for the README and the closing note."""
    path = tmp_path_factory.getbasetemp() / "inference-fuzz-outcomes.json"
    path.write_text(json.dumps(OUTCOMES, indent=1))
    print(f"\n{len(OUTCOMES)} fuzz cases -> {path}")
    assert not OUTCOMES or all(rc in (0, 2) for rc, _ in OUTCOMES.values())


@pytest.mark.timeout(120)
def test_checkpoint_without_inference_metadata(synthetic_checkpoints, valid_files, tmp_path, capsys):
    """An older checkpoint (no ``stem_context``): the patch size must be given, and the context cannot be
    checked against its training cases, so it runs only with --allow-unseen-context."""
    ck = torch.load(synthetic_checkpoints["mlp-simple"], weights_only=True)
    legacy = tmp_path / "legacy.ckpt"
    torch.save({k: v for k, v in ck.items() if k != "stem_context"}, legacy)
    ctx = CTX[:-2]  # without --patch-size-px
    rc, err = run_cli([str(valid_files["npy"]), "--model", str(legacy), *ctx, "--out", str(tmp_path / "a")], capsys)
    assert "--patch-size-px" in assert_one_line_refusal(rc, err, tmp_path / "a")
    rc, err = run_cli([str(valid_files["npy"]), "--model", str(legacy), *CTX, "--out", str(tmp_path / "b")], capsys)
    assert "does not list its training cases" in assert_one_line_refusal(rc, err, tmp_path / "b", code=4)
    rc, err = run_cli([str(valid_files["npy"]), "--model", str(legacy), *CTX, "--allow-unseen-context",
                       "--out", str(tmp_path / "c")], capsys)
    assert rc == 0 and json.loads((tmp_path / "c" / "summary.json").read_text())["unseen_context"] is True
