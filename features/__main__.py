"""Command line of the feature stage (``python -m features --help`` lists the subcommands).

    python -m features encode --store STORE.zarr [--cluster local|slurm] [--device cpu|gpu] [--cluster-config PATH]
    python -m features verify --store STORE.zarr [--repair]   # check every feature shard; re-encode bad ones
    python -m features symmetry IMAGE [--kernel-px K] [--n-max N] [--convention motif] --out MAPS.npz [--plot]
    python -m features symmetry --store PLANEGROUPS.zarr [--kernel-px K] [--cluster local|slurm] [--device cpu|gpu]

``python -m features --store ...`` (no subcommand) is ``encode``. Failures: one line on stderr and the exit codes
of ``contract.errors`` (``--debug`` for the traceback).
"""
from __future__ import annotations

import argparse
import sys
import time

from contract.cli import check_output_args, run_command, stage_parser, with_default_subcommand
from contract.errors import InputError
from contract.jsonio import json_text

PROG = "python -m features"


def build_parser() -> argparse.ArgumentParser:
    parser, sub = stage_parser(PROG, "Features of simulated patches and of images.")
    enc = sub.add_parser("encode", help="encode a store's patches into the 31 features (resumable; the default)")
    enc.add_argument("--store", required=True, help="zarr store written by `python -m simulate`")
    enc.add_argument("--cluster", default="local", choices=("local", "slurm"), help="Dask cluster kind")
    enc.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="cpu: NumPy; gpu: CuPy workers")
    enc.add_argument("--cluster-config", default=None, help="YAML for the cluster layer (cluster.open_client)")
    enc.add_argument("--n-workers", type=int, default=None, help="number of Dask workers (default: the config's)")
    ver = sub.add_parser("verify", help="read every feature shard and marker; --repair re-encodes exactly the bad ones")
    ver.add_argument("--store", required=True, help="zarr store with features (`python -m features encode`)")
    ver.add_argument("--repair", action="store_true", help="re-encode the bad shards (resume rules): byte-identical")
    for flag, kw in (("--cluster", dict(default="local", choices=("local", "slurm"))),
                     ("--device", dict(default="cpu", choices=("cpu", "gpu"))),
                     ("--cluster-config", dict(default=None)), ("--n-workers", dict(type=int, default=None))):
        ver.add_argument(flag, help="as for encode, used by --repair", **kw)
    sym = sub.add_parser("symmetry", help="dense Zernike symmetry maps of an image file or a plane-group store")
    sym.add_argument("image", nargs="?", default=None, help=".npy, .tif, .dm3, .dm4 or .emd (as `inference` reads)")
    sym.add_argument("--out", default=None, help="MAPS.npz for an image (rot2 rot3 rot4 rot6 mirror sin2a cos2a, valid)")
    sym.add_argument("--store", default=None, help="plane-group store: write its `maps` (resumable)")
    sym.add_argument("--kernel-px", type=int, default=None,
                     help="odd kernel side in px, about 2.5 x sqrt(cell area) (default: from the measured cell)")
    sym.add_argument("--n-max", type=int, default=10, help="highest Zernike radial order (>= 6)")
    sym.add_argument("--convention", default="zero-mean", choices=("zero-mean", "motif"),
                     help="zero-mean kernels (offset-invariant, default) or motif-learn 0.1.2's exactly")
    sym.add_argument("--plot", action="store_true", help="also write MAPS.png (image + the seven maps)")
    sym.add_argument("--cluster", default="local", choices=("local", "slurm"), help="Dask cluster kind (--store)")
    sym.add_argument("--device", default="cpu", choices=("cpu", "gpu"), help="cpu: NumPy; gpu: CuPy workers")
    sym.add_argument("--cluster-config", default=None, help="YAML for the cluster layer (--store)")
    sym.add_argument("--n-workers", type=int, default=None, help="number of Dask workers (--store)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return run_command(_dispatch, argv, prog=PROG)


def _dispatch(argv: list[str]) -> int:
    args = build_parser().parse_args(with_default_subcommand(argv, "encode"))
    check_output_args(args, {"out": "file"})  # symmetry --out MAPS.npz, before any work
    if args.command == "symmetry":
        return _symmetry(args)
    if args.command == "verify":
        from .verify import verify_main  # deferred: keeps --help light (zarr, dask)

        return verify_main(args)
    from cluster import open_client  # deferred: keeps --help light (zarr, dask)

    from .encode import encode_store, store_plan  # deferred: keeps --help light (zarr, dask)

    store_plan(args.store)  # bad store -> clear error before any cluster starts
    start = time.monotonic()
    with open_client(args.cluster, n_workers=args.n_workers, config_path=args.cluster_config) as client:
        summary = encode_store(args.store, client, device=args.device)
    print(f"features: {summary['encoded_shards']} shard(s) / {summary['encoded_rows']} rows encoded, "
          f"{summary['skipped_shards']} already done, of {summary['n_shards']} "
          f"in {time.monotonic() - start:.1f} s -> {args.store}/features", file=sys.stderr)
    return 0


def _symmetry(args) -> int:
    from .symmetry_store import image_maps, map_store, store_plan  # deferred: keeps --help light (zarr, dask)

    if (args.image is None) == (args.store is None):
        raise InputError("symmetry: give either an IMAGE (with --out MAPS.npz) or --store STORE")
    if args.image is not None:
        if args.out is None or not str(args.out).endswith(".npz"):  # before the maps are computed
            raise InputError(f"symmetry IMAGE: --out MAPS.npz is required (got {args.out})")
        print(json_text(image_maps(args.image, args.out, args.kernel_px, args.n_max, args.convention, args.plot)))
        return 0
    from cluster import open_client  # deferred: keeps --help light (zarr, dask)

    store_plan(args.store)  # bad store -> clear error before any cluster starts
    start = time.monotonic()
    with open_client(args.cluster, n_workers=args.n_workers, config_path=args.cluster_config) as client:
        summary = map_store(args.store, client, args.kernel_px, args.n_max, args.convention, args.device)
    print(f"symmetry maps: {summary['done_shards']} shard(s) / {summary['rows']} images, {summary['skipped_shards']} "
          f"already done, of {summary['n_shards']} in {time.monotonic() - start:.1f} s -> {args.store}/maps",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
