"""Command line of the simulation stage.

    python -m simulate --config configs/dataset/demo.yaml --out data/demo.zarr [--cluster local|slurm]
                       [--cluster-config configs/cluster/slurm.yaml] [--workers N] [--resume]
    python -m simulate structures --config CONFIG --out DIR     # one CIF per (combo, environment)
    python -m simulate check --config CONFIG                    # validate and summarise, submit nothing
"""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError
from .store import StoreError


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m simulate", description="Simulate noisy STEM patches into a zarr store.")
    p.add_argument("--config", required=True, help="dataset YAML (configs/dataset/*.yaml)")
    p.add_argument("--out", required=True, help="output zarr store, e.g. data/demo.zarr")
    p.add_argument("--cluster", choices=("local", "slurm"), default="local",
                   help="local: LocalCluster on this machine (default); slurm: dask-jobqueue SLURMCluster")
    p.add_argument("--cluster-config", default=None, help="cluster YAML (default configs/cluster/slurm.yaml for slurm)")
    p.add_argument("--workers", type=int, default=None, help="number of Dask workers (default: sized to the machine / config)")
    p.add_argument("--resume", action="store_true", help="finish an existing store: skip tasks already done")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "structures":
            p = argparse.ArgumentParser(prog="python -m simulate structures")
            p.add_argument("--config", required=True)
            p.add_argument("--out", required=True, help="directory for the CIF files")
            args = p.parse_args(argv[1:])
            from .config import load
            from .structures import write_environment_cifs

            paths = write_environment_cifs(load(args.config), args.out)
            print(f"wrote {len(paths)} CIF files under {args.out}")
            return 0
        if argv and argv[0] == "check":
            p = argparse.ArgumentParser(prog="python -m simulate check")
            p.add_argument("--config", required=True)
            args = p.parse_args(argv[1:])
            from .config import config_hash, load
            from .plan import make_plan

            cfg = load(args.config)
            plan = make_plan(cfg)
            print(f"{cfg['name']}: OK, {len(cfg['combos'])} combos, {len(plan.environment_ids)} environments, "
                  f"{len(plan.tasks)} tasks, {len(plan.cases)} cases, {plan.n_rows} patches, gpts "
                  f"{cfg['multislice']['gpts']}, hash {config_hash(cfg)[:12]}")
            return 0
        args = _run_parser().parse_args(argv)
        from .run import simulate

        simulate(args.config, args.out, cluster=args.cluster, cluster_config=args.cluster_config,
                 n_workers=args.workers, resume=args.resume)
        return 0
    except (ConfigError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # cluster errors etc.: say what failed, keep the traceback for --debug users
        from cluster import ClusterError

        if isinstance(err, ClusterError):
            print(f"cluster error: {err}", file=sys.stderr)
            return 3
        raise


if __name__ == "__main__":
    sys.exit(main())
