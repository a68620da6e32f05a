"""The curvature C that natural-gradient methods precondition with: GGN or empirical Fisher.

For a batch of b samples with outputs z_i = f(x_i; theta) in R^{d_z} (TNGD paper, Eqs. 8-9,
with J_f of shape (b d_z) x N as in its Eq. 16; Eqs. 9 and 22 write the transpose):

- GGN: G = (1/b) sum_i J_i^T H_i J_i = J_f^T (H_L / b) J_f, with J_f ((b d_z) x N) stacking the
  per-sample output Jacobians J_i and H_L the block diagonal of the loss Hessians H_i.
- Empirical Fisher: F = (1/b) sum_i g_i g_i^T = U^T (I / b) U, with U (b x N) stacking the
  per-sample gradients g_i = J_i^T dL_i/dz_i.

Both have the factored form C = J^T H J with J (m x N) and H (m x m) symmetric positive
semi-definite, the form the TNGD hardware programs (m = b d_z, or b). :func:`factors` builds
it; :func:`matvec` applies C without forming it or J (GGN: one JVP and one VJP per product).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spusim.training.models import Linearization

CURVATURES = ("ggn", "fisher")


@dataclass(frozen=True)
class Factors:
    """C = J^T H J: J (m, N), H (m, m) symmetric positive semi-definite (1/b included)."""

    J: np.ndarray
    H: np.ndarray

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """C v for v (N,), O(mN + m^2)."""
        return self.J.T @ (self.H @ (self.J @ v))

    def dense(self) -> np.ndarray:
        """C as an (N, N) matrix, O(m N^2)."""
        return self.J.T @ (self.H @ self.J)


def block_diagonal(blocks: np.ndarray) -> np.ndarray:
    """(b, d, d) blocks -> the (b d, b d) block-diagonal matrix."""
    b, d, _ = blocks.shape
    full = np.zeros((b, d, b, d))
    full[np.arange(b), :, np.arange(b), :] = blocks
    return full.reshape(b * d, b * d)


def per_sample_gradients(lin: Linearization) -> np.ndarray:
    """(b, N): each sample's loss gradient g_i (the mean loss's gradient is their mean)."""
    return lin.per_sample_vjp(lin.output_grad()[:, None, :])[:, 0, :]


def factors(lin: Linearization, kind: str = "ggn") -> Factors:
    """The factored curvature of ``kind`` ("ggn" or "fisher") at ``lin``."""
    b = len(lin.logits)
    if kind == "ggn":
        return Factors(lin.jacobian(), block_diagonal(lin.loss_hessian()) / b)
    if kind == "fisher":
        return Factors(per_sample_gradients(lin), np.eye(b) / b)
    raise ValueError(f"unknown curvature {kind!r}; known: {list(CURVATURES)}")


def matvec(lin: Linearization, kind: str = "ggn") -> Callable[[np.ndarray], np.ndarray]:
    """v (N,) -> C v without forming C; for the GGN without forming J_f either."""
    b = len(lin.logits)
    if kind == "ggn":
        hessian = lin.loss_hessian() / b
        return lambda v: lin.vjp(np.einsum("bij,bj->bi", hessian, lin.jvp(v)))
    if kind == "fisher":
        U = per_sample_gradients(lin)
        return lambda v: U.T @ (U @ v) / b
    raise ValueError(f"unknown curvature {kind!r}; known: {list(CURVATURES)}")
