"""Does the physical context say what the simulated lattice shows? The isolated-column contrast ln(I_X2 / I_M) of
``contract.physical_context`` against the same contrast measured on a store's noiseless lattice patches.

    python bench/column_contrast.py --store data/hosts.zarr

Per (host, detector, beam energy) of the store: ln(I_X2 / I_M) from the column-signal table (one isolated column,
probe on it) and ln(x / m) from the store's ``features.attrs["site_symmetry"]`` (mean central intensity of the
intact chalcogen-pair and metal columns in the clean patches: the lattice, with its neighbours' probe tails and,
in MAADF, the bright-field rim). Printed with their difference; per detector the Spearman rank correlation and
how many signs agree (the sign decides which sublattice is brighter). Written to
``bench/results/column-contrast-<date>.json``. The baseline is the lattice measurement itself: a perfect
descriptor has difference 0 and rank correlation 1.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _report import print_table, versions, write_result  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default="data/hosts.zarr", help="encoded store (rule-3 site-symmetry attributes)")
    args = ap.parse_args()

    from scipy.stats import spearmanr

    from contract import store as schema
    from kernels.context import case_physical_context

    group = schema.open_group(args.store)
    site = group[schema.FEATURES].attrs[schema.ATTR_SITE_SYMMETRY]
    rows, seen = [], set()
    for k, case in enumerate(group.attrs[schema.ATTR_CASES]):
        key = (case["host"], case["detector"], case["beam_energy_kev"])
        if key in seen:  # the contrast of X2 against M does not depend on the dopant
            continue
        seen.add(key)
        m, x = site["mean_central_intensity_metal"][k], site["mean_central_intensity_chalcogen"][k]
        lattice = float(np.log(x / m))
        isolated = float(case_physical_context(case)[0])
        rows.append({"host": key[0], "detector": key[1], "beam_energy_kev": key[2],
                     "lattice ln(X2/M)": round(lattice, 3), "isolated ln(X2/M)": round(isolated, 3),
                     "difference": round(isolated - lattice, 3),
                     "sign": "same" if np.sign(lattice) == np.sign(isolated) else "DIFFERS"})
    rows.sort(key=lambda r: (r["detector"], r["beam_energy_kev"], r["lattice ln(X2/M)"]))
    print_table(rows, list(rows[0]))
    summary = {}
    for det in sorted({r["detector"] for r in rows}):
        sel = [r for r in rows if r["detector"] == det]
        lat = np.array([r["lattice ln(X2/M)"] for r in sel])
        iso = np.array([r["isolated ln(X2/M)"] for r in sel])
        summary[det] = {"n": len(sel), "spearman": float(spearmanr(lat, iso).statistic),
                        "signs_agree": int((np.sign(lat) == np.sign(iso)).sum()),
                        "max_abs_difference": float(np.abs(iso - lat).max())}
        print(f"{det}: Spearman {summary[det]['spearman']:.3f}, signs agree {summary[det]['signs_agree']}/{len(sel)}, "
              f"largest |difference| {summary[det]['max_abs_difference']:.3f}")
    path = write_result("column-contrast", {"store": args.store, "rows": rows, "summary": summary,
                                            "versions": versions("abtem", "numpy", "zarr")})
    print(f"written: {path}")


if __name__ == "__main__":
    main()
