"""LightningCLI for ``python -m training fit|validate|test --config configs/train/NAME.yaml``.

Everything a run writes goes under ``run_dir``: ``csv/version_N/metrics.csv`` (+ the resolved
``config.yaml`` beside it), ``tensorboard/version_N/``, ``checkpoints/last.ckpt`` and the per-epoch
checkpoint. ``ckpt_path: last`` (the configs' default) resumes from the newest of ``checkpoints/last.ckpt``
and a Slurm pre-emption checkpoint ``hpc_ckpt_*.ckpt``, and starts fresh when there is none.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pytorch_lightning import Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from contract.cli import one_line
from contract.errors import ConfigError, StemError

from .data import FeatureDataModule
from .module import DefectClassifier


def newest_checkpoint(run_dir: str | Path) -> Optional[str]:
    """Newest of ``run_dir/checkpoints/last.ckpt`` and ``run_dir/hpc_ckpt_*.ckpt`` (None if neither exists)."""
    run_dir = Path(run_dir)
    candidates = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    if not candidates:
        return None
    return str(max(candidates, key=lambda p: p.stat().st_mtime))


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` always holds the final step, also when checkpointing every n
    steps and the run ends between two of them (Lightning's own end-of-training save skips that case)."""

    def on_train_end(self, trainer, pl_module) -> None:
        if self.save_last and trainer.global_step != self._last_global_step_saved:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class TrainCLI(LightningCLI):
    """LightningCLI with a run directory, CSV + TensorBoard loggers and a save_last checkpoint."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=str, default="runs/train", help="directory for logs and checkpoints")
        parser.add_argument(
            "--checkpoint_every_n_steps", type=Optional[int], default=None,
            help="also checkpoint every n optimizer steps (default: at the end of each epoch only)",
        )
        parser.link_arguments("run_dir", "trainer.default_root_dir")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Trainer:
        run_dir = Path(self._get(self.config, "run_dir"))
        if config.get("logger") in (None, True):
            config["logger"] = [CSVLogger(run_dir, name="csv"), TensorBoardLogger(run_dir, name="tensorboard")]
        callbacks = list(callbacks) + [
            RunCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="{epoch}-{step}",
                save_last=True,
                every_n_train_steps=self._get(self.config, "checkpoint_every_n_steps"),
            )
        ]
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_classes(self) -> None:
        from lightning_fabric.utilities.exceptions import MisconfigurationException

        try:
            super().instantiate_classes()
        except StemError:
            raise
        except (ValueError, TypeError, MisconfigurationException) as err:  # a value the classes refuse: one line
            raise ConfigError(one_line(err)) from err

    def _check_data(self) -> None:
        """Refuse a missing, unencoded or damaged store and an impossible split before the loggers create
        anything under run_dir (``split_rows`` reads the labels, cases and done-markers)."""
        try:
            self.datamodule.split_rows()
        except StemError:
            raise
        except ValueError as err:
            raise ConfigError(f"data: {one_line(err)}") from err

    before_fit = before_validate = before_test = before_predict = _check_data

    def fit(self, model, datamodule=None, ckpt_path: Optional[str] = None, **kwargs) -> None:
        if ckpt_path == "last":
            ckpt_path = newest_checkpoint(self._get(self.config, "run_dir"))
        self.trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **kwargs)


def run_cli(args: list[str] | None = None, run: bool = True) -> TrainCLI:
    """Run the training CLI on ``args`` (default: sys.argv)."""
    return TrainCLI(
        DefectClassifier,
        FeatureDataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "yaml", "exit_on_error": False},  # errors raise: one line, exit 2
    )
