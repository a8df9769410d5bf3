"""Command line of the simulation stage.

    python -m simulate --config configs/dataset/demo.yaml --out data/demo.zarr [--cluster local|slurm]
                       [--cluster-config configs/cluster/slurm.yaml] [--workers N] [--resume]
    python -m simulate structures --config CONFIG --out DIR     # one CIF per (combo, environment)
    python -m simulate check --config CONFIG                    # validate and summarise, submit nothing
    python -m simulate fullfield --host WSe2 --dopant Cr --energy-kev 60 --detector MAADF --out DIR
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
        if argv and argv[0] == "fullfield":
            p = argparse.ArgumentParser(prog="python -m simulate fullfield",
                                        description="A full field of view with random defects and its ground truth.")
            p.add_argument("--host", required=True, help="host from the catalog, e.g. WSe2")
            p.add_argument("--dopant", required=True, help="dopant element, e.g. Cr")
            p.add_argument("--energy-kev", type=float, required=True, help="beam energy, e.g. 60")
            p.add_argument("--detector", required=True, help="HAADF or MAADF")
            p.add_argument("--fractions", default="D=0.05,VacX=0.05,VacX2=0.02",
                           help="D of metal columns, VacX/VacX2 of chalcogen columns")
            p.add_argument("--size-angstrom", type=float, default=25.0, help="side of the square field")
            p.add_argument("--rotation-deg", type=float, default=17.0, help="lattice rotation")
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--catalog", default=None, help="dataset YAML with the host catalog (default paper.yaml)")
            p.add_argument("--out", required=True, help="output directory")
            args = p.parse_args(argv[1:])
            from .fullfield import parse_fractions, run_fullfield

            try:
                fractions = parse_fractions(args.fractions)
                if args.size_angstrom <= 0:
                    raise ValueError(f"--size-angstrom must be > 0, got {args.size_angstrom}")
                out = run_fullfield(host=args.host, dopant=args.dopant, beam_energy_kev=args.energy_kev,
                                    detector=args.detector, fractions=fractions, size_angstrom=args.size_angstrom,
                                    rotation_deg=args.rotation_deg, seed=args.seed, out_dir=args.out,
                                    config_path=args.catalog)
            except ValueError as err:  # bad host, detector, fractions, grid: say which
                raise ConfigError(str(err)) from None
            print(f"wrote {out}/image.npy, image.json, truth.csv, truth.json")
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
