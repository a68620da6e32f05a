"""The losses TNGD preconditions for, with their output gradients and Hessians in closed form.

For a batch of b samples with outputs z_i (d_z,) the loss is the mean l = (1/b) sum_i L(y_i, z_i)
and the GGN is G = (1/b) J_f^T H_L J_f with H_L the block diagonal of H_i = d^2 L / dz_i^2
(TNGD paper, arXiv 2405.13817, Eqs. 8-9).

- ``cross_entropy``: L = logsumexp(z) - z_y for an integer label y (logits in, the same as
  torch.nn.functional.cross_entropy); dL/dz = p - e_y, H = diag(p) - p p^T with p = softmax(z),
  positive semi-definite with 1 in its kernel.
- ``mse``: L = ||z - y||^2 / 2 summed over the d_z outputs (the negative log-likelihood of a
  unit-variance Gaussian, up to a constant), dL/dz = z - y, H = I. Note: torch's ``mse_loss``
  also divides by d_z and doubles; this one keeps H = I so that the GGN is the Fisher.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSSES = ("cross_entropy", "mse")


@dataclass(frozen=True)
class Loss:
    """A loss by name ("cross_entropy" or "mse"): its batch mean, per-sample output gradient and
    Hessian, and (cross-entropy) the accuracy of the outputs."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}, got {self.name!r}")

    @property
    def classifies(self) -> bool:
        return self.name == "cross_entropy"

    def targets(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Labels as int64 (cross-entropy) or targets as (b, d_z) of ``dtype`` (mse)."""
        return y.long() if self.classifies else y.to(dtype).reshape(len(y), -1)

    def value(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean loss over the batch (a 0-dim tensor, differentiable in z)."""
        if self.classifies:
            return F.cross_entropy(z, y)
        return 0.5 * ((z - y) ** 2).sum() / len(z)

    def output_grad(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(b, d_z): dL(y_i, z_i)/dz_i per sample (not divided by b)."""
        if self.classifies:
            return torch.softmax(z, dim=1) - F.one_hot(y, z.shape[1]).to(z.dtype)
        return z - y

    def hessian(self, z: torch.Tensor) -> torch.Tensor:
        """(b, d_z, d_z): d^2 L(y_i, z_i)/dz_i^2 per sample (not divided by b)."""
        b, d = z.shape
        if self.classifies:
            p = torch.softmax(z, dim=1)
            return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        return torch.eye(d, dtype=z.dtype).expand(b, d, d).clone()

    def accuracy(self, z: torch.Tensor, y: torch.Tensor) -> float | None:
        """The fraction of argmax(z) equal to the label (None for regression)."""
        return float((z.argmax(dim=1) == y).double().mean()) if self.classifies else None
