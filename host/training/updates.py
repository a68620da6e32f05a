"""Update rules: how a step direction d (a gradient, or a natural-gradient estimate) moves the
parameters, per parameter group and in place, with their state in the optimizer's
``state[p]`` (so ``state_dict`` / ``load_state_dict`` carry it). Every hyperparameter is a
number or a schedule (host/training/schedules.py) of the optimizer's step count (0, 1, 2, ...).

- :class:`SGD`: v <- mu v + d, theta <- theta - eta v (PyTorch's convention, no dampening).
- :class:`Adam`: m <- b1 m + (1 - b1) d, v <- b2 v + (1 - b2) d^2, theta <- theta - eta m_hat /
  (sqrt(v_hat) + eps), with the bias corrections 1 - prod(b1) and 1 - prod(b2) over the steps so
  far (1 - b^t for constant b). With b1 = b2 = 0 (TNGD-Adam as the paper ran it, arXiv
  2405.13817, Fig. 5b) the step is exactly -eta d / (|d| + eps): sign descent on d.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from spusim.training.schedules import Schedule, value


@dataclass(frozen=True)
class SGD:
    """Gradient descent with heavy-ball momentum; lr eta, momentum mu (0: plain SGD)."""

    lr: Schedule = 0.01
    momentum: Schedule = 0.0
    name = "sgd"

    def defaults(self) -> dict[str, Any]:
        """The param-group hyperparameters of this rule."""
        return {"lr": self.lr, "momentum": self.momentum}

    @staticmethod
    def apply(p: torch.Tensor, d: torch.Tensor, state: dict[str, Any], group: dict[str, Any],
              step: int) -> None:
        """Move ``p`` along ``d`` (shaped like p) in place."""
        mu = value(group["momentum"], step)
        velocity = state.get("momentum_buffer")
        velocity = d.clone() if not mu or velocity is None else mu * velocity + d
        state["momentum_buffer"] = velocity
        p.sub_(value(group["lr"], step) * velocity)


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma and Ba) with bias correction; lr eta, betas (b1, b2), eps."""

    lr: Schedule = 1e-3
    betas: tuple[Schedule, Schedule] = (0.9, 0.999)
    eps: Schedule = 1e-8
    name = "adam"

    def defaults(self) -> dict[str, Any]:
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps}

    @staticmethod
    def apply(p: torch.Tensor, d: torch.Tensor, state: dict[str, Any], group: dict[str, Any],
              step: int) -> None:
        b1, b2 = (value(beta, step) for beta in group["betas"])
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam's betas must be in [0, 1), got {b1}, {b2}")
        if "exp_avg" not in state:
            state.update(exp_avg=torch.zeros_like(d), exp_avg_sq=torch.zeros_like(d),
                         decay1=1.0, decay2=1.0)  # decay: the products of the betas so far
        state["exp_avg"] = b1 * state["exp_avg"] + (1 - b1) * d
        state["exp_avg_sq"] = b2 * state["exp_avg_sq"] + (1 - b2) * d * d
        state["decay1"] *= b1
        state["decay2"] *= b2
        m_hat = state["exp_avg"] / (1 - state["decay1"])
        v_hat = state["exp_avg_sq"] / (1 - state["decay2"])
        p.sub_(value(group["lr"], step) * m_hat / (v_hat.sqrt() + value(group["eps"], step)))


UpdateRule = SGD | Adam
