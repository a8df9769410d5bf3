"""Command line of the feature stage (``python -m features --help`` lists the subcommands).

    python -m features encode --store STORE.zarr [--cluster local|slurm] [--device cpu|gpu] [--cluster-config PATH]
    python -m features verify --store STORE.zarr [--repair]   # check every feature shard; re-encode bad ones

``python -m features --store ...`` (no subcommand) is ``encode``. Failures: one line on stderr and the exit codes
of ``contract.errors`` (``--debug`` for the traceback).
"""
from __future__ import annotations

import argparse
import sys
import time

from contract.cli import DEBUG_HELP, run_command, with_default_subcommand

PROG = "python -m features"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Features of simulated patches and of images.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return run_command(_dispatch, argv, prog=PROG)


def _dispatch(argv: list[str]) -> int:
    args = build_parser().parse_args(with_default_subcommand(argv, "encode"))
    if args.command == "verify":
        from .verify import verify_main

        return verify_main(args)
    from cluster import open_client

    from .encode import encode_store, store_plan

    store_plan(args.store)  # bad store -> clear error before any cluster starts
    start = time.monotonic()
    with open_client(args.cluster, n_workers=args.n_workers, config_path=args.cluster_config) as client:
        summary = encode_store(args.store, client, device=args.device)
    print(f"features: {summary['encoded_shards']} shard(s) / {summary['encoded_rows']} rows encoded, "
          f"{summary['skipped_shards']} already done, of {summary['n_shards']} "
          f"in {time.monotonic() - start:.1f} s -> {args.store}/features", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
