"""Command line of the simulation stage (``python -m simulate --help`` lists the subcommands).

    python -m simulate run --config configs/dataset/demo.yaml --out data/demo.zarr [--cluster local|slurm]
                       [--cluster-config configs/cluster/slurm.yaml] [--workers N] [--resume] [--keep-patches]
    python -m simulate check --config CONFIG                    # validate and summarise, submit nothing
    python -m simulate structures --config CONFIG --out DIR     # one CIF per (combo, environment)
    python -m simulate fullfield --host WSe2 --dopant Cr --energy-kev 60 --detector MAADF --out DIR
    python -m simulate verify STORE [--repair]                 # check every shard; rerun the tasks of bad ones
    python -m simulate fourdstem --config configs/dataset/fourdstem.yaml --out data/fourdstem.zarr [--resume]
    python -m simulate planegroups --config configs/dataset/planegroups-demo.yaml --out data/planegroups-demo.zarr
    python -m simulate planegroups-materials --out data/planegroups-materials
    python -m simulate column-signals [--out contract/column_signals.json]   # the physical context's table

``python -m simulate --config ...`` (no subcommand) is ``run``. Failures: one line on stderr and the exit codes
of ``contract.errors`` (``--debug`` for the traceback).
"""
from __future__ import annotations

import argparse
import sys

from contract.cli import check_output_args, finite_float, run_command, stage_parser, with_default_subcommand
from contract.errors import ConfigError

PROG = "python -m simulate"


def build_parser() -> argparse.ArgumentParser:
    parser, sub = stage_parser(PROG, "Simulate noisy STEM patches of doped 1H-MX2 into a "
                                     "sharded zarr store (abTEM multislice on a Dask cluster).")

    run = sub.add_parser("run", help="simulate a dataset config into a store (the default subcommand)")
    run.add_argument("--config", required=True, help="dataset YAML (configs/dataset/*.yaml)")
    run.add_argument("--out", required=True, help="output zarr store, e.g. data/demo.zarr")
    run.add_argument("--cluster", choices=("local", "slurm"), default="local",
                     help="local: LocalCluster on this machine (default); slurm: dask-jobqueue SLURMCluster")
    run.add_argument("--cluster-config", default=None, help="cluster YAML (default configs/cluster/slurm.yaml for slurm)")
    run.add_argument("--workers", type=int, default=None, help="number of Dask workers (default: sized to the machine / config)")
    run.add_argument("--resume", action="store_true", help="finish an existing store: skip tasks already done")
    run.add_argument("--keep-patches", action="store_true", default=None,
                     help="store the noisy patches too (3.8 kB each at 31 px; default: they are made again, "
                          "bit-identically, from the clean scans and seeds wherever they are read)")

    signals = sub.add_parser("column-signals", help="the isolated-column signal table of the physical context "
                             "encoding (contract.physical_context), ~1 min")
    signals.add_argument("--out", default=None, help="JSON file (default: contract/column_signals.json)")

    check = sub.add_parser("check", help="validate a config and print its size; submits nothing")
    check.add_argument("--config", required=True)

    structures = sub.add_parser("structures", help="write one CIF per (combo, environment) of a config")
    structures.add_argument("--config", required=True)
    structures.add_argument("--out", required=True, help="directory for the CIF files")

    field = sub.add_parser("fullfield", help="a full field of view with random defects and its ground truth")
    field.add_argument("--host", required=True, help="host from the catalog, e.g. WSe2")
    field.add_argument("--dopant", required=True, help="dopant element, e.g. Cr, or none (undoped: no D column)")
    field.add_argument("--energy-kev", type=finite_float, required=True, help="beam energy, e.g. 60")
    field.add_argument("--detector", required=True, help="HAADF or MAADF")
    field.add_argument("--fractions", default=None,
                       help="D of metal columns, VacX/VacX2 of chalcogen columns (default D=0.05,VacX=0.05,VacX2=0.02;"
                            " D=0 with --dopant none)")
    field.add_argument("--size-angstrom", type=finite_float, default=25.0, help="side of the square field")
    field.add_argument("--rotation-deg", type=finite_float, default=17.0, help="lattice rotation")
    field.add_argument("--seed", type=int, default=0)
    field.add_argument("--config", default=None,
                       help="dataset YAML: catalog, noise ranges, multislice (default configs/dataset/paper.yaml)")
    d = field.add_argument_group("scan distortions of a real frame (physical units; default none)")
    d.add_argument("--pixel-size-angstrom", type=finite_float, default=None,
                   help="scan pixel size (default: the simulation's Nyquist step; finer is Fourier-interpolated)")
    d.add_argument("--drift-shear", type=finite_float, default=0.0, help="x drift per unit y during the frame (0.03: 3 %%)")
    d.add_argument("--row-wobble-angstrom", type=finite_float, default=0.0, help="sinusoidal row displacement amplitude")
    d.add_argument("--row-wobble-period-angstrom", type=finite_float, default=10.0, help="its period along y")
    d.add_argument("--glitches", type=int, default=0, help="number of scan-line glitches (bands of shifted rows)")
    d.add_argument("--glitch-shift-angstrom", type=finite_float, default=0.0, help="x shift of a glitch band")
    d.add_argument("--glitch-height-angstrom", type=finite_float, default=2.0, help="height of a glitch band")
    d.add_argument("--scan-skew-deg", type=finite_float, default=0.0, help="non-orthogonality of the scan axes")
    d.add_argument("--hole-radius-angstrom", type=finite_float, default=0.0, help="a vacuum hole of this radius")
    d.add_argument("--contamination-radius-angstrom", type=finite_float, default=0.0,
                   help="an amorphous-carbon blob of this radius")
    d.add_argument("--dc-offset-counts", type=finite_float, default=0.0, help="added to every pixel (detector offset)")
    d.add_argument("--pixel-miscalibration", type=finite_float, default=0.0,
                   help="the recorded pixel size is off by this fraction (0.05: 5 %% too large)")
    field.add_argument("--out", required=True, help="output directory")

    verify = sub.add_parser("verify", help="read every shard, checksum, marker and the config hash of a store; "
                            "--repair reruns exactly the tasks that own bad shards")
    verify.add_argument("store", help="zarr store written by `python -m simulate run`")
    verify.add_argument("--repair", action="store_true",
                        help="rerun the tasks owning bad shards (resume rules), so the store ends byte-identical")
    verify.add_argument("--cluster", choices=("local", "slurm"), default="local", help="for --repair")
    verify.add_argument("--cluster-config", default=None, help="cluster YAML, for --repair")
    verify.add_argument("--workers", type=int, default=None, help="Dask workers, for --repair")

    four = sub.add_parser("fourdstem", help="4D-STEM: pixelated-detector scans of graphene/zincblende with defects "
                          "into a zarr store (clean patterns and Poisson counts per dose)")
    four.add_argument("--config", required=True, help="4D-STEM dataset YAML (configs/dataset/fourdstem.yaml)")
    four.add_argument("--out", required=True, help="output zarr store, e.g. data/fourdstem.zarr")
    four.add_argument("--cluster", choices=("local", "slurm"), default="local")
    four.add_argument("--cluster-config", default=None)
    four.add_argument("--workers", type=int, default=None)
    four.add_argument("--resume", action="store_true", help="finish an existing store: skip tasks already done")
    planegroups = sub.add_parser("planegroups", help="images of the 17 plane groups, labelled by computation")
    planegroups.add_argument("--config", required=True, help="configs/dataset/planegroups*.yaml")
    planegroups.add_argument("--out", required=True, help="output zarr store")
    planegroups.add_argument("--cluster", choices=("local", "slurm"), default="local")
    planegroups.add_argument("--cluster-config", default=None)
    planegroups.add_argument("--workers", type=int, default=None)
    planegroups.add_argument("--resume", action="store_true", help="finish an existing store: skip tasks done")
    materials = sub.add_parser("planegroups-materials",
                               help="abTEM images of graphene, 1H-WSe2, SrTiO3 [001] with computed plane groups")
    materials.add_argument("--out", required=True, help="directory for the images (.npy + .json) and manifest.json")
    materials.add_argument("--beam-energy-kev", type=float, default=80.0)
    materials.add_argument("--detector", default="HAADF", choices=("HAADF", "MAADF"),
                           help="HAADF (default): MAADF 30-120 mrad overlaps the 31 mrad bright-field disk, drowning graphene")
    materials.add_argument("--images-per-material", type=int, default=4)
    materials.add_argument("--cell-px", type=float, default=12.0, help="sqrt(primitive cell area) in px")
    materials.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return run_command(_dispatch, argv, prog=PROG)


def _dispatch(argv: list[str]) -> int:
    args = build_parser().parse_args(with_default_subcommand(argv, "run"))
    # before any config is read or work is started (column-signals writes one file)
    check_output_args(args, {"out": "file"} if args.command == "column-signals" else None)
    if args.command == "structures":
        from .config import load
        from .structures import write_environment_cifs

        cfg = load(args.config)
        try:
            paths = write_environment_cifs(cfg, args.out)
        except OSError as err:  # a read-only or missing file system, no permission, a full disk
            from contract.errors import InputError

            raise InputError(f"--out {args.out!r}: cannot write the CIF files: {err.strerror or err}") from err
        print(f"wrote {len(paths)} CIF files under {args.out}")
    elif args.command == "fullfield":
        from .fullfield import ScanDistortion, default_fractions, parse_fractions, run_fullfield

        try:
            fractions = parse_fractions(default_fractions(args.dopant) if args.fractions is None else args.fractions)
            if args.size_angstrom <= 0:
                raise ValueError(f"--size-angstrom must be > 0, got {args.size_angstrom}")
            distortion = ScanDistortion(
                drift_shear=args.drift_shear, row_wobble_angstrom=args.row_wobble_angstrom,
                row_wobble_period_angstrom=args.row_wobble_period_angstrom, glitches=args.glitches,
                glitch_shift_angstrom=args.glitch_shift_angstrom, glitch_height_angstrom=args.glitch_height_angstrom,
                scan_skew_deg=args.scan_skew_deg, hole_radius_angstrom=args.hole_radius_angstrom,
                contamination_radius_angstrom=args.contamination_radius_angstrom,
                dc_offset_counts=args.dc_offset_counts, pixel_miscalibration=args.pixel_miscalibration)
            out = run_fullfield(host=args.host, dopant=args.dopant, beam_energy_kev=args.energy_kev,
                                detector=args.detector, fractions=fractions, size_angstrom=args.size_angstrom,
                                rotation_deg=args.rotation_deg, seed=args.seed, out_dir=args.out,
                                config_path=args.config, distortion=distortion,
                                pixel_size_angstrom=args.pixel_size_angstrom)
        except ConfigError:
            raise
        except ValueError as err:  # bad host, detector, fractions, grid: say which
            raise ConfigError(str(err)) from None
        print(f"wrote {out}/image.npy, image.json, truth.csv, truth.json")
    elif args.command == "fourdstem":
        from .fourdstem_run import simulate_fourdstem

        simulate_fourdstem(args.config, args.out, cluster=args.cluster, cluster_config=args.cluster_config,
                           n_workers=args.workers, resume=args.resume)
    elif args.command == "planegroups":
        from .planegroups import simulate_planegroups

        simulate_planegroups(args.config, args.out, cluster=args.cluster, cluster_config=args.cluster_config,
                             n_workers=args.workers, resume=args.resume)
    elif args.command == "planegroups-materials":
        from .planegroups_materials import write_materials

        manifest = write_materials(args.out, beam_energy_kev=args.beam_energy_kev, detector=args.detector,
                                   images_per_material=args.images_per_material, cell_px=args.cell_px,
                                   seed=args.seed)
        for e in manifest["images"]:
            print(f"{args.out}/{e['image']}: {e['material']}, plane group {e['plane_group']} (computed)")
    elif args.command == "column-signals":
        from .column_signals import write_table

        write_table(args.out)
    elif args.command == "check":
        from .config import config_hash, load
        from .plan import make_plan, work_units

        cfg = load(args.config)
        plan = make_plan(cfg)
        # per energy: the config's environments for a doped combo, those without a dopant site for an undoped one
        envs = "/".join(str(n) for n in sorted({len(plan.environments_of(t)) for t in plan.tasks}, reverse=True))
        runs = sum(len(u.environment_ids) for u in work_units(plan, plan.tasks, cfg.multislice.frozen_phonons))
        one_per_task = sum(len(plan.environments_of(t)) for t in plan.tasks)
        print(f"{cfg.name}: OK, {len(cfg.combos)} combos, {envs} environments, "
              f"{len(plan.tasks)} tasks, {len(plan.cases)} cases, {plan.n_rows} patches, gpts "
              f"{cfg.multislice.gpts}, hash {config_hash(cfg)[:12]}")
        print(f"{cfg.name}: {runs} multislice runs ({one_per_task - runs} fewer than one per task and environment: "
              f"the environments without a dopant site are simulated once per host and beam energy)")
    elif args.command == "verify":
        return _verify(args)
    else:
        from .run import simulate

        simulate(args.config, args.out, cluster=args.cluster, cluster_config=args.cluster_config,
                 n_workers=args.workers, resume=args.resume, keep_patches=args.keep_patches)
    return 0


def _verify(args) -> int:
    from contract.errors import CorruptDataError
    from contract.store import repair_command

    from .verify import repair_store, verify_store

    report, context = verify_store(args.store)
    if report.print_with("verify: OK, every shard decodes and matches the plan; every task is marked done"):
        return 0
    if not args.repair:
        tasks = sorted(context["tasks"])
        raise CorruptDataError(
            f"store {args.store!r}: {len(report.findings)} problem(s)"
            + (f" in {len(tasks)} task(s) {tasks}" if tasks else "")
            + (f"; repair with `{repair_command(args.store, 'patches')}` (reruns exactly those tasks)"
               if report.repairable else
               f"; it cannot be repaired in place ({next(f for f in report.findings if not f.repairable).describe()})"
               ": simulate its config into a new store"))
    after = repair_store(args.store, report, context, cluster=args.cluster, cluster_config=args.cluster_config,
                         n_workers=args.workers)
    after.check_repaired()
    print(f"verify: repaired: reran {len(context['tasks'])} task(s); the store verifies OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
