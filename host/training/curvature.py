"""The curvature C that natural-gradient methods precondition with: GGN or empirical Fisher.

For a batch of b samples with outputs z_i = f(x_i; theta) in R^{d_z} (TNGD paper,
arXiv 2405.13817, Eqs. 8-9):

- GGN: G = (1/b) sum_i J_i^T H_i J_i = J_f^T (H_L / b) J_f, with J_f ((b d_z) x N) stacking the
  per-sample output Jacobians J_i and H_L the block diagonal of the loss Hessians H_i.
- Empirical Fisher: F = (1/b) sum_i g_i g_i^T = U^T (I / b) U, with U (b x N) stacking the
  per-sample gradients g_i.

Both have the factored form C = J^T H J with J (m x N) and H (m x m) symmetric positive
semi-definite, the form the TNGD hardware programs (m = b d_z, or b). :func:`factors` builds
it in float64 (the device's wire type, whatever the model's dtype); :func:`matvec` applies C
without forming it or J: for the GGN one JVP and one VJP per product, by the ``ggnvp`` of
posteriors (the TNGD authors' torch library).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from spusim.training.linearization import Linearization

CURVATURES = ("ggn", "fisher")


def check_kind(kind: str) -> str:
    if kind not in CURVATURES:
        raise ValueError(f"curvature must be one of {list(CURVATURES)}, got {kind!r}")
    return kind


@dataclass(frozen=True)
class Factors:
    """C = J^T H J: J (m, N), H (m, m) symmetric positive semi-definite (1/b included);
    float64."""

    J: torch.Tensor
    H: torch.Tensor

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """C v for v (N,), O(mN + m^2)."""
        return self.J.T @ (self.H @ (self.J @ v))

    def dense(self) -> torch.Tensor:
        """C as an (N, N) matrix, O(m N^2)."""
        return self.J.T @ (self.H @ self.J)


def factors(lin: Linearization, kind: str = "ggn") -> Factors:
    """The factored curvature of ``kind`` ("ggn" or "fisher") at ``lin``, float64."""
    b = len(lin.outputs)
    if check_kind(kind) == "ggn":
        return Factors(lin.jacobian().double(),
                       torch.block_diag(*lin.loss_hessian().double()) / b)
    return Factors(lin.per_sample_gradients().double(), torch.eye(b, dtype=torch.float64) / b)


def matvec(lin: Linearization, kind: str = "ggn") -> Callable[[torch.Tensor], torch.Tensor]:
    """v (N,) -> C v (in theta's dtype) without forming C; for the GGN without forming J_f."""
    if check_kind(kind) == "fisher":
        U, b = lin.per_sample_gradients(), len(lin.outputs)
        return lambda v: U.T @ (U @ v.to(U.dtype)) / b
    ggnvp = _posteriors().ggnvp
    return lambda v: ggnvp(lin.forward, lin.mean_loss, (lin.theta,),
                           (v.to(lin.theta.dtype),))[1].detach()


def _posteriors():  # noqa: ANN202
    """posteriors, imported quietly (its tensordict classes warn about a future default, a
    dependency about torch.jit.script's deprecation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        import posteriors
    return posteriors
