"""Optimizers for torch models with one call per iteration, ``loss = opt.step(x, y)``: the
natural-gradient family as ``torch.optim.Optimizer`` subclasses, and SGD / Adam as torch.optim
itself, so that every comparison trains the same module on the same batches.

A natural-gradient step linearizes the model on the batch (loss, gradient g, curvature C: the
GGN or the empirical Fisher, host/training/curvature.py), computes a direction d ~ (C +
lambda I)^-1 g and moves the parameters with its update rule (host/training/updates.py: SGD
with momentum by default, or ``update=Adam(...)``). The directions:

- :class:`NGD`: exactly, by a Cholesky factorisation of the dense N x N matrix (TNGD paper,
  arXiv 2405.13817, Eq. 7 with damping).
- :class:`NGDCG`: c iterations of conjugate gradients on GGN-vector products (C never formed;
  section 3.1), both from posteriors (the TNGD authors' torch library).
- :class:`NGDWoodbury`: the Woodbury identity on C = J^T H J, (C + lambda I)^-1 =
  lambda^-1 I - lambda^-2 J^T (I + lambda^-1 H J J^T)^-1 H J: O(m^2 N + m^3) (Eqs. 10-12).
- host/training/tngd.py's TNGD: the SPU's estimate of (C + lambda I)^-1 g.

The step's digital work (model calls, curvature, digital solve) happens in one method,
``_digital_step``; the update (O(N), elementwise) in ``_update``; TNGD's device calls in
``_device_step``. The work of the first two is counted (FLOPs, bytes, sequential model calls:
host/training/work.py, once per batch shape) for the digital clock; ``opt.work.enabled = False``
turns counting off. Each step leaves a :class:`StepReport` in ``opt.report``. Parameters with
requires_grad=False are not trained and not part of N; parameter groups give their parameters
their own update hyperparameters (lr, momentum or betas, eps), which may be numbers or
schedules of the step (host/training/schedules.py). ``.grad`` is neither read nor written
(the gradient comes from torch.func), so ``zero_grad`` is harmless; ``state_dict`` holds the
update rule's per-parameter state and the step count.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from spusim.training import curvature as curvatures
from spusim.training.linearization import Linearization, ParameterSet
from spusim.training.losses import Loss
from spusim.training.schedules import Schedule, value
from spusim.training.updates import SGD, Adam, UpdateRule
from spusim.training.work import StepWork
from spusim.timing.digital import Work


@dataclass(frozen=True)
class Direction:
    """A step direction d (N,) float64, scalar diagnostics, and for a device the report of
    its calls (host/training/tngd.py's DeviceStep) and the host seconds spent waiting for them
    (not digital work)."""

    vector: torch.Tensor
    info: dict[str, float] = field(default_factory=dict)
    device: Any = None
    device_seconds: float = 0.0


@dataclass(frozen=True)
class StepReport:
    """One optimizer step. loss, accuracy: on the batch before the update (accuracy None for
    regression); grad_norm, direction_norm: Euclidean norms; direction (N,): what the update
    rule was given; host_seconds: the step's wall time on the host; digital_seconds: of it,
    the host's own compute (the rest waited for a device); device: the device's report (None
    for digital optimizers); work: the digital work counted (None when counting is off)."""

    step: int
    loss: float
    accuracy: float | None
    grad_norm: float
    direction_norm: float
    direction: torch.Tensor
    host_seconds: float
    digital_seconds: float
    info: dict[str, float]
    device: Any = None
    work: Work | None = None


class NaturalGradient(torch.optim.Optimizer):
    """The common step of the natural-gradient optimizers (module doc). ``params``: the
    model's parameters or parameter groups to train (default all of ``model.parameters()``);
    ``update``: the rule (default ``SGD(lr, momentum)``); ``loss``: "cross_entropy" (the
    model outputs logits) or "mse"; ``damping``: lambda; ``curvature``: "ggn" or "fisher"."""

    name = "natural-gradient"

    def __init__(self, model: nn.Module, params: Iterable[Any] | None = None, *,
                 loss: str = "cross_entropy", lr: Schedule = 0.01, momentum: Schedule = 0.0,
                 update: UpdateRule | None = None, damping: Schedule = 0.01,
                 curvature: str = "ggn") -> None:
        self.model, self.damping = model, damping
        self.loss_fn = Loss(loss)
        self.rule = update if update is not None else SGD(lr, momentum)
        self.curvature = curvatures.check_kind(curvature)
        super().__init__(model.parameters() if params is None else params, self.rule.defaults())
        self.steps = 0
        self.report: StepReport | None = None
        self.work = StepWork(model)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:  # type: ignore[override]
        """One iteration on the batch (x, y); returns the batch's mean loss before the update."""
        started = time.perf_counter()
        params = ParameterSet(self.model, [p for g in self.param_groups for p in g["params"]])
        shapes = (tuple(x.shape), tuple(y.shape), params.n)
        digital_key = ("digital", *shapes, *self._work_key(params))
        update_key = ("update", *shapes, self.steps == 0, *self._update_key())
        with self.work.region(digital_key):
            lin, work = self._digital_step(params, x, y)
        direction = self._device_step(work)
        with self.work.region(update_key):
            self._update(params, direction.vector)
        host_seconds = time.perf_counter() - started
        self.report = StepReport(
            self.steps, lin.loss, self.loss_fn.accuracy(lin.outputs, lin.y),
            float(lin.grad.norm()), float(direction.vector.norm()), direction.vector,
            host_seconds, host_seconds - direction.device_seconds, direction.info,
            direction.device, self.work.total(digital_key, update_key))
        self.steps += 1
        return lin.loss

    def _work_key(self, params: ParameterSet) -> tuple[Any, ...]:
        """What else this step's digital work depends on beyond the shapes (default nothing)."""
        return ()

    def _update_key(self) -> tuple[bool, ...]:
        """Which branch of the update rule each group takes this step (SGD copies d at zero
        momentum, a schedule can switch it on later): part of the update's work key."""
        return tuple(bool(value(group.get("momentum", 0.0), self.steps))
                     for group in self.param_groups)

    def _digital_step(self, params: ParameterSet, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[Linearization, Any]:
        """The step's digital work: the linearization and the direction (or, for a device,
        what to upload)."""
        lin = Linearization(self.model, params, x, y, self.loss_fn)
        return lin, self._direction(lin, self.steps)

    def _direction(self, lin: Linearization, step: int) -> Direction:
        raise NotImplementedError

    def _device_step(self, work: Any) -> Direction:
        """Digital optimizers have no device step: the direction is the digital result."""
        return work

    @torch.no_grad()
    def _update(self, params: ParameterSet, direction: torch.Tensor) -> None:
        group_of = {id(p): group for group in self.param_groups for p in group["params"]}
        for p, d in zip(params.tensors, params.split(direction), strict=True):
            self.rule.apply(p, d, self.state[p], group_of[id(p)], self.steps)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        self.steps = int(state_dict.pop("steps", 0))
        super().load_state_dict(state_dict)


class NGD(NaturalGradient):
    """d = (C + lambda I)^-1 g exactly: Cholesky of the dense N x N matrix (float64)."""

    name = "ngd"

    def _direction(self, lin: Linearization, step: int) -> Direction:
        A = curvatures.factors(lin, self.curvature).dense()
        A.diagonal().add_(value(self.damping, step))
        return Direction(torch.cholesky_solve(lin.grad.double()[:, None],
                                              torch.linalg.cholesky(A))[:, 0])


class NGDCG(NaturalGradient):
    """d ~ (C + lambda I)^-1 g by ``iterations`` conjugate-gradient iterations on
    curvature-vector products (posteriors.cg; C never formed), from 0 or, with
    ``warm_start``, from the previous step's d (not kept in the state dict; from 0 when N
    changed)."""

    name = "ngd-cg"

    def __init__(self, model: nn.Module, params: Iterable[Any] | None = None, *,
                 iterations: Schedule = 10, warm_start: bool = False, **options: Any) -> None:
        super().__init__(model, params, **options)
        self.iterations, self.warm_start = iterations, warm_start
        self._previous: torch.Tensor | None = None

    def _work_key(self, params: ParameterSet) -> tuple[Any, ...]:
        """CG's work depends on its iteration count and on whether it starts from 0."""
        warm = self.warm_start and self._previous is not None and len(self._previous) == params.n
        return (round(value(self.iterations, self.steps)), warm)

    def _direction(self, lin: Linearization, step: int) -> Direction:
        g = lin.grad
        previous = self._previous
        usable = self.warm_start and previous is not None and previous.shape == g.shape
        x0 = previous.to(g.dtype) if usable else None  # type: ignore[union-attr]
        d, info = curvatures._posteriors().cg(
            curvatures.matvec(lin, self.curvature), g, x0,
            maxiter=round(value(self.iterations, step)), damping=value(self.damping, step),
            tol=0.0)
        self._previous = d.double()
        residual = float(info["error"]) ** 0.5 / max(float(g.norm()), 1e-300)
        return Direction(d.double(), {"cg_iterations": int(info["niter"]),
                                      "cg_residual": residual})


class NGDWoodbury(NaturalGradient):
    """d = (C + lambda I)^-1 g through the Woodbury identity on the factors J (m, N), H."""

    name = "ngd-woodbury"

    def _direction(self, lin: Linearization, step: int) -> Direction:
        f = curvatures.factors(lin, self.curvature)
        lam, g = value(self.damping, step), lin.grad.double()
        V = f.H @ f.J  # (m, N)
        core = torch.eye(len(f.H), dtype=torch.float64) + (V @ f.J.T) / lam
        w = torch.linalg.solve(core, V @ g)
        return Direction(g / lam - (f.J.T @ w) / lam**2)


class FirstOrder:
    """Any torch.optim optimizer (SGD, Adam, ...) behind the same ``loss = opt.step(x, y)``
    and :class:`StepReport` as the natural-gradient family: forward, loss, ``backward()``,
    ``optimizer.step()``."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 loss: str = "cross_entropy", name: str | None = None) -> None:
        self.model, self.optimizer, self.loss_fn = model, optimizer, Loss(loss)
        self.name = name or type(optimizer).__name__.lower()
        self.steps = 0
        self.report: StepReport | None = None
        self.work = StepWork(model)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        started = time.perf_counter()
        key = (tuple(x.shape), tuple(y.shape), self.steps == 0)
        with self.work.region(key):
            loss, accuracy, gradient = self._digital_step(x, y)
        host_seconds = time.perf_counter() - started
        norm = float(gradient.norm())
        self.report = StepReport(self.steps, loss, accuracy, norm, norm, gradient, host_seconds,
                                 host_seconds, {}, work=self.work.total(key))
        self.steps += 1
        return loss

    def _digital_step(self, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[float, float | None, torch.Tensor]:
        """Forward, backward and the update: (batch loss, accuracy, flat gradient)."""
        dtype = next(self.model.parameters()).dtype
        x = x.to(dtype) if x.is_floating_point() else x
        y = self.loss_fn.targets(y, dtype)
        self.optimizer.zero_grad()
        z = self.model(x)
        loss = self.loss_fn.value(z, y)
        loss.backward()
        gradient = torch.cat([p.grad.reshape(-1) for p in self.model.parameters()
                              if p.grad is not None]).double()
        self.optimizer.step()
        return float(loss.detach()), self.loss_fn.accuracy(z.detach(), y), gradient

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)


def sgd(model: nn.Module, lr: float = 0.01, momentum: float = 0.0, *,
        loss: str = "cross_entropy") -> FirstOrder:
    """torch.optim.SGD over the model's trainable parameters."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return FirstOrder(model, torch.optim.SGD(trainable, lr=lr, momentum=momentum), loss=loss,
                      name="sgd")


def adam(model: nn.Module, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
         eps: float = 1e-8, *, loss: str = "cross_entropy") -> FirstOrder:
    """torch.optim.Adam over the model's trainable parameters (the paper's lr 1e-3)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return FirstOrder(model, torch.optim.Adam(trainable, lr=lr, betas=betas, eps=eps),
                      loss=loss, name="adam")


def name_of(optimizer: NaturalGradient | FirstOrder) -> str:
    """The optimizer's name for tables: its ``name``, "-adam" appended for an Adam update."""
    if isinstance(optimizer, NaturalGradient) and isinstance(optimizer.rule, Adam):
        return f"{optimizer.name}-adam"
    return optimizer.name
