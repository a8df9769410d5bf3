"""Command line of the inference stage.

    python -m inference classify IMAGE [--model CKPT] --host WSe2 --dopant Cr [--energy-kev 80] [--detector HAADF]
                                 [--pixel-size-angstrom S] [--patch-size-px P] [--metal-sublattice auto]
                                 [--allow-unseen-context] [--build-model [--cluster local|slurm]] --out DIR
    python -m inference models      (the registered models: shipped and built, inference/registry.py)
    python -m inference build --config DATASET.yaml --name NAME --work DIR [--into DIR]   (make starter-model)

Without --model the model comes from the registry: one whose training cases cover the frame's context, else
exit 4 with the command that builds one (--build-model builds it, ~10 minutes on 2 cores, then classifies).

Exit codes (``contract.errors``): 2 bad input (unreadable or damaged image, no lattice, wrong checkpoint,
missing context), 4 a context the model was never trained on (``--allow-unseen-context`` runs it anyway).
    python -m inference score --pred DIR --truth DIR [--tolerance-fraction 0.3]
    python -m inference phase IMAGE [IMAGE ...] --out DIR          (measured from the cell average, no model)
    python -m inference phase IMAGE [IMAGE ...] --model CKPT --out DIR [--cell-px C] [--kernel-px K]   (CNN)
"""
from __future__ import annotations

import sys

from contract.cli import check_output_args, run_command, stage_parser
from contract.errors import InputError
from contract.jsonio import json_text

from .calibration import PIXEL_SIZE_TOLERANCE

PROG = "python -m inference"


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return run_command(_dispatch, argv, prog=PROG)


def _dispatch(argv: list[str]) -> int:
    p, sub = stage_parser(PROG, "Classify the columns of micrographs and score them.")
    c = sub.add_parser("classify", help="classify every column of a micrograph")
    c.add_argument("image", help=".npy (metadata from IMAGE.json beside it), .tif, .dm3, .dm4 or .emd")
    c.add_argument("--model", default=None,
                   help="Lightning checkpoint (e.g. runs/.../last.ckpt); default: a registered model that covers "
                        "the frame's context (`python -m inference models` lists them)")
    c.add_argument("--build-model", action="store_true",
                   help="when no registered model covers the context, build one (simulate, encode, train, "
                        "register: ~10 minutes on 2 cores), then classify")
    c.add_argument("--match-frame", action="store_true",
                   help="with --build-model: simulate the training data with this frame's measured blur, dose or "
                        "signal-to-noise, 8-bit display export and pixel sampling (inference.frame_imaging); the "
                        "model card records what was matched and what was not")
    c.add_argument("--frozen-phonons", type=int, default=0, metavar="N",
                   help="with --build-model: average N frozen-phonon configurations per image (multislice cost x N; "
                        "default 0, a static potential: docs/classify.md says what N changed on real frames)")
    c.add_argument("--cluster", choices=("local", "slurm"), default="local", help="where --build-model simulates")
    c.add_argument("--cluster-config", default=None, help="cluster YAML for --build-model (configs/cluster/*.yaml)")
    c.add_argument("--host", default=None, help="host from the catalog, e.g. WSe2")
    c.add_argument("--dopant", default=None, help="dopant element, e.g. Cr, or none (undoped)")
    c.add_argument("--energy-kev", type=float, default=None, help="beam energy: 60, 80 or 100")
    c.add_argument("--detector", default=None, help="HAADF or MAADF")
    c.add_argument("--pixel-size-angstrom", type=float, default=None,
                   help="overrides the file (used even when the lattice disagrees, with a warning); a file's pixel "
                        f"size more than {100 * PIXEL_SIZE_TOLERANCE:g} %% off the lattice, or none, gives way to "
                        "the one the catalog lattice constant implies (docs/real-frames.md)")
    c.add_argument("--patch-size-px", type=int, default=None,
                   help="the model's patch size (default: recorded in the checkpoint)")
    c.add_argument("--metal-sublattice", choices=("auto", "brighter", "dimmer"), default="auto")
    c.add_argument("--allow-unseen-context", action="store_true",
                   help="classify even when host/dopant/energy/detector is not among the model's training cases "
                        "(the summary and overlay then say so)")
    c.add_argument("--out", required=True, help="output directory (written only when the whole run succeeds)")
    s = sub.add_parser("score", help="score a classification against simulated ground truth")
    s.add_argument("--pred", required=True, help="output directory of classify")
    s.add_argument("--truth", required=True, help="output directory of simulate fullfield")
    s.add_argument("--tolerance-fraction", type=float, default=0.3,
                   help="match distance as a fraction of the nearest-column distance a/√3")
    sub.add_parser("models", help="list the registered models (shipped with the package and built) and their cases")
    b = sub.add_parser("build", help="simulate a dataset config, encode, train and register the model (make starter-model)")
    b.add_argument("--config", required=True, help="dataset config, e.g. configs/dataset/starter.yaml")
    b.add_argument("--name", required=True, help="registry name of the model, e.g. starter")
    b.add_argument("--model", default=None, help="which of the paper's models to train (default: the build default)")
    b.add_argument("--work", required=True, help="directory of the store and the training run (resumed when present)")
    b.add_argument("--into", default=None, help="registry directory (default: the user's, $STEM_CONTEXT_MODELS)")
    b.add_argument("--keep-data", action="store_true", help="keep the simulated store after registering")
    b.add_argument("--cluster", choices=("local", "slurm"), default="local")
    b.add_argument("--cluster-config", default=None)
    ph = sub.add_parser("phase", help="plane-group phase of images (plane-group map + summary.json per image)")
    ph.add_argument("images", nargs="+", help=".npy, .tif, .dm3, .dm4 or .emd files")
    ph.add_argument("--method", choices=("cnn", "deviation"), default=None,
                    help="deviation (the default without --model): measured from the cell average's symmetry "
                         "deviations and the geometric AIC, no model, 92.5 %% on the demo store against the CNN's "
                         "41.9 %% (docs/planegroups.md); cnn (the default with --model): a trained phase classifier")
    ph.add_argument("--model", default=None,
                    help="phase-classifier checkpoint (runs/planegroups/*/checkpoints/last.ckpt), for --method cnn")
    ph.add_argument("--out", required=True, help="output directory: one folder per image, named after the file")
    ph.add_argument("--cell-px", type=float, default=None, help="sqrt(primitive cell area) in px (default: measured)")
    ph.add_argument("--kernel-px", type=int, default=None, help="symmetry-map kernel, odd (default: from the cell)")
    ph.add_argument("--stride-px", type=int, default=None, help="patch stride (default: half a patch)")
    args = p.parse_args(argv)
    check_output_args(args)  # before the model is loaded or the image read
    if args.command == "phase" and args.method is None:  # the measured group unless a CNN checkpoint is given
        args.method = "cnn" if args.model else "deviation"
    if args.command == "phase" and args.method == "deviation":
        from .phase_deviation import run_phase_deviation

        for s in run_phase_deviation(args.images, args.out):
            print(f"{s['image']}: {s['plane_group']} (G-AIC {s['criterion']:.4g}; runner-up {s['runner_up']} "
                  f"{s['runner_up_criterion']:.4g}) -> {s['folder']}")
        return 0
    if args.command == "phase":
        if args.model is None:
            raise InputError("inference phase --method cnn needs --model CKPT (or use --method deviation)")
        from .phase import run_phase

        for s in run_phase(args.images, args.model, args.out, cell_px=args.cell_px, kernel_px=args.kernel_px,
                           stride_px=args.stride_px):
            flag = "" if s["confident"] else " (not confident)"
            print(f"{s['image']}: {s['plane_group']} p={s['probability']:.2f}{flag} -> {s['folder']}")
        return 0
    if args.command == "build":
        from .build import DEFAULT_MODEL, build_from_config

        build_from_config(args.config, args.name, model=args.model or DEFAULT_MODEL, cluster=args.cluster,
                          cluster_config=args.cluster_config, work_dir=args.work, models_dir=args.into,
                          keep_data=args.keep_data)
        return 0
    if args.command == "models":
        from .registry import list_models, user_dir

        for m in list_models():
            c = m.card
            cases = sorted({f"{k['host']}+{k['dopant']} {k['beam_energy_kev']} keV" for k in c.cases})
            print(f"{c.name} ({m.source}, {c.model}, {c.context_encoding} context, held-out accuracy {100 * c.metrics['test_accuracy']:.1f} %, "
                  f"{c.checkpoint_size_bytes / 1e6:.2f} MB): {', '.join(cases)} x "
                  f"{'/'.join(sorted({k['detector'] for k in c.cases}))}")
        print(f"built models go to {user_dir()} (set STEM_CONTEXT_MODELS to change it)")
        return 0
    if args.command == "classify":
        from .classify import report_warnings, run_classify

        if args.build_model and args.model:
            raise InputError("--build-model builds a registered model; it cannot be combined with --model")
        if args.match_frame and not args.build_model:
            raise InputError("--match-frame matches a model built for this frame: give --build-model too")
        if args.frozen_phonons and not args.build_model:
            raise InputError("--frozen-phonons sets how a model is built: give --build-model too")
        if args.frozen_phonons < 0:  # the upper bound is the dataset config's, checked before the build starts
            raise InputError(f"--frozen-phonons must be >= 0, got {args.frozen_phonons}")
        card = None
        if args.model is None:  # the registry's model for the frame's context (exit 4 when none, unless built)
            from .build import frame_context, frame_dataset_overrides, model_for_frame

            given = {"host": args.host, "dopant": args.dopant, "beam_energy_kev": args.energy_kev,
                     "detector": args.detector, "pixel_size_angstrom": args.pixel_size_angstrom}
            matched = None
            if args.match_frame:
                matched, unmatched = frame_dataset_overrides(args.image, frame_context(args.image, given))
                for line in unmatched:
                    print(f"note: not matched to the frame: {line}", file=sys.stderr)
            if args.frozen_phonons:  # a model of its own: the registry keys built models by their overrides
                matched = {**(matched or {}), "multislice": {"frozen_phonons": args.frozen_phonons}}
            found = model_for_frame(args.image, given, args.out, build=args.build_model, cluster=args.cluster,
                                    cluster_config=args.cluster_config, dataset_overrides=matched)
            args.model, card = str(found.checkpoint_path), found.card
        summary = run_classify(args.image, args.model, args.out, model_card=card, host=args.host, dopant=args.dopant,
                               beam_energy_kev=args.energy_kev, detector=args.detector,
                               pixel_size_angstrom=args.pixel_size_angstrom, patch_size_px=args.patch_size_px,
                               metal_sublattice=args.metal_sublattice,
                               allow_unseen_context=args.allow_unseen_context)
        for note in summary["notes"]:
            print(f"note: {note}")
        unc = summary["uncertainty"]
        print(f"{summary['n_sites']} sites ({summary['n_border']} on the border, not counted; "
              f"{summary['n_sites_without_peak']} placed from their neighbours), lattice "
              f"{summary['lattice_constant_angstrom_image']:.3f} Å over {100 * summary['lattice_area_fraction']:.0f} % "
              f"of the image; model context encoding {summary['context_encoding']}; counts {summary['counts']}; "
              f"defects per nm² "
              f"{json_text(summary['defect_density_per_nm2'])}; {100 * unc['fraction_above_threshold']:.0f} % of "
              f"sites above {unc['entropy_threshold_nats']} nats entropy; wrote {args.out}")
        for line in report_warnings(summary):
            print(f"WARNING: {line} (see {args.out}/classes.png and summary.json)")
    else:
        from .score import run_score

        out = run_score(args.pred, args.truth, args.tolerance_fraction)
        print(json_text({k: out[k] for k in ("recall", "position_error_pm_mean", "cohen_kappa", "f1_defect")
                          if k in out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
