"""Per-frame benchmark on real experimental frames: ``python -m inference classify`` (a subprocess, as a user runs
it) on every frame of ``tests/data/real/frames.json`` that is present, plus extra files, and a table per frame:
context, calibration (which pixel size was used; the file's deviation from the lattice), counts per class, mean
entropy, fraction of uncertain sites, the class-order check (``summary["class_order"]``; ``n/a`` when the
summary has none), wall time.

    python bench/real_frames.py [--model CKPT] [--frames-dir DIR] [--undoped-dopant none] [--allow-unseen-context]
        [--extra FILE,host=WSe2,dopant=V,energy=80,detector=HAADF] [--patch-size-px P] [--keep DIR]

Frames are found as ``frames.json`` says (shipped under tests/data/real, inside an installed package, or under
``--frames-dir`` / ``$STEM_REAL_FRAMES_DIR``); absent ones are listed as skipped. Undoped frames are classified
with ``--dopant`` set to ``--undoped-dopant`` (``none`` once undoped contexts exist; a dopant element stands in
for models without them). Without ``--model`` classify picks its own (the model registry). Writes
``bench/results/real-frames-<utc stamp>.json``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._report import print_table, versions, write_result  # noqa: E402

MANIFEST = REPO / "tests" / "data" / "real" / "frames.json"
FRAMES_DIR_ENV = "STEM_REAL_FRAMES_DIR"
CLASSES = ("X2", "VacX", "VacX2", "M", "D")


def load_manifest(path: Path = MANIFEST) -> list[dict]:
    """The frames of ``frames.json`` (each a dict; SOURCES.md beside it says what the fields are)."""
    return json.loads(Path(path).read_text())["frames"]


def resolve_frame(frame: dict, frames_dir: str | Path | None = None) -> Path | None:
    """Path of ``frame``'s file, or None when it is not on this machine: shipped beside the manifest, inside its
    installed package, or under ``frames_dir`` (default ``$STEM_REAL_FRAMES_DIR``)."""
    shipped = MANIFEST.parent / frame["file"]
    if shipped.is_file():
        return shipped
    if frame.get("package_path"):
        top, _, rest = frame["package_path"].partition("/")
        spec = importlib.util.find_spec(top)  # locates the package without importing it
        if spec is not None and spec.submodule_search_locations:
            p = Path(list(spec.submodule_search_locations)[0]) / rest
            if p.is_file():
                return p
    frames_dir = frames_dir or os.environ.get(FRAMES_DIR_ENV)
    if frames_dir and (Path(frames_dir) / frame["file"]).is_file():
        return Path(frames_dir) / frame["file"]
    return None


def parse_extra(text: str) -> dict:
    """``FILE,host=WSe2,dopant=V[,energy=80][,detector=HAADF]`` -> a frame dict."""
    path, *items = text.split(",")
    kv = dict(item.split("=", 1) for item in items)
    if "host" not in kv:
        raise SystemExit(f"error: --extra {text!r}: give at least host=H (and dopant=D unless undoped)")
    ctx = {"host": kv["host"], "dopant": kv.get("dopant"), "beam_energy_kev": kv.get("energy"),
           "detector": kv.get("detector")}
    return {"name": Path(path).stem, "file": path, "path": path, "context": ctx, "file_tags": {}, "extra": True}


def classify(path: Path, frame: dict, out: Path, model: str | None, undoped_dopant: str,
             allow_unseen: bool, patch_size_px: int | None = None) -> dict:
    """Run classify on one frame; the row of the table and the summary (None when it failed)."""
    ctx = frame["context"]
    cmd = [sys.executable, "-m", "inference", "classify", str(path), "--host", ctx["host"],
           "--dopant", ctx["dopant"] or undoped_dopant, "--out", str(out)]
    # the file's own tags are part of what is benchmarked: the context is given only where the file lacks it
    for key, option in (("beam_energy_kev", "--energy-kev"), ("detector", "--detector")):
        if ctx.get(key) and key not in frame.get("file_tags", {}):
            cmd += [option, str(ctx[key])]
    if model:
        cmd += ["--model", model]
    if patch_size_px:
        cmd += ["--patch-size-px", str(patch_size_px)]
    if allow_unseen:
        cmd.append("--allow-unseen-context")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    dopant = ctx["dopant"] or ("none" if undoped_dopant == "none" else f"none (as {undoped_dopant})")
    label = f"{ctx['host']}+{dopant} {ctx.get('beam_energy_kev') or '?'} keV {ctx.get('detector') or '?'}"
    row = {"frame": frame["name"], "context": label, "rc": proc.returncode, "time_s": f"{wall:.1f}"}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:160]
        return {"row": row, "summary": None, "command": cmd}
    s = json.loads((out / "summary.json").read_text())
    cal = s.get("calibration") or {}
    unc = s["uncertainty"]
    order = s.get("class_order")
    row.update({
        "intensity": s.get("image_intensity", "?"),
        "px_A": f"{s['pixel_size_angstrom']:.4f}", "px_source": s.get("pixel_size_source", "?"),
        "file_dev_%": "-" if cal.get("deviation") is None else f"{100 * cal['deviation']:+.1f}",
        "sites": s["n_counted"], **{c: s["counts"].get(c, 0) for c in CLASSES},
        "mean_H": f"{unc['mean_entropy_nats']:.3f}", "uncertain": f"{unc['fraction_above_threshold']:.2f}",
        "class_order": "n/a" if order is None else ("ok" if order["ok"] else "VIOLATED: " + "; ".join(
            f"{v['dimmer']}>={v['brighter']}" for v in order["violations"])),
        "site_symmetry": {True: "agree", False: "DISAGREE", None: "n/a"}[(s.get("site_symmetry_check") or {}).get("agree")],
        "contrast": _contrast(s.get("site_symmetry_check") or {}),
    })
    return {"row": row, "summary": s, "command": cmd}


def _contrast(chk: dict) -> str:
    """The frame's metal/chalcogen ratio above background against the model's (inference.checks)."""
    if chk.get("contrast_within_simulated_spread") is None:
        return "n/a"
    return (f"{chk['frame_metal_to_chalcogen_above_background']:.2f}/{chk['model_metal_to_chalcogen_intensity']:.2f}"
            + ("" if chk["contrast_within_simulated_spread"] else " WARN"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint for every frame (default: classify's own choice)")
    p.add_argument("--frames-dir", default=None, help=f"folder of the frames not shipped (default ${FRAMES_DIR_ENV})")
    p.add_argument("--extra", action="append", default=[], metavar="FILE,host=H,dopant=D[,energy=E][,detector=X]")
    p.add_argument("--undoped-dopant", default="none", help="--dopant for undoped frames (default: none)")
    p.add_argument("--allow-unseen-context", action="store_true", help="classify contexts the model never saw")
    p.add_argument("--patch-size-px", type=int, default=None, help="for checkpoints that do not record it")
    p.add_argument("--keep", default=None, help="keep the classify outputs under this folder")
    p.add_argument("--results-dir", default=None, help="where the JSON goes (default bench/results)")
    args = p.parse_args(argv)
    frames = load_manifest() + [parse_extra(e) for e in args.extra]
    rows, runs, skipped = [], [], []
    with tempfile.TemporaryDirectory(prefix="real-frames-") as tmp:
        out_root = Path(args.keep or tmp)
        for frame in frames:
            path = Path(frame["path"]) if frame.get("extra") else resolve_frame(frame, args.frames_dir)
            if path is None or not path.is_file():
                skipped.append(frame["name"])
                print(f"skip {frame['name']}: {frame['file']} is not on this machine (see tests/data/real/SOURCES.md)")
                continue
            print(f"classify {frame['name']} ({path}) ...", flush=True)
            run = classify(path, frame, out_root / frame["name"], args.model, args.undoped_dopant,
                           args.allow_unseen_context, args.patch_size_px)
            rows.append(run["row"])
            runs.append({"frame": frame["name"], "path": str(path), **run})
    columns = ["frame", "context", "rc", "intensity", "px_A", "px_source", "file_dev_%", "sites", *CLASSES, "mean_H",
               "uncertain", "class_order", "contrast", "time_s"]
    print_table(rows, columns)
    for r in rows:
        if r.get("error"):
            print(f"{r['frame']}: exit {r['rc']}: {r['error']}")
    path = write_result("real-frames", {
        "model": args.model, "undoped_dopant": args.undoped_dopant, "skipped": skipped, "rows": rows,
        "runs": [{k: v for k, v in r.items() if k != "row"} for r in runs],
        "versions": versions("stem-context", "torch", "numpy", "tifffile", "imagecodecs", "rosettasciio"),
    }, args.results_dir)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
