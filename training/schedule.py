"""How long a model trains: the paper's epochs on paper-scale stores, an optimizer-step budget on small ones.

Pure functions (no I/O); ``training.cli`` applies the result to the trainer and data settings.

* ``paper``: the configs' epochs and batch size as they are (section 8.4: attention 10 epochs at batch
  4 096 / 204 800 / 409 600, MLPs 20 epochs at 4 096), validation on the test split for monitoring only.
* ``steps``: for stores on which those epochs mean few optimizer updates (the 24 000-patch demo: attn-400k's
  batch is 21x its training set, so 10 epochs are 10 steps). Train for at most ``steps_per_10_epochs``
  optimizer steps per 10 of the config's epochs: the paper's least-updated model, attn-400k, makes
  ~44 M rows / 409 600 per batch x 10 epochs ≈ 1 070 steps and reaches 98.4 %, so the attention models get
  1 070 and the MLPs, which the paper trains twice as long (20 epochs), 2 140. The batch is capped at the
  training rows, and training stops earlier when the loss on a validation split carved from the training rows
  has not improved by ``min_delta`` nats for ``patience_checks`` checks (one every ``check_every_n_steps``
  steps). The test split is never used for stopping.
* ``auto`` (default): ``paper`` when the paper's epochs and batch make at least ``min_steps`` optimizer steps
  on this store (counted on one device), else ``steps``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

KINDS = ("auto", "paper", "steps")
PAPER_ATTN_400K_STEPS = 1070
"""Optimizer steps of the paper's attn-400k: ~44 M training rows / 409 600 per batch x 10 epochs ≈ 1 070."""


@dataclass(frozen=True)
class ScheduleSettings:
    """The ``schedule:`` block of a training config (see the module docstring)."""

    kind: str = "auto"
    min_steps: int = 1000
    steps_per_10_epochs: int = PAPER_ATTN_400K_STEPS
    validation_fraction: float = 0.1
    check_every_n_steps: int = 50
    patience_checks: int = 4
    min_delta: float = 1e-3

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"schedule.kind must be one of {KINDS}, got {self.kind!r}")
        for name in ("min_steps", "steps_per_10_epochs", "check_every_n_steps", "patience_checks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"schedule.{name} must be a positive integer, got {value!r}")
        if not 0.0 < self.validation_fraction < 0.5:
            raise ValueError(f"schedule.validation_fraction must be in (0, 0.5), got {self.validation_fraction}")
        if self.min_delta < 0:
            raise ValueError(f"schedule.min_delta must be >= 0, got {self.min_delta}")


@dataclass(frozen=True)
class Schedule:
    """A resolved schedule: what the trainer and the data module are told."""

    kind: str                          # "paper" or "steps"
    batch_size: int                    # per device
    max_epochs: int                    # -1: no epoch limit (steps)
    max_steps: int                     # -1: no step limit (paper)
    validation_fraction: float         # of the training rows held out for early stopping (0: validate on test)
    check_every_n_steps: int | None    # steps between validation checks (None: once per epoch)
    patience_checks: int | None        # early-stopping patience in checks (None: no early stopping)
    min_delta: float
    paper_steps: int                   # optimizer steps the paper's epochs and batch make on this store
    n_train_rows: int
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line for logs and tables, e.g. ``steps: <= 1070 steps x batch 4096, early stop (val loss)``."""
        if self.kind == "paper":
            return f"paper: {self.max_epochs} epochs x batch {self.batch_size}"
        return (f"steps: <= {self.max_steps} steps x batch {self.batch_size}, early stop after "
                f"{self.patience_checks} x {self.check_every_n_steps} steps without val-loss gain")


def paper_steps(n_train_rows: int, batch_size: int, max_epochs: int) -> int:
    """Optimizer steps of ``max_epochs`` epochs at ``batch_size`` over ``n_train_rows`` (last batch kept)."""
    return math.ceil(n_train_rows / batch_size) * max_epochs


def resolve_schedule(settings: ScheduleSettings, n_train_rows: int, batch_size: int, max_epochs: int) -> Schedule:
    """The schedule for a store with ``n_train_rows`` training rows (before any validation split) and the
    config's paper ``batch_size`` and ``max_epochs``."""
    if n_train_rows < 2:
        raise ValueError(f"need at least 2 training rows to schedule training, got {n_train_rows}")
    if batch_size < 1 or max_epochs < 1:
        raise ValueError(f"batch_size and max_epochs must be >= 1, got {batch_size} and {max_epochs}")
    planned = paper_steps(n_train_rows, batch_size, max_epochs)
    kind = settings.kind
    if kind == "auto":
        kind = "paper" if planned >= settings.min_steps else "steps"
        why = (f"the paper's {max_epochs} epochs x batch {batch_size} make {planned} optimizer steps on "
               f"{n_train_rows} training rows ({'>=' if kind == 'paper' else '<'} schedule.min_steps {settings.min_steps})")
    else:
        why = f"schedule.kind: {kind}"
    if kind == "paper":
        return Schedule("paper", batch_size, max_epochs, -1, 0.0, None, None, settings.min_delta, planned,
                        n_train_rows, why)
    n_fit = n_train_rows - max(1, round(settings.validation_fraction * n_train_rows))
    max_steps = max(1, round(settings.steps_per_10_epochs * max_epochs / 10))
    return Schedule("steps", min(batch_size, n_fit), -1, max_steps, settings.validation_fraction,
                    settings.check_every_n_steps, settings.patience_checks, settings.min_delta, planned,
                    n_train_rows, why)
