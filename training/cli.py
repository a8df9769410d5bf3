"""LightningCLI for ``python -m training fit|validate|test --config configs/train/NAME.yaml``.

Everything a run writes goes under ``run_dir``: ``csv/version_N/metrics.csv`` (+ the resolved
``config.yaml`` beside it), ``tensorboard/version_N/``, ``checkpoints/last.ckpt`` and the per-epoch
checkpoint. ``ckpt_path: last`` (the configs' default) resumes from the newest of ``checkpoints/last.ckpt``
and a Slurm pre-emption checkpoint ``hpc_ckpt_*.ckpt``, and starts fresh when there is none.

``schedule:`` (:mod:`training.schedule`) decides before anything is built whether the configs' epochs and
batch size stand (``paper``) or the run trains for an optimizer-step budget with early stopping (``steps``, small
stores); the resolved values are what the saved ``config.yaml`` shows, and ``run_dir/schedule.json`` records the
schedule and the steps actually taken.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pytorch_lightning import Callback, Trainer
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from contract.cli import check_output_path, one_line
from contract.errors import ConfigError, InputError, StemError
from contract.jsonio import json_text

from .checkpoint import check_weights, torch_load
from .data import FeatureDataModule
from .module import DefectClassifier
from .schedule import Schedule, ScheduleSettings, resolve_schedule

SCHEDULE_FILE = "schedule.json"


def data_error(err: Exception) -> str:
    """One line for a data setting or split the data module refused, naming ``data`` once."""
    text = one_line(err)
    return text if text.startswith("data.") else f"data: {text}"


def newest_checkpoint(run_dir: str | Path) -> Optional[str]:
    """Newest of ``run_dir/checkpoints/last.ckpt`` and ``run_dir/hpc_ckpt_*.ckpt`` (None if neither exists)."""
    run_dir = Path(run_dir)
    candidates = [p for p in [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")] if p.is_file()]
    if not candidates:
        return None
    return str(max(candidates, key=lambda p: p.stat().st_mtime))


def check_resume_checkpoint(path: str | Path) -> None:
    """Resume only from an intact checkpoint: ``InputError`` (exit 2) for a file that is not a Lightning
    checkpoint (a text file, an unsafe pickle, ...), ``CorruptDataError`` (exit 3) for NaN/infinite weights or
    weights that differ from their stored sha256; one line naming the file, before anything is trained."""
    resumed = torch_load(path, use="resume from a last.ckpt written by `python -m training fit`")
    if not isinstance(resumed, dict) or not isinstance(resumed.get("state_dict"), dict):
        raise InputError(f"--ckpt_path {path}: not a Lightning checkpoint (no state_dict)")
    check_weights(resumed, path)


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose ``last.ckpt`` always holds the final step, also when checkpointing every n
    steps and the run ends between two of them (Lightning's own end-of-training save skips that case)."""

    def on_train_end(self, trainer, pl_module) -> None:
        if self.save_last and trainer.global_step != self._last_global_step_saved:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class ScheduleRecord(Callback):
    """Writes ``run_dir/schedule.json`` at the end of training: the resolved schedule, the optimizer steps and
    epochs actually run, and whether early stopping ended the run (rank 0 only)."""

    def __init__(self, schedule: Schedule, run_dir: Path):
        self.schedule, self.run_dir = schedule, Path(run_dir)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0:
            return
        stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
        record = {**self.schedule.as_dict(), "description": self.schedule.describe(),
                  "steps_done": int(trainer.global_step), "epochs_done": int(trainer.current_epoch),
                  "stopped_early": bool(stopper is not None and stopper.wait_count >= stopper.patience),
                  "best_val_loss": None if stopper is None else float(stopper.best_score)}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / SCHEDULE_FILE).write_text(json_text(record, indent=1))


class TrainCLI(LightningCLI):
    """LightningCLI with a run directory, CSV + TensorBoard loggers and a save_last checkpoint."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--run_dir", type=str, default="runs/train", help="directory for logs and checkpoints")
        parser.add_argument(
            "--checkpoint_every_n_steps", type=Optional[int], default=None,
            help="also checkpoint every n optimizer steps (default: at the end of each epoch only)",
        )
        parser.link_arguments("run_dir", "trainer.default_root_dir")

    def _parse_ckpt_path(self) -> None:
        """LightningCLI reads ``--ckpt_path``'s hyperparameters first: check the file before it does."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path != "last":
            check_resume_checkpoint(ckpt_path)
        super()._parse_ckpt_path()

    def before_instantiate_classes(self) -> None:
        """``--run_dir`` must be a directory that can be written, checked before the store is read or anything is
        created (a file, a path under a file, a read-only folder: exit 2)."""
        check_output_path(self._get(self.config, "run_dir"), "--run_dir")

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
            raise ConfigError(data_error(err)) from err

    before_fit = before_validate = before_test = before_predict = _check_data

    def fit(self, model, datamodule=None, ckpt_path: Optional[str] = None, **kwargs) -> None:
        if ckpt_path == "last":
            ckpt_path = newest_checkpoint(self._get(self.config, "run_dir"))
        if ckpt_path is not None:
            check_resume_checkpoint(ckpt_path)
        self.trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, **kwargs)


class ClassifierCLI(TrainCLI):
    """TrainCLI for the six defect classifiers: adds ``schedule:`` (:mod:`training.schedule`), resolved from the
    store's size before anything is built, with early stopping and ``run_dir/schedule.json`` for step runs."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_class_arguments(ScheduleSettings, "schedule", instantiate=False)

    def before_instantiate_classes(self) -> None:
        """Resolve the schedule from the store's size and write it into the trainer and data settings."""
        super().before_instantiate_classes()
        self.schedule = None
        if self.subcommand != "fit":
            return
        cfg = self.config[self.subcommand]
        if cfg.trainer.max_epochs is None or cfg.trainer.max_epochs < 1:
            return  # no epoch count to judge (trainer.max_steps or time decides): the trainer settings stand
        try:
            data_args = {k: v for k, v in vars(cfg.data).items() if not k.startswith("_")}
            _, train, _ = FeatureDataModule(**data_args).split_rows()
        except StemError:
            raise
        except (ValueError, TypeError) as err:  # a bad data setting or split: one line, before anything is created
            raise ConfigError(data_error(err)) from err
        try:
            settings = ScheduleSettings(**vars(cfg.schedule))
            schedule = resolve_schedule(settings, len(train), int(cfg.data.batch_size), int(cfg.trainer.max_epochs))
        except (ValueError, TypeError) as err:
            raise ConfigError(f"schedule: {one_line(err)}") from err
        if schedule.kind == "steps":
            cfg.data.batch_size = schedule.batch_size
            cfg.data.validation_fraction = schedule.validation_fraction
            cfg.trainer.max_epochs = schedule.max_epochs
            cfg.trainer.max_steps = schedule.max_steps
            cfg.trainer.check_val_every_n_epoch = None  # validate every n steps, across epoch boundaries
            cfg.trainer.val_check_interval = schedule.check_every_n_steps
            if cfg.checkpoint_every_n_steps is None:  # not every (tiny) epoch
                cfg.checkpoint_every_n_steps = schedule.check_every_n_steps
        print(f"schedule: {schedule.describe()} ({schedule.reason})", flush=True)
        self.schedule = schedule

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Trainer:
        callbacks = list(callbacks)
        if self.schedule is not None:
            if self.schedule.patience_checks is not None:
                callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=self.schedule.patience_checks,
                                               min_delta=self.schedule.min_delta))
            callbacks.append(ScheduleRecord(self.schedule, Path(self._get(self.config, "run_dir"))))
        return super()._instantiate_trainer(config, callbacks)


def run_cli(args: list[str] | None = None, run: bool = True) -> ClassifierCLI:
    """Run the training CLI on ``args`` (default: sys.argv)."""
    return ClassifierCLI(
        DefectClassifier,
        FeatureDataModule,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"parser_mode": "yaml", "exit_on_error": False},  # errors raise: one line, exit 2
    )
