"""Optimizers as a preconditioner followed by an update rule, behind one interface.

An :class:`Optimizer` step linearizes the model on the batch (loss, gradient g), asks its
preconditioner for a direction d, and moves the parameters with its update rule
(host/training/updates.py). The preconditioners:

- :class:`Gradient`: d = g (SGD and Adam).
- :class:`ExactNGD`: d = (C + lambda I)^-1 g by a Cholesky factorisation of the dense N x N
  matrix (TNGD paper, Eq. 7 with damping).
- :class:`NGDCG`: c iterations of conjugate gradients on (C + lambda I) d = g, each one product
  with C through a JVP and a VJP: C is never formed (section 3.1).
- :class:`NGDWoodbury`: the Woodbury identity on C = J^T H J, (C + lambda I)^-1 =
  lambda^-1 I - lambda^-2 J^T (I + lambda^-1 H J J^T)^-1 H J: O(m^2 N + m^3) (Eqs. 10-12).
- host/training/tngd.py's ThermodynamicNGD: the SPU's estimate of (C + lambda I)^-1 g.

C is the GGN or the empirical Fisher (host/training/curvature.py). Hyperparameters are numbers or
schedules of the optimizer's step (host/training/schedules.py). A step returns a :class:`StepReport`
with the host's time split into digital work and waiting for a device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.linalg

from spusim.training import curvature
from spusim.training.models import Linearization, Model
from spusim.training.schedules import Schedule, value
from spusim.training.updates import SGD, Adam, UpdateRule


@dataclass(frozen=True)
class Direction:
    """What a preconditioner returns: the direction d (N,), scalar diagnostics, and for a
    device the report of its calls (host/training/tngd.py's DeviceStep) and the host seconds spent
    waiting for them (not digital work)."""

    vector: np.ndarray
    info: dict[str, float] = field(default_factory=dict)
    device: Any = None
    device_seconds: float = 0.0


class Preconditioner(Protocol):
    def __call__(self, lin: Linearization, step: int) -> Direction: ...


@dataclass(frozen=True)
class StepReport:
    """One optimizer step. loss: the batch loss before the update; grad_norm, direction_norm:
    Euclidean norms; direction (N,): what the update rule was given; host_seconds: the step's
    wall time on the host; digital_seconds: of it, the host's own compute (the rest waited for
    a device); device: the device's report (None for digital optimizers)."""

    step: int
    loss: float
    grad_norm: float
    direction_norm: float
    direction: np.ndarray
    host_seconds: float
    digital_seconds: float
    info: dict[str, float]
    device: Any = None


class Optimizer:
    """A named preconditioner plus update rule; ``step(model, batch)`` trains one iteration."""

    def __init__(self, name: str, preconditioner: Preconditioner, update: UpdateRule) -> None:
        self.name, self.preconditioner, self.update = name, preconditioner, update
        self.steps = 0

    def step(self, model: Model, batch: Any) -> StepReport:
        started = time.perf_counter()
        lin = model.linearize(batch)
        direction = self.preconditioner(lin, self.steps)
        model.params = self.update(model.params, direction.vector)
        host_seconds = time.perf_counter() - started
        report = StepReport(self.steps, lin.loss, float(np.linalg.norm(lin.grad)),
                            float(np.linalg.norm(direction.vector)), direction.vector,
                            host_seconds, host_seconds - direction.device_seconds,
                            direction.info, direction.device)
        self.steps += 1
        return report


class Gradient:
    """d = g: the plain gradient, for SGD and Adam."""

    def __call__(self, lin: Linearization, step: int) -> Direction:
        return Direction(lin.grad)


class ExactNGD:
    """d = (C + lambda I)^-1 g exactly: Cholesky of the dense N x N matrix."""

    def __init__(self, damping: Schedule, curvature: str = "ggn") -> None:
        self.damping, self.curvature = damping, curvature

    def __call__(self, lin: Linearization, step: int) -> Direction:
        C = curvature.factors(lin, self.curvature).dense()
        C[np.diag_indices_from(C)] += value(self.damping, step)
        return Direction(scipy.linalg.cho_solve(scipy.linalg.cho_factor(C), lin.grad))


def conjugate_gradient(matvec: Callable[[np.ndarray], np.ndarray], b: np.ndarray,
                       iterations: int, x0: np.ndarray | None = None,
                       tol: float = 0.0) -> tuple[np.ndarray, list[float]]:
    """x ~ A^-1 b for symmetric positive definite A given as ``matvec``: at most
    ``iterations`` CG iterations (one product each) from ``x0`` (default 0), stopping early when
    ||r|| <= tol ||b||, r = 0 or p^T A p <= 0. Returns x and the residual norms ||b - A x||
    after each iteration (the recursive residual: the true one in exact arithmetic)."""
    x = np.zeros_like(b) if x0 is None else x0.astype(float, copy=True)
    r = b - matvec(x) if x0 is not None else b.copy()
    p, rr = r.copy(), float(r @ r)
    threshold = (tol * np.linalg.norm(b)) ** 2
    residuals: list[float] = []
    for _ in range(iterations):
        if rr == 0.0 or rr <= threshold:
            break
        Ap = matvec(p)
        curvature_along_p = float(p @ Ap)
        if curvature_along_p <= 0.0:  # converged to underflow (or A is not positive definite)
            break
        alpha = rr / curvature_along_p
        x += alpha * p
        r -= alpha * Ap
        rr, rr_old = float(r @ r), rr
        residuals.append(np.sqrt(rr))
        p = r + (rr / rr_old) * p
    return x, residuals


class NGDCG:
    """d ~ (C + lambda I)^-1 g by ``iterations`` CG iterations of curvature-vector products
    (C never formed), from 0 or, with ``warm_start``, from the previous step's d."""

    def __init__(self, damping: Schedule, iterations: Schedule = 10, curvature: str = "ggn",
                 warm_start: bool = False) -> None:
        self.damping, self.iterations, self.curvature = damping, iterations, curvature
        self.warm_start = warm_start
        self._previous: np.ndarray | None = None

    def __call__(self, lin: Linearization, step: int) -> Direction:
        product, lam = curvature.matvec(lin, self.curvature), value(self.damping, step)
        x0 = self._previous if self.warm_start else None
        d, residuals = conjugate_gradient(lambda v: product(v) + lam * v, lin.grad,
                                          round(value(self.iterations, step)), x0)
        self._previous = d
        relative = residuals[-1] / np.linalg.norm(lin.grad) if residuals else 0.0
        return Direction(d, {"cg_iterations": len(residuals), "cg_residual": float(relative)})


class NGDWoodbury:
    """d = (C + lambda I)^-1 g through the Woodbury identity on the factors J (m, N), H."""

    def __init__(self, damping: Schedule, curvature: str = "ggn") -> None:
        self.damping, self.curvature = damping, curvature

    def __call__(self, lin: Linearization, step: int) -> Direction:
        f = curvature.factors(lin, self.curvature)
        lam, g = value(self.damping, step), lin.grad
        V = f.H @ f.J  # (m, N)
        core = np.eye(len(f.H)) + (V @ f.J.T) / lam  # I + V U / lambda, U = J^T
        w = np.linalg.solve(core, V @ g)
        return Direction(g / lam - (f.J.T @ w) / lam**2)


def sgd(lr: Schedule, momentum: Schedule = 0.0) -> Optimizer:
    return Optimizer("sgd", Gradient(), SGD(lr, momentum))


def adam(lr: Schedule, beta1: Schedule = 0.9, beta2: Schedule = 0.999,
         eps: Schedule = 1e-8) -> Optimizer:
    return Optimizer("adam", Gradient(), Adam(lr, beta1, beta2, eps))


def ngd(lr: Schedule, damping: Schedule, momentum: Schedule = 0.0,
        curvature: str = "ggn") -> Optimizer:
    return Optimizer("ngd", ExactNGD(damping, curvature), SGD(lr, momentum))


def ngd_cg(lr: Schedule, damping: Schedule, iterations: Schedule = 10,
           momentum: Schedule = 0.0, curvature: str = "ggn",
           warm_start: bool = False) -> Optimizer:
    return Optimizer("ngd-cg", NGDCG(damping, iterations, curvature, warm_start),
                     SGD(lr, momentum))


def ngd_woodbury(lr: Schedule, damping: Schedule, momentum: Schedule = 0.0,
                 curvature: str = "ggn") -> Optimizer:
    return Optimizer("ngd-woodbury", NGDWoodbury(damping, curvature), SGD(lr, momentum))
