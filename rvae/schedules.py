"""β and capacity schedules of the KL term (pure functions of the optimizer step).

loss = reconstruction + β(step) · KL                      (capacity_end = 0)
loss = reconstruction + β(step) · |KL - C(step)|          (capacity: Burgess et al. 2018, in nats per item)

β ramps linearly from ``beta_start`` to ``beta_end`` over ``beta_warmup_steps``; C from ``capacity_start`` to
``capacity_end`` over ``capacity_steps``.
"""
from __future__ import annotations


def linear_ramp(step: int, start: float, end: float, steps: int) -> float:
    """``start`` at step 0, ``end`` from step ``steps`` on, linear in between (``steps`` <= 0: ``end``)."""
    if steps <= 0 or step >= steps:
        return float(end)
    return float(start + (end - start) * max(step, 0) / steps)


def check_schedule(beta_start: float, beta_end: float, beta_warmup_steps: int, capacity_start: float,
                   capacity_end: float, capacity_steps: int) -> None:
    """``ValueError`` naming the field when a schedule value is out of range."""
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end), ("capacity_start", capacity_start),
                        ("capacity_end", capacity_end)):
        if not value >= 0:
            raise ValueError(f"model.{name} must be >= 0, got {value!r}")
    for name, value in (("beta_warmup_steps", beta_warmup_steps), ("capacity_steps", capacity_steps)):
        if int(value) != value or value < 0:
            raise ValueError(f"model.{name} must be an integer >= 0, got {value!r}")
