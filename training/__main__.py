"""``python -m training SUBCOMMAND ...``

fit|validate|test        LightningCLI (``--config configs/train/NAME.yaml --data.store STORE.zarr``)
evaluate                 metrics.json + figures for one checkpoint
demo                     train and evaluate the six models on a store (CPU)
demo-table               the paper's Table 1 layout from a demo run directory
submit                   a training run as a Slurm job through submitit
"""
from __future__ import annotations

import sys

LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def main(argv: list[str] | None = None) -> None:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else "--help"
    if command in LIGHTNING_SUBCOMMANDS or command in ("-h", "--help", "--print_config"):
        from .cli import run_cli

        run_cli(None if from_command_line else argv)
    elif command == "evaluate":
        from .evaluate import main as evaluate_main

        evaluate_main(argv[1:])
    elif command == "demo":
        from .demo import main as demo_main

        demo_main(argv[1:])
    elif command == "demo-table":
        from .demo import table_main

        table_main(argv[1:])
    elif command == "submit":
        from .submit import main as submit_main

        submit_main(argv[1:])
    else:
        known = LIGHTNING_SUBCOMMANDS + ("evaluate", "demo", "demo-table", "submit")
        sys.exit(f"unknown subcommand {command!r}; use one of {known}")


if __name__ == "__main__":
    main()
