"""Command line of the training stage (``python -m training --help`` lists the subcommands).

    fit|validate|test|predict  LightningCLI: --config configs/train/base.yaml --config configs/train/NAME.yaml
                               --data.store STORE.zarr [--trainer.* / --model.* / --data.* overrides]
    evaluate                   metrics.json + figures for one checkpoint; --runs DIR: plane-group arm comparison
    demo                       train and evaluate the six models on a store (CPU)
    demo-table                 the paper's Table 1 layout from a demo run directory
    submit                     a training run as a Slurm job through submitit
    phase                      the plane-group phase classifier (fit, demo, kfold, evaluate)

Failures: one line on stderr and the exit codes of ``contract.errors`` (``--debug`` for the traceback).
"""
from __future__ import annotations

import sys
import warnings

from contract.cli import run_command

PROG = "python -m training"
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
SUBCOMMANDS = {
    "fit": "train a model (LightningCLI; resumes from run_dir/checkpoints/last.ckpt)",
    "validate": "validate a checkpoint (LightningCLI)",
    "test": "test a checkpoint (LightningCLI)",
    "predict": "predict with a checkpoint (LightningCLI)",
    "evaluate": "metrics.json and figures for one checkpoint (--runs DIR: the phase arms' comparison)",
    "demo": "train and evaluate the six models on a store, then print Table 1",
    "demo-table": "Table 1 from a demo run directory",
    "submit": "submit a training run to Slurm through submitit",
    "phase": "plane-group phase classifier: fit, demo, kfold, evaluate (python -m training phase --help)",
}


def usage() -> str:
    lines = [f"usage: {PROG} SUBCOMMAND [options]   ({PROG} SUBCOMMAND --help for its options)", "",
             "Train and evaluate the defect classifiers.", "", "subcommands:"]
    lines += [f"  {name:<11} {text}" for name, text in SUBCOMMANDS.items()]
    lines += ["", "  --debug     print the traceback of a failure (otherwise one line on stderr)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    return run_command(_dispatch, argv, prog=PROG)


def _dispatch(argv: list[str]) -> int:
    from argparse import ArgumentError

    from contract.cli import one_line
    from contract.errors import InputError

    if not argv:
        print(usage(), file=sys.stderr)
        raise InputError(f"a subcommand is required: one of {', '.join(SUBCOMMANDS)}")
    command, rest = argv[0], argv[1:]
    with warnings.catch_warnings():  # run_cli(argv) with argv = sys.argv[1:]: LightningCLI's warning about it is noise
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        if command in ("-h", "--help"):
            print(usage())
        elif command in LIGHTNING_SUBCOMMANDS:
            from contract.yamlsafe import check_config_args

            check_config_args(rest)  # jsonargparse would expand an alias bomb itself: the strict reader first
            from .cli import run_cli

            try:
                run_cli(argv)
            except ArgumentError as err:  # jsonargparse: a bad option, config key, value or file
                raise InputError(f"{one_line(err)} (`{PROG} {command} --help` lists the options)") from err
        elif command == "evaluate" and "--runs" in rest:  # a phase-classifier run directory: the arm comparison
            from .phase_cli import main as phase_main

            return phase_main(["evaluate", *rest])
        elif command == "phase":
            from .phase_cli import main as phase_main

            return phase_main(rest)
        elif command == "evaluate":
            from .evaluate import main as evaluate_main

            evaluate_main(rest)
        elif command == "demo":
            from .demo import main as demo_main

            demo_main(rest)
        elif command == "demo-table":
            from .demo import table_main

            try:
                table_main(rest)
            except FileNotFoundError as err:  # no demo run under --runs
                raise InputError(one_line(err)) from err
        elif command == "submit":
            from .submit import main as submit_main

            submit_main(rest)
        else:
            print(usage(), file=sys.stderr)
            raise InputError(f"unknown subcommand {command!r}; use one of {', '.join(SUBCOMMANDS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
