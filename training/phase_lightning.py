"""The phase classifier's LightningCLI (``python -m training phase fit|validate|test``) and its configs: what the
command line (``training.phase_cli``) and the demo and k-fold runs (``training.phase_kfold``) both start."""
from __future__ import annotations

from pathlib import Path

from contract.errors import InputError

from .cli import TrainCLI
from .phase_data import ARMS, PlaneGroupDataModule
from .phase_model import PhaseClassifier

CONFIG_DIR = Path("configs/train/planegroups")


class PhaseCLI(TrainCLI):
    """TrainCLI (run_dir, loggers, last.ckpt, resume) with model.arm linked to data.arm."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.link_arguments("data.arm", "model.arm")


def run_phase_cli(args: list[str] | None = None, run: bool = True) -> PhaseCLI:
    return PhaseCLI(PhaseClassifier, PlaneGroupDataModule, args=args, run=run,
                    save_config_kwargs={"overwrite": True},
                    parser_kwargs={"parser_mode": "yaml", "exit_on_error": False})  # errors raise: one line, exit 2


def arm_config_args(arm: str, config_dir: str | Path = CONFIG_DIR) -> list[str]:
    """``--config base.yaml --config ARM.yaml``; ``InputError`` if a file is missing."""
    if arm not in ARMS:
        raise InputError(f"unknown arm {arm!r}; use {', '.join(ARMS)}")
    paths = [Path(config_dir) / "base.yaml", Path(config_dir) / f"{arm}.yaml"]
    for p in paths:
        if not p.is_file():
            raise InputError(f"training config {p} not found (run from the repository root or pass --configs DIR)")
    return [a for p in paths for a in ("--config", str(p))]
