"""``python -m training phase SUBCOMMAND``: the plane-group phase classifier.

    fit|validate|test   LightningCLI, as for the defect models: --config configs/train/planegroups/base.yaml
                        --config configs/train/planegroups/{image,symmetry}.yaml --data.store STORE.zarr
                        [--data.test_fold K --data.n_folds N --seed_everything S ...]; resumes from
                        run_dir/checkpoints/last.ckpt
    demo                both arms on one split (test fold 0, seed 0): checkpoints in OUT/image and OUT/symmetry,
                        their test predictions and the comparison table (what `make planegroups` runs)
    kfold               both arms x seeds x folds (grouped by structure), resumable, then the comparison table
    evaluate            the comparison table and figures from a demo or kfold directory

Slurm: ``TRAIN_COMMAND="phase fit" sbatch slurm/train.sbatch configs/train/planegroups/symmetry.yaml STORE``.
"""
from __future__ import annotations

import argparse
import sys

from contract.cli import check_output_args

from .phase_data import ARMS
# PhaseCLI and arm_config_args are defined in phase_lightning (phase_kfold uses them too); training.phase_cli.* still works
from .phase_lightning import CONFIG_DIR, PhaseCLI, arm_config_args, run_phase_cli  # noqa: F401

LIGHTNING = ("fit", "validate", "test")


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING:
        from argparse import ArgumentError

        from contract.cli import one_line
        from contract.errors import InputError

        try:
            run_phase_cli([command, *rest])
        except ArgumentError as err:  # jsonargparse: a bad option, config key, value or file
            raise InputError(f"{one_line(err)} (`python -m training phase {command} --help` lists the options)") from err
        return 0
    from .phase_evaluate import write_comparison
    from .phase_kfold import run_demo, run_kfold

    p = argparse.ArgumentParser(prog=f"python -m training phase {command}")
    if command in ("demo", "kfold"):
        p.add_argument("--store", required=True, help="plane-group store with maps")
        p.add_argument("--out", default="runs/planegroups" + ("/kfold" if command == "kfold" else ""))
        p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
        p.add_argument("--configs", default=str(CONFIG_DIR), help="directory of base.yaml, image.yaml, symmetry.yaml")
        p.add_argument("--max-epochs", type=int, default=None, help="override the configs' epochs")
        p.add_argument("--accelerator", default="cpu")
        if command == "kfold":
            p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
            p.add_argument("--n-folds", type=int, default=3)
        a = p.parse_args(rest)
        check_output_args(a)  # before any arm is trained
        extra = [] if a.max_epochs is None else ["--trainer.max_epochs", str(a.max_epochs)]
        if command == "demo":
            run_demo(a.store, a.out, a.arms, a.configs, a.accelerator, extra)
        else:
            run_kfold(a.store, a.out, a.arms, a.seeds, a.n_folds, a.configs, a.accelerator, extra)
        text, _ = write_comparison(a.out)
        print(text)
        return 0
    if command == "evaluate":
        p.add_argument("--runs", default="runs/planegroups", help="directory of a demo or kfold run")
        p.add_argument("--out", default=None, help="where to write the table and figures (default: --runs)")
        a = p.parse_args(rest)
        check_output_args(a)
        text, _ = write_comparison(a.runs, a.out)
        print(text)
        return 0
    from contract.errors import InputError

    print(__doc__, file=sys.stderr)
    raise InputError(f"unknown phase subcommand {command!r}; use fit, validate, test, demo, kfold or evaluate")
