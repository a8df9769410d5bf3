"""Command line of the rVAE stage (``python -m rvae --help`` lists the subcommands).

    python -m rvae fit-image IMAGE --window-angstrom W [--pixel-size-angstrom S] --out DIR [--config C]
    python -m rvae fit-4dstem DATA [--array PATH] --out DIR [--fold-period-px PY PX] [--config C]
    python -m rvae fit|validate|predict --config configs/rvae/NAME.yaml --data.store S --data.array A  (LightningCLI)
    python -m rvae encode --ckpt CKPT --store S --array A --out OUT.zarr
    python -m rvae submit --config C --data.store S --data.array A [slurm options]                   (submitit)
    python -m rvae render-field --out DIR      # the two-grain test field of seed 002 with its truth

Training options for fit-image / fit-4dstem: ``--max-epochs``, ``--decoder``, ``--period``, ``--n-latent``,
``--translation/--no-translation`` and any ``--trainer.*``, ``--model.*``, ``--data.*`` LightningCLI override
after ``--``. Failures: one line on stderr and the exit codes of ``contract.errors`` (``--debug``: traceback).
"""
from __future__ import annotations

import argparse
import sys

from contract.cli import check_output_args, run_command, stage_parser
from contract.errors import InputError

PROG = "python -m rvae"
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "predict")


def _training_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="rVAE YAML (default configs/rvae/adf.yaml or fourdstem.yaml)")
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--decoder", choices=("spatial", "canonical"), default=None)
    p.add_argument("--period", type=int, default=None, help="n-fold period of the angle (angle modulo 2 pi / n)")
    p.add_argument("--n-latent", type=int, default=None, help="number of content latents")
    p.add_argument("--translation", action=argparse.BooleanOptionalAction, default=None)


def build_parser() -> argparse.ArgumentParser:
    parser, sub = stage_parser(PROG, "Rotationally invariant VAE for atom-centred ADF "
                                     "sub-images and 4D-STEM diffraction patterns.")
    img = sub.add_parser("fit-image", help="columns -> sub-images -> rVAE -> atoms.csv and maps")
    img.add_argument("image", help="ADF image (.npy with .json beside it, .tif, .dm3/.dm4, .emd)")
    img.add_argument("--window-angstrom", type=float, required=True, help="side of each sub-image [A]")
    img.add_argument("--pixel-size-angstrom", type=float, default=None, help="overrides the file's metadata")
    img.add_argument("--size-px", type=int, default=None, help="odd sub-image size (default: the config's)")
    img.add_argument("--min-distance-angstrom", type=float, default=1.2,
                     help="smallest distance between two columns (the peak finder's footprint)")
    img.add_argument("--smooth-sigma-angstrom", type=float, default=0.2, help="smoothing before peak finding")
    img.add_argument("--finder", choices=("new", "old"), default="new",
                     help="column refinement: new (the peak finder's disk centroid) or old (Gaussian-weighted)")
    img.add_argument("--out", required=True, help="output directory")
    _training_options(img)
    four = sub.add_parser("fit-4dstem", help="4-D array -> rVAE -> latents.npy, angle.npy, maps, COM baseline")
    four.add_argument("data", help=".npy or zarr array (scan x, scan y, kx, ky), or a simulate fourdstem store")
    four.add_argument("--array", default=None,
                      help="array path inside a zarr group, e.g. graphene/patterns/dose_100000")
    four.add_argument("--fold-period-px", type=int, nargs=2, default=None, metavar=("ROWS", "COLS"),
                      help="lattice period in scan pixels along scan y and x, for the periodic-residual anomaly map")
    four.add_argument("--angular-sampling-mrad", type=float, default=None, help="pattern pixel size (COM in mrad)")
    four.add_argument("--scan-sampling-angstrom", type=float, nargs=2, default=None, metavar=("DX", "DY"))
    four.add_argument("--window", choices=("bright_field", "whole"), default="bright_field",
                      help="what the rVAE sees: the bright-field disc and inner dark field about the undeflected "
                           "beam (default) or the whole pattern")
    four.add_argument("--bright-field-radius-factor", type=float, default=1.5,
                      help="the bright-field window reaches this many disc radii (default 1.5)")
    four.add_argument("--out", required=True, help="output directory")
    _training_options(four)
    enc = sub.add_parser("encode", help="encode a store's items with a fitted checkpoint into a zarr group")
    enc.add_argument("--ckpt", required=True)
    enc.add_argument("--store", required=True)
    enc.add_argument("--array", required=True)
    enc.add_argument("--out", required=True)
    render = sub.add_parser("render-field", help="the rendered two-grain ADF test field (image.npy, image.json, "
                            "truth.csv)")
    render.add_argument("--out", required=True)
    render.add_argument("--seed", type=int, default=0)
    sub.add_parser("submit", help="fit on Slurm through submitit (python -m rvae submit --help)", add_help=False)
    for name in LIGHTNING_SUBCOMMANDS:
        sub.add_parser(name, help=f"LightningCLI {name} (python -m rvae {name} --help)", add_help=False)
    return parser


def _overrides(args) -> list[str]:
    out = []
    if args.max_epochs is not None:
        out += ["--trainer.max_epochs", str(args.max_epochs)]
    for name, flag in (("decoder", "decoder"), ("period", "period"), ("n_latent", "n_latent")):
        if getattr(args, name) is not None:
            out += [f"--model.{flag}", str(getattr(args, name))]
    if args.translation is not None:
        out += ["--model.translation", str(args.translation).lower()]
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return run_command(_dispatch, argv, prog=PROG)


def _dispatch(argv: list[str]) -> int:
    if argv and argv[0] in LIGHTNING_SUBCOMMANDS:
        from .cli import run_cli  # deferred: keeps --help light (lightning)

        run_cli(argv)
        return 0
    if argv and argv[0] == "submit":
        from .submit import main as submit_main  # deferred: keeps --help light (submitit, torch)

        submit_main(argv[1:])
        return 0
    lightning = []
    if "--" in argv:  # everything after -- goes to the LightningCLI (e.g. -- --trainer.devices 2)
        cut = argv.index("--")
        argv, lightning = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    check_output_args(args)  # before any data is read or model fitted
    if args.command == "fit-image":
        from .fit import DEFAULT_ADF_CONFIG, fit_image  # deferred: keeps --help light (torch, lightning)

        fit_image(args.image, args.out, window_angstrom=args.window_angstrom,
                  pixel_size_angstrom=args.pixel_size_angstrom, config=args.config or DEFAULT_ADF_CONFIG,
                  size_px=args.size_px, min_distance_angstrom=args.min_distance_angstrom,
                  smooth_sigma_angstrom=args.smooth_sigma_angstrom, overrides=_overrides(args) + lightning,
                  finder=args.finder)
    elif args.command == "fit-4dstem":
        from .fit import DEFAULT_4D_CONFIG, fit_4dstem  # deferred: keeps --help light (torch, lightning)

        fit_4dstem(args.data, args.out, array=args.array, config=args.config or DEFAULT_4D_CONFIG,
                   fold_period_px=args.fold_period_px, angular_sampling_mrad=args.angular_sampling_mrad,
                   scan_sampling_angstrom=args.scan_sampling_angstrom, window=args.window,
                   bright_field_radius_factor=args.bright_field_radius_factor,
                   overrides=_overrides(args) + lightning)
    elif args.command == "encode":
        from .encode import encode_store, load_module  # deferred: keeps --help light (torch)

        module, transform, _ = load_module(args.ckpt)
        encode_store(module, args.store, args.array, transform, args.out)
        print(f"wrote {args.out}")
    elif args.command == "render-field":
        from .synthetic import write_field  # deferred: keeps --help light (scipy)

        out = write_field(args.out, seed=args.seed)
        print(f"wrote {out}/image.npy, image.json, truth.csv")
    else:
        raise InputError(f"unknown subcommand {args.command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
