"""Hyperparameters that are numbers or schedules: a value, or a callable of the step.

Every optimizer hyperparameter in host/ (learning rate, momentum, Adam's betas, damping, the
analog time, the delay, CG iterations) accepts either, as second-order optimizer libraries do
(kfac-pytorch's KFACPreconditioner takes callables of the step for each of them):

    lr = 0.01                                  # constant
    lr = lambda step: 0.01 * 0.99**step        # step = 0, 1, 2, ... (this optimizer's steps)
    lr = warmup(0.01, steps=10)                # helpers below

A schedule is evaluated once per step, before the step's work.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Schedule = float | int | Callable[[int], float]


def value(schedule: Schedule, step: int) -> float:
    """The hyperparameter's value at ``step`` (0-based): the number itself, or the callable's
    value; refuses non-finite values."""
    result = float(schedule(step)) if callable(schedule) else float(schedule)
    if not math.isfinite(result):
        raise ValueError(f"schedule gave {result} at step {step}")
    return result


def warmup(peak: float, steps: int) -> Callable[[int], float]:
    """Linear ramp from peak/steps at step 0 to ``peak`` at step steps-1, then constant."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return lambda step: peak * min(1.0, (step + 1) / steps)


def exponential_decay(initial: float, rate: float) -> Callable[[int], float]:
    """initial * rate**step."""
    return lambda step: initial * rate**step
