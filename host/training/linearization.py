"""A torch model at fixed parameters on one batch: the loss, its gradient and the output
derivatives the curvature needs, all from torch.func (no hand-written derivatives).

The optimizers see the model's trainable parameters as one flat vector theta (N,): the
parameters of their param_groups that require a gradient, in ``model.named_parameters()``
order, each flattened row-major (:class:`ParameterSet`). Frozen parameters
(requires_grad=False) and buffers stay in the module and are not part of N.

:class:`Linearization` (b samples, d_z outputs each):

- ``loss`` (float), ``grad`` (N,): the mean loss and its gradient (one VJP);
- ``outputs`` (b, d_z), ``output_grad()`` (b, d_z) dL_i/dz_i, ``loss_hessian()``
  (b, d_z, d_z);
- ``jacobian()`` ((b d_z), N): the per-sample output Jacobian J_f, sample-major rows (row
  i d_z + j is dz_ij/dtheta), from ``vmap`` of ``jacrev`` over the samples;
- ``per_sample_gradients()`` (b, N): each sample's loss gradient (``vmap`` of ``grad``);
- ``jvp(v)`` (b, d_z) and ``vjp(u)`` (N,): products with J_f;
- ``forward(theta)``: the batch outputs as a function of theta, for other torch.func tools.

A model must treat samples independently (no batch statistics: BatchNorm in eval mode only;
dropout in eval mode too, as vmap refuses random operations by default), and all trainable
parameters must share one floating dtype.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp, vjp, vmap

from spusim.training.losses import Loss


class ParameterSet:
    """The trainable parameters among ``chosen`` (default all of the model's) as one flat
    vector: names, shapes and the mapping between theta (N,) and the module's tensors."""

    def __init__(self, model: nn.Module, chosen: Iterable[torch.Tensor] | None = None) -> None:
        allowed = None if chosen is None else {id(p) for p in chosen}
        self.names: list[str] = []
        self.tensors: list[nn.Parameter] = []
        for name, p in model.named_parameters():
            if p.requires_grad and (allowed is None or id(p) in allowed):
                self.names.append(name)
                self.tensors.append(p)
        if not self.tensors:
            raise ValueError("the model has no trainable parameters (all requires_grad=False)")
        dtypes = {p.dtype for p in self.tensors}
        if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
            raise ValueError(f"trainable parameters must share one floating dtype, got {dtypes}")
        self.dtype = self.tensors[0].dtype
        self.sizes = [p.numel() for p in self.tensors]

    @property
    def n(self) -> int:
        return sum(self.sizes)

    def flat(self) -> torch.Tensor:
        """theta (N,): a detached copy of the parameters."""
        return torch.cat([p.detach().reshape(-1) for p in self.tensors])

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """name -> a view of theta shaped as that parameter (for functional_call)."""
        parts = torch.split(theta, self.sizes)
        return {name: part.view(p.shape)
                for name, part, p in zip(self.names, parts, self.tensors, strict=True)}

    def split(self, vector: torch.Tensor) -> list[torch.Tensor]:
        """A vector (N,) as one tensor per parameter, shaped and typed like it."""
        return [part.view(p.shape).to(p.dtype)
                for part, p in zip(torch.split(vector, self.sizes), self.tensors, strict=True)]


class Linearization:
    """``model`` at its current parameters on the batch (x, y) under ``loss`` (module doc).
    One forward and one backward pass at construction; the other derivatives on demand."""

    def __init__(self, model: nn.Module, params: ParameterSet, x: torch.Tensor,
                 y: torch.Tensor, loss: Loss) -> None:
        self._model, self._params, self._loss = model, params, loss
        self.x = x.to(params.dtype) if x.is_floating_point() else x
        self.y = loss.targets(y, params.dtype)
        self.theta = params.flat()
        self.outputs, pullback = vjp(self.forward, self.theta)
        self.outputs = self.outputs.detach()
        if self.outputs.ndim != 2 or len(self.outputs) != len(self.x):
            raise ValueError(f"the model's output must be (batch, outputs), got "
                             f"{tuple(self.outputs.shape)} for a batch of {len(self.x)}")
        self.loss = float(loss.value(self.outputs, self.y))
        (self.grad,) = pullback(self.output_grad() / len(self.x))
        self._pullback = pullback

    def forward(self, theta: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The outputs (b, d_z) on x (default the batch) at parameters theta (N,)."""
        batch = self.x if x is None else x
        return functional_call(self._model, self._params.unflatten(theta), (batch,))

    def _sample_output(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.forward(theta, x.unsqueeze(0)).squeeze(0)

    def mean_loss(self, z: torch.Tensor) -> torch.Tensor:
        """The batch's mean loss of outputs z (b, d_z), differentiable in z."""
        return self._loss.value(z, self.y)

    def output_grad(self) -> torch.Tensor:
        return self._loss.output_grad(self.outputs, self.y)

    def loss_hessian(self) -> torch.Tensor:
        return self._loss.hessian(self.outputs)

    def jacobian(self) -> torch.Tensor:
        J = vmap(jacrev(self._sample_output), in_dims=(None, 0))(self.theta, self.x)
        return J.reshape(-1, self.theta.numel()).detach()

    def per_sample_gradients(self) -> torch.Tensor:
        def sample_loss(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self._loss.value(self._sample_output(theta, x).unsqueeze(0), y.unsqueeze(0))

        return vmap(grad(sample_loss), in_dims=(None, 0, 0))(self.theta, self.x, self.y).detach()

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        return jvp(self.forward, (self.theta,), (v.to(self.theta.dtype),))[1].detach()

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        return self._pullback(u.to(self.theta.dtype))[0].detach()
