"""Does a simulated field classify as well in MAADF as in HAADF for every catalog host? (issue 20, item 0)

One store holds every host of the catalog with one dopant each (the first catalog dopant allowed for the host),
the five centre classes (environments 0, 4, 8, 12, 23: X2, VacX, VacX2, M, D with intact neighbours), 60 keV, both
detectors from one run, static potential, 64 noisy patches per image; one MLP-Simple trains on it (default
schedule). Then a rotated 20 x 20 Å field of each host in each detector (``simulate fullfield``, 10 % dopants,
8 % single and 8 % double vacancies) is classified and scored against its truth.

    python bench/every_host_detectors.py [--hosts WSe2,MoS2] [--size-angstrom 20] [--keep DIR]

Per (host, detector): Cohen's kappa, sublattice agreement, the store's and the frame's brighter sublattice and
whether the inference check agreed. JSON to bench/results/every-host-detectors-<UTC>.json. About 65 multislice
runs for the store and 2 per host for the fields: ~20 min on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import zarr  # noqa: E402

from bench._report import print_table, versions, write_result  # noqa: E402
from contract.catalog import is_excluded, load_catalog  # noqa: E402
from contract.jsonio import json_text  # noqa: E402
from kernels.site_symmetry import brighter_sublattice  # noqa: E402
from simulate.run import simulate  # noqa: E402

DETECTORS = ("HAADF", "MAADF")
FRACTIONS = "D=0.1,VacX=0.08,VacX2=0.08"


def combos(hosts: list[str] | None) -> list[tuple[str, str]]:
    """(host, dopant) per catalog host: the first catalog dopant not excluded for its metal."""
    catalog = load_catalog()
    names = hosts or list(catalog.hosts)
    return [(h, next(d for d in catalog.dopants if not is_excluded(catalog.hosts[h].metal, d))) for h in names]


def run(cmd: list[str]) -> None:
    subprocess.run([sys.executable, *cmd], check=True, cwd=REPO, capture_output=True, text=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", default=None, help="comma-separated hosts (default: every catalog host)")
    p.add_argument("--size-angstrom", type=float, default=20.0)
    p.add_argument("--keep", default=None, help="work directory to keep (default: a temporary one)")
    args = p.parse_args(argv)
    pairs = combos(args.hosts.split(",") if args.hosts else None)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="every-host-") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        config = work / "every-host.yaml"
        config.write_text(f"base: {REPO / 'configs' / 'dataset' / 'tiny.yaml'}\nname: every-host\n"
                          f"selection:\n  combos: {json_text([list(c) for c in pairs])}\n"
                          "environments: [0, 4, 8, 12, 23]\npatches:\n  patches_per_image: 64\n")
        store, run_dir = work / "every-host.zarr", work / "run"
        t = {}
        reused = (run_dir / "checkpoints" / "last.ckpt").is_file()  # a kept work directory: classify again
        if not reused:
            t0 = time.perf_counter()
            simulate(config, store, cluster="local", n_workers=2)
            t["simulate"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            run(["-m", "features", "--store", str(store)])
            run(["-m", "training", "fit", "--config", "configs/train/base.yaml", "--config",
                 "configs/train/mlp-simple.yaml", "--data.store", str(store), "--run_dir", str(run_dir)])
            t["encode_and_train"] = time.perf_counter() - t0
        g = zarr.open_group(str(store), mode="r")
        store_brighter = {(c["host"], c["detector"]): brighter_sublattice(row)
                          for c, row in zip(g.attrs["cases"], g["features"].attrs["site_symmetry"]["table"])}
        rows = []
        t0 = time.perf_counter()
        for host, dopant in pairs:
            for detector in DETECTORS:
                field, pred = work / f"field-{host}-{detector}", work / f"pred-{host}-{detector}"
                if not (field / "truth.json").is_file():
                    run(["-m", "simulate", "fullfield", "--host", host, "--dopant", dopant, "--energy-kev", "60",
                         "--detector", detector, "--fractions", FRACTIONS, "--size-angstrom",
                         str(args.size_angstrom), "--rotation-deg", "23", "--seed", "5", "--out", str(field)])
                shutil.rmtree(pred, ignore_errors=True)  # a kept directory's earlier classification
                run(["-m", "inference", "classify", str(field / "image.npy"), "--model",
                     str(run_dir / "checkpoints" / "last.ckpt"), "--host", host, "--dopant", dopant,
                     "--out", str(pred)])
                run(["-m", "inference", "score", "--pred", str(pred), "--truth", str(field)])
                score = json.loads((pred / "score.json").read_text())
                check = json.loads((pred / "summary.json").read_text())["site_symmetry_check"]
                summary = json.loads((pred / "summary.json").read_text())
                rows.append({"host": host, "dopant": dopant, "detector": detector,
                             "metal_sublattice_source": summary.get("metal_sublattice_source"),
                             "kappa": round(score["cohen_kappa"], 3), "accuracy": round(score["accuracy"], 3),
                             "n_matched": score["n_matched"],
                             "sublattice_agreement": score["sublattice_agreement"],
                             "store_brighter": store_brighter[(host, detector)],
                             "frame_brighter": check["frame_brighter_sublattice"], "check_agrees": check["agree"]})
                print(json_text(rows[-1]), flush=True)
        t["fields"] = time.perf_counter() - t0
    columns = ["host", "dopant", "detector", "metal_sublattice_source", "kappa", "accuracy", "n_matched", "sublattice_agreement",
               "store_brighter", "frame_brighter", "check_agrees"]
    print_table(rows, columns)
    kappa = {(r["host"], r["detector"]): r["kappa"] for r in rows}
    gaps = {h: round(kappa[(h, "MAADF")] - kappa[(h, "HAADF")], 3) for h, _ in pairs}
    print("MAADF - HAADF kappa per host:", json_text(gaps))
    path = write_result("every-host-detectors", {
        "about": __doc__.splitlines()[0], "reused_store_and_model": reused, "rows": rows, "maadf_minus_haadf_kappa": gaps, "timings_s": t,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "versions": versions("abtem", "torch", "numpy")})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
