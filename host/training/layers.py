"""Layers of the numpy models, each with exact forward, JVP, VJP and per-sample Jacobian.

Activations are 2-D, (b, features): a convolution's (channels, height, width) is flattened
channel-major. Each layer owns a slice of the model's parameter vector; its methods take that
slice (``params``, (n_params,)) and the cache its ``forward`` returned.

- ``forward(params, x (b, in)) -> (y (b, out), cache)``
- ``jvp(params, cache, dparams (n_params,), dx (b, in) or None) -> dy (b, out)``: the
  directional derivative (forward mode); dx None means the input is constant (data).
- ``vjp(params, cache, gy (b, out), input_grad) -> (gparams (n_params,), gx (b, in) or None)``:
  the gradient summed over the batch (reverse mode).
- ``jacobian(params, cache, G (b, k, out), input_grad) -> (J (b, k, n_params), Gx (b, k, in)
  or None)``: per-sample reverse mode for k cotangents at once; with G the model's per-sample
  d(output)/d(this layer's output), J is the per-sample Jacobian of the output wrt the layer's
  parameters.

Everything is float64 and hand-written (no autodiff); tests/test_models.py checks every method
against central finite differences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Layer(Protocol):
    in_dim: int
    out_dim: int
    n_params: int

    def init(self, rng: np.random.Generator) -> np.ndarray: ...

    def forward(self, params: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, Any]: ...

    def jvp(self, params: np.ndarray, cache: Any, dparams: np.ndarray,
            dx: np.ndarray | None) -> np.ndarray: ...

    def vjp(self, params: np.ndarray, cache: Any, gy: np.ndarray,
            input_grad: bool) -> tuple[np.ndarray, np.ndarray | None]: ...

    def jacobian(self, params: np.ndarray, cache: Any, G: np.ndarray,
                 input_grad: bool) -> tuple[np.ndarray, np.ndarray | None]: ...


@dataclass(frozen=True)
class Dense:
    """y = x W^T + c. Parameters: W (out, in) row-major, then c (out,). LeCun-normal init."""

    in_dim: int
    out_dim: int

    @property
    def n_params(self) -> int:
        return self.out_dim * (self.in_dim + 1)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        W = rng.normal(0.0, 1.0 / np.sqrt(self.in_dim), (self.out_dim, self.in_dim))
        return np.concatenate([W.ravel(), np.zeros(self.out_dim)])

    def _split(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_w = self.out_dim * self.in_dim
        return params[:n_w].reshape(self.out_dim, self.in_dim), params[n_w:]

    def forward(self, params: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        W, c = self._split(params)
        return x @ W.T + c, x

    def jvp(self, params: np.ndarray, x: np.ndarray, dparams: np.ndarray,
            dx: np.ndarray | None) -> np.ndarray:
        W, _ = self._split(params)
        dW, dc = self._split(dparams)
        dy = x @ dW.T + dc
        return dy if dx is None else dy + dx @ W.T

    def vjp(self, params: np.ndarray, x: np.ndarray, gy: np.ndarray,
            input_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        W, _ = self._split(params)
        grads = np.concatenate([(gy.T @ x).ravel(), gy.sum(axis=0)])
        return grads, gy @ W if input_grad else None

    def jacobian(self, params: np.ndarray, x: np.ndarray, G: np.ndarray,
                 input_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        W, _ = self._split(params)
        b, k, _ = G.shape
        JW = (G[:, :, :, None] * x[:, None, None, :]).reshape(b, k, -1)
        return np.concatenate([JW, G], axis=2), G @ W if input_grad else None


@dataclass(frozen=True)
class Activation:
    """Elementwise y = phi(x): "tanh" or "relu" (relu's derivative at 0 taken as 0)."""

    dim: int
    kind: str = "tanh"

    def __post_init__(self) -> None:
        if self.kind not in ("tanh", "relu"):
            raise ValueError(f"unknown activation {self.kind!r}: 'tanh' or 'relu'")

    in_dim = property(lambda self: self.dim)
    out_dim = property(lambda self: self.dim)
    n_params = 0

    def init(self, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(0)

    def forward(self, params: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "tanh":
            y = np.tanh(x)
            return y, 1.0 - y * y
        return np.maximum(x, 0.0), (x > 0).astype(x.dtype)

    def jvp(self, params: np.ndarray, slope: np.ndarray, dparams: np.ndarray,
            dx: np.ndarray | None) -> np.ndarray:
        return np.zeros_like(slope) if dx is None else dx * slope

    def vjp(self, params: np.ndarray, slope: np.ndarray, gy: np.ndarray,
            input_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        return np.zeros(0), gy * slope if input_grad else None

    def jacobian(self, params: np.ndarray, slope: np.ndarray, G: np.ndarray,
                 input_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        empty = np.zeros(G.shape[:2] + (0,))
        return empty, G * slope[:, None, :] if input_grad else None


@dataclass(frozen=True)
class Conv2d:
    """Valid 2-D convolution, stride 1, of an input (channels, height, width) with
    ``out_channels`` kernels (kernel x kernel); output (out_channels, height - kernel + 1,
    width - kernel + 1), flattened channel-major.

    Parameters: W (out_channels, channels * kernel^2) row-major (a kernel's taps in channel,
    row, column order), then c (out_channels,). Implemented as a dense layer on the image's
    patches (im2col), so each method is Dense's with a sum over the P output positions.
    """

    in_shape: tuple[int, int, int]
    out_channels: int
    kernel: int = 3

    def __post_init__(self) -> None:
        channels, height, width = self.in_shape
        if min(height, width) < self.kernel or min(channels, self.out_channels) < 1:
            raise ValueError(f"cannot convolve {self.in_shape} with a {self.kernel}x"
                             f"{self.kernel} kernel into {self.out_channels} channels")

    @property
    def out_hw(self) -> tuple[int, int]:
        _, height, width = self.in_shape
        return height - self.kernel + 1, width - self.kernel + 1

    @property
    def taps(self) -> int:
        return self.in_shape[0] * self.kernel**2

    @property
    def positions(self) -> int:
        ho, wo = self.out_hw
        return ho * wo

    in_dim = property(lambda self: int(np.prod(self.in_shape)))
    out_dim = property(lambda self: self.out_channels * self.positions)
    n_params = property(lambda self: self.out_channels * (self.taps + 1))

    def patch_index(self) -> np.ndarray:
        """(P, taps) indices into the flattened input: patch p's taps."""
        channels, height, width = self.in_shape
        ho, wo = self.out_hw
        c, i, j = np.meshgrid(np.arange(channels), np.arange(self.kernel),
                              np.arange(self.kernel), indexing="ij")
        tap = (c * height * width + i * width + j).ravel()  # offsets from the patch's corner
        corner = (np.arange(ho)[:, None] * width + np.arange(wo)[None, :]).ravel()
        return corner[:, None] + tap[None, :]

    def init(self, rng: np.random.Generator) -> np.ndarray:
        W = rng.normal(0.0, 1.0 / np.sqrt(self.taps), (self.out_channels, self.taps))
        return np.concatenate([W.ravel(), np.zeros(self.out_channels)])

    def _split(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_w = self.out_channels * self.taps
        return params[:n_w].reshape(self.out_channels, self.taps), params[n_w:]

    def _to_output(self, z: np.ndarray) -> np.ndarray:
        """(..., P, out_channels) -> (..., out_channels * P), channel-major."""
        return np.swapaxes(z, -1, -2).reshape(z.shape[:-2] + (-1,))

    def _from_output(self, y: np.ndarray) -> np.ndarray:
        """(..., out_channels * P) -> (..., P, out_channels)."""
        return np.swapaxes(y.reshape(y.shape[:-1] + (self.out_channels, self.positions)), -1, -2)

    def _scatter(self, patch_grads: np.ndarray) -> np.ndarray:
        """Adjoint of im2col: (..., P, taps) -> (..., in_dim), summing overlapping patches."""
        index = self.patch_index()
        out = np.zeros(patch_grads.shape[:-2] + (self.in_dim,))
        for tap in range(self.taps):  # one tap's indices are distinct across positions
            out[..., index[:, tap]] += patch_grads[..., tap]
        return out

    def forward(self, params: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        W, c = self._split(params)
        patches = x[:, self.patch_index()]  # (b, P, taps)
        return self._to_output(patches @ W.T + c), patches

    def jvp(self, params: np.ndarray, patches: np.ndarray, dparams: np.ndarray,
            dx: np.ndarray | None) -> np.ndarray:
        W, _ = self._split(params)
        dW, dc = self._split(dparams)
        dz = patches @ dW.T + dc
        if dx is not None:
            dz = dz + dx[:, self.patch_index()] @ W.T
        return self._to_output(dz)

    def vjp(self, params: np.ndarray, patches: np.ndarray, gy: np.ndarray,
            input_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        W, _ = self._split(params)
        gz = self._from_output(gy)  # (b, P, out_channels)
        gW = np.einsum("bpc,bpt->ct", gz, patches)
        grads = np.concatenate([gW.ravel(), gz.sum(axis=(0, 1))])
        return grads, self._scatter(gz @ W) if input_grad else None

    def jacobian(self, params: np.ndarray, patches: np.ndarray, G: np.ndarray,
                 input_grad: bool) -> tuple[np.ndarray, np.ndarray | None]:
        W, _ = self._split(params)
        b, k, _ = G.shape
        Gz = self._from_output(G)  # (b, k, P, out_channels)
        JW = np.einsum("bkpc,bpt->bkct", Gz, patches).reshape(b, k, -1)
        J = np.concatenate([JW, Gz.sum(axis=2)], axis=2)
        return J, self._scatter(Gz @ W) if input_grad else None
