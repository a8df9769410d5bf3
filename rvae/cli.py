"""LightningCLI of the rVAE: ``python -m rvae fit|validate|predict --config configs/rvae/NAME.yaml
--data.store STORE --data.array ARRAY``.

The same runner as the classifiers (``training.cli.TrainCLI``): everything goes under ``run_dir`` (CSV and
TensorBoard logs with the resolved config, ``checkpoints/last.ckpt``), ``ckpt_path: last`` resumes from the
newest of ``last.ckpt`` and a Slurm pre-emption checkpoint, and checkpoints load with ``weights_only=True``.
"""
from __future__ import annotations

import warnings

from contract.errors import ConfigError, StemError
from training.cli import TrainCLI, newest_checkpoint

from .data import ZarrItemsDataModule, open_items
from .module import RVAEModule

__all__ = ["newest_checkpoint", "run_cli"]


class RVAECLI(TrainCLI):
    """The classifiers' runner with the rVAE's own data check before anything is created under run_dir."""

    def _check_data(self) -> None:
        try:
            open_items(self.datamodule.store, self.datamodule.array)
        except StemError as err:
            raise ConfigError(f"data: {err}") from err

    before_fit = before_validate = before_test = before_predict = _check_data


def run_cli(args: list[str] | None = None, run: bool = True) -> TrainCLI:
    """Run the rVAE training CLI on ``args`` (default: sys.argv)."""
    # the stream's length is exact: it is only read by one process (num_workers=0)
    warnings.filterwarnings("ignore", message=".*IterableDataset. has .__len__. defined.*")
    warnings.filterwarnings("ignore", message="Total length of .list. across ranks is zero")  # val_shards: 0
    return RVAECLI(RVAEModule, ZarrItemsDataModule, args=args, run=run, save_config_kwargs={"overwrite": True},
                   parser_kwargs={"parser_mode": "yaml", "exit_on_error": False})  # errors raise: one line, exit 2
