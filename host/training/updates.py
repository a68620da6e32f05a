"""Update rules: how a step direction (a gradient, or a natural-gradient estimate) moves the
parameters. Every hyperparameter is a number or a schedule (host/training/schedules.py) of the rule's own
step count (0, 1, 2, ...).

- :class:`SGD`: v <- mu v + d, theta <- theta - eta v (PyTorch's convention, no dampening).
- :class:`Adam`: m <- b1 m + (1 - b1) d, v <- b2 v + (1 - b2) d^2, theta <- theta - eta m_hat /
  (sqrt(v_hat) + eps), with the bias corrections 1 - prod(b1) and 1 - prod(b2) over the steps so
  far (1 - b^t for constant b). With b1 = b2 = 0 (TNGD-Adam as the paper ran it, arXiv
  2405.13817, Fig. 5b) the step is exactly -eta d / (|d| + eps): sign descent on d.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from spusim.training.schedules import Schedule, value


class UpdateRule(Protocol):
    steps: int  # updates applied so far

    def __call__(self, params: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """The new parameters (N,) after one update along ``direction`` (N,)."""
        ...


class SGD:
    """Gradient descent with heavy-ball momentum; lr eta, momentum mu (0: plain SGD)."""

    def __init__(self, lr: Schedule, momentum: Schedule = 0.0) -> None:
        self.lr, self.momentum = lr, momentum
        self.steps = 0
        self._velocity: np.ndarray | None = None

    def __call__(self, params: np.ndarray, direction: np.ndarray) -> np.ndarray:
        mu = value(self.momentum, self.steps)
        if mu and self._velocity is not None:
            self._velocity = mu * self._velocity + direction
        else:
            self._velocity = direction.copy()
        new = params - value(self.lr, self.steps) * self._velocity
        self.steps += 1
        return new


class Adam:
    """Adam (Kingma and Ba) with bias correction; lr eta, betas b1, b2, eps."""

    def __init__(self, lr: Schedule, beta1: Schedule = 0.9, beta2: Schedule = 0.999,
                 eps: Schedule = 1e-8) -> None:
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.steps = 0
        self._m: np.ndarray | None = None
        self._v: np.ndarray | None = None
        self._decay1 = self._decay2 = 1.0  # products of the betas so far

    def __call__(self, params: np.ndarray, direction: np.ndarray) -> np.ndarray:
        b1, b2 = value(self.beta1, self.steps), value(self.beta2, self.steps)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam's betas must be in [0, 1), got {b1}, {b2}")
        if self._m is None or self._v is None:
            self._m, self._v = np.zeros_like(direction), np.zeros_like(direction)
        self._m = b1 * self._m + (1 - b1) * direction
        self._v = b2 * self._v + (1 - b2) * direction**2
        self._decay1 *= b1
        self._decay2 *= b2
        m_hat = self._m / (1 - self._decay1)
        v_hat = self._v / (1 - self._decay2)
        step = value(self.lr, self.steps) * m_hat / (np.sqrt(v_hat) + value(self.eps, self.steps))
        self.steps += 1
        return params - step
