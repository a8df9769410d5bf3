"""Command line of the labelling stage.

    python -m labelling add --project DIR IMAGE [--sites sites.csv] [--name NAME] [--host WSe2 --dopant Cr
                            --energy-kev 60 --detector MAADF --pixel-size-angstrom S]
    python -m labelling serve --project DIR [--host 127.0.0.1] [--port 8000] [--annotators alice,bob,carol]
    python -m labelling annotators --project DIR [--add alice,bob]
    python -m labelling predict --project DIR --model CKPT [--model CKPT ...]
    python -m labelling consensus --project DIR --out DIR [--min-votes 3] [--rule plurality|absolute]
    python -m labelling report --project DIR [--out DIR] [--min-votes 3]
    python -m labelling demo --project DIR [--field DIR]

Failures: one line on stderr and the exit codes of ``contract.errors`` (``--debug`` for the traceback).
"""
from __future__ import annotations

import argparse
import sys

from contract.cli import run_command, stage_parser
from contract.errors import InputError

from . import db
from .consensus import run_consensus
from .demo import prepare_demo
from .project import add_image, check_name, create_project, open_project, predict
from .report import run_report

PROG = "python -m labelling"


def build_parser() -> argparse.ArgumentParser:
    p, sub = stage_parser(PROG, "Expert labelling of micrograph columns in the browser, "
                                "consensus by majority vote, and models scored against it.")

    a = sub.add_parser("add", help="add a micrograph and its candidate sites to a project (created if new)")
    a.add_argument("--project", required=True, help="project directory")
    a.add_argument("image", help=".npy (metadata from IMAGE.json beside it), .tif, .dm3, .dm4 or .emd")
    a.add_argument("--sites", default=None,
                   help="candidate sites: the sites.csv of `python -m inference classify` (its classes become the "
                        "model's suggestions); default: the column finder")
    a.add_argument("--name", default=None, help="name of the image in the project (default: the file name)")
    a.add_argument("--model-name", default=None, help="name of the model of --sites (default: from summary.json)")
    a.add_argument("--host", default=None, help="host from the catalog, e.g. WSe2 (overrides the file)")
    a.add_argument("--dopant", default=None, help="dopant element, e.g. Cr, or none (undoped)")
    a.add_argument("--energy-kev", type=float, default=None, help="beam energy: 60, 80 or 100")
    a.add_argument("--detector", default=None, help="HAADF or MAADF")
    a.add_argument("--pixel-size-angstrom", type=float, default=None, help="overrides the file")

    s = sub.add_parser("serve", help="start the labelling web server and print its address")
    s.add_argument("--project", required=True, help="project directory")
    s.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (default 127.0.0.1: this computer only; any other needs tokens)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--annotators", default="", help="comma-separated names to create (their links are printed)")
    s.add_argument("--max-upload-mb", type=float, default=200.0, help="largest micrograph upload (MiB)")

    n = sub.add_parser("annotators", help="list the annotators and their personal tokens; add new ones")
    n.add_argument("--project", required=True)
    n.add_argument("--add", default="", help="comma-separated names to create")

    m = sub.add_parser("predict", help="classify every image of the project with one or more models (for report)")
    m.add_argument("--project", required=True)
    m.add_argument("--model", action="append", required=True, help="Lightning checkpoint; repeat for several")
    m.add_argument("--patch-size-px", type=int, default=None, help="passed to inference classify")

    c = sub.add_parser("consensus", help="majority vote per site, agreement between annotators, truth files")
    c.add_argument("--project", required=True)
    c.add_argument("--out", required=True, help="output directory: one folder per image (truth.csv, truth.json, "
                                                "unresolved.csv, votes.csv, agreement.json)")
    c.add_argument("--min-votes", type=int, default=3, help="fewer votes than this: listed, not resolved")
    c.add_argument("--rule", choices=("plurality", "absolute"), default="plurality",
                   help="plurality: most votes, ties listed; absolute: more than half of the votes")

    r = sub.add_parser("report", help="score every registered model against the consensus: table and figure")
    r.add_argument("--project", required=True)
    r.add_argument("--out", default=None, help="output directory (default PROJECT/report)")
    r.add_argument("--min-votes", type=int, default=3)
    r.add_argument("--rule", choices=("plurality", "absolute"), default="plurality")
    r.add_argument("--tolerance-fraction", type=float, default=0.3,
                   help="match distance as a fraction of the nearest-column distance a/√3 (as inference score)")

    d = sub.add_parser("demo", help="a demo project from a small simulated full field (cached under data/)")
    d.add_argument("--project", default="data/label-demo")
    d.add_argument("--field", default="data/label-demo-field", help="cache of the simulated field")
    d.add_argument("--size-angstrom", type=float, default=20.0)
    d.add_argument("--model", default=None, help="optional checkpoint: its classes become the suggestions")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return run_command(_dispatch, argv, prog=PROG)


def _names(text: str) -> list[str]:
    return [check_name(x.strip(), "annotator name") for x in str(text).split(",") if x.strip()]


def _dispatch(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "add":
        project = create_project(args.project)
        out = add_image(project, args.image, sites_csv=args.sites, name=args.name, host=args.host,
                        dopant=args.dopant, beam_energy_kev=args.energy_kev, detector=args.detector,
                        pixel_size_angstrom=args.pixel_size_angstrom, model_name=args.model_name)
        for note in out["notes"]:
            print(f"note: {note}")
        pred = out.get("prediction")
        print(f"added {out['name']!r} ({out['shape'][0]} x {out['shape'][1]} px, {out['n_sites']} candidate sites "
              f"from {out['sites_source']}, a = {out['lattice_constant_px']:.2f} px) to {project.root}"
              + (f"; model {pred['model']!r}: suggestions for {pred['n_matched']} sites" if pred else ""))
    elif args.command == "serve":
        from .server import serve  # deferred: the web stack (FastAPI, pydantic, uvicorn) only for serve

        serve(args.project, host=args.host, port=args.port, annotators=_names(args.annotators),
              max_upload_mb=args.max_upload_mb)
    elif args.command == "annotators":
        project = open_project(args.project)
        with project.session() as con:
            for name in _names(args.add):
                db.add_annotator(con, name)
            rows = db.annotator_links(con)
        if not rows:
            print("no annotators yet (they appear when someone logs in, or with --add NAME)")
        for row in rows:
            print(f"{row['name']}\t?token={row['token']}")
    elif args.command == "predict":
        project = open_project(args.project)
        options = {} if args.patch_size_px is None else {"patch_size_px": args.patch_size_px}
        for ckpt in args.model:
            for r in predict(project, ckpt, **options):
                print(f"{r['model']} on {r['image']}: suggestions for {r['n_matched']} of {r['n_candidates']} sites")
    elif args.command == "consensus":
        _check_min_votes(args.min_votes)
        out = run_consensus(open_project(args.project), args.out, args.min_votes, args.rule)
        _print_consensus(out, args.out)
    elif args.command == "report":
        _check_min_votes(args.min_votes)
        out = run_report(open_project(args.project), args.out, args.min_votes, args.rule, args.tolerance_fraction)
        print(out["table_text"])
        for note in out["notes"]:
            print(f"note: {note}")
        print(f"wrote {out['files']['csv']}, {out['files']['figure']}, {out['files']['json']}")
    elif args.command == "demo":
        out = prepare_demo(args.project, args.field, args.size_angstrom, args.model)
        print(f"demo project {out['project']}: image {out['image']!r} "
              + (f"added with {out['n_sites']} candidate sites" if out["added"] else "already there")
              + f"; field {'simulated into' if out['simulated'] else 'cached in'} {out['field']}"
              + (f"; suggestions of {out['prediction']['model']}" if out.get("prediction") else ""))
    return 0


def _check_min_votes(n: int) -> None:
    if n < 1:
        raise InputError(f"--min-votes must be >= 1, got {n}")


def _print_consensus(out: dict, out_dir) -> None:
    for img in out["images"]:
        st = img["status_counts"]
        print(f"{img['image']}: {img['n_sites']} sites, {st['consensus']} resolved, {st['no_column']} not columns, "
              f"{st['tie']} ties, {st['no_majority']} without majority, {st['too_few_votes']} with too few votes; "
              f"annotators {', '.join(img['annotators']) or '-'}; Fleiss kappa {img['fleiss_kappa']:.3f} over "
              f"{img['n_sites_fleiss']} sites")
        for pair in img["cohen_kappa_pairwise"]:
            print(f"  Cohen kappa {pair['a']} / {pair['b']}: {pair['kappa']:.3f} over {pair['n']} sites")
        for name, n in img["changes_after_finishing"].items():
            print(f"  note: {name} made {n} change(s) after finishing this image (no longer blind)")
        for seen in img["suggestions_seen"]:
            if seen["before_finishing"]:
                print(f"  note: {seen['annotator']} saw the model's suggestions before finishing")
    o = out["overall"]
    print(f"overall: Fleiss kappa {o['fleiss_kappa']:.3f} over {o['n_sites_fleiss']} sites; wrote {out_dir}/<image>/"
          "truth.csv (for `python -m inference score --truth`), unresolved.csv, votes.csv, agreement.json")


if __name__ == "__main__":
    sys.exit(main())
