"""Models in numpy with exact per-sample Jacobians, trained with softmax cross-entropy.

The optimizers (host/training/optimizers.py, host/training/tngd.py) see a model only through two small
protocols, so a model from another framework can plug in by implementing them:

- :class:`Model`: ``n_params`` N, ``n_outputs`` d_z, ``params`` (N,) (get and set),
  ``linearize(batch)`` and ``evaluate(batch)``.
- :class:`Linearization`: the model at its current parameters on one batch of b samples: the
  mean loss and its gradient, and the derivatives the curvature needs: the output Jacobian J_f
  ((b d_z) x N, sample-major: row i d_z + j is d z_ij / d theta), the loss Hessian blocks H_L
  (b, d_z, d_z) with respect to each sample's outputs z_i, Jacobian-vector and vector-Jacobian
  products. The loss is l = (1/b) sum_i L(y_i, z_i), so the GGN is G = (1/b) J_f^T H_L J_f.

:class:`Network` is a stack of host/training/layers.py layers with softmax cross-entropy on its logits,
L(y, z) = logsumexp(z) - z_y, whose Hessian is diag(p) - p p^T with p = softmax(z).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from spusim.training.data import Batch
from spusim.training.layers import Activation, Conv2d, Dense, Layer


class Linearization(Protocol):
    """A model's loss and output derivatives at fixed parameters on one batch."""

    loss: float  # mean loss over the batch
    grad: np.ndarray  # (N,) its gradient
    logits: np.ndarray  # (b, d_z) the outputs z

    def output_grad(self) -> np.ndarray:
        """(b, d_z): dL(y_i, z_i)/dz_i per sample (not divided by b)."""
        ...

    def loss_hessian(self) -> np.ndarray:
        """(b, d_z, d_z): d^2 L(y_i, z_i)/dz_i^2 per sample (not divided by b)."""
        ...

    def jacobian(self) -> np.ndarray:
        """((b d_z), N): the per-sample output Jacobian J_f, sample-major rows."""
        ...

    def per_sample_vjp(self, cotangents: np.ndarray) -> np.ndarray:
        """(b, k, d_z) -> (b, k, N): u_ik^T dz_i/dtheta for each sample i and cotangent k."""
        ...

    def jvp(self, v: np.ndarray) -> np.ndarray:
        """(N,) -> (b, d_z): dz_i/dtheta v."""
        ...

    def vjp(self, u: np.ndarray) -> np.ndarray:
        """(b, d_z) -> (N,): sum_i u_i^T dz_i/dtheta."""
        ...


class Model(Protocol):
    """What an optimizer needs of a model."""

    n_params: int
    n_outputs: int
    params: np.ndarray  # (N,) float64; optimizers assign a new array each step

    def linearize(self, batch: Any) -> Linearization: ...

    def evaluate(self, batch: Any) -> tuple[float, float]:
        """(mean loss, accuracy in [0, 1]) on ``batch``."""
        ...


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (b, d_z) logits, stable for large ones."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy_hessian(p: np.ndarray) -> np.ndarray:
    """(b, d_z, d_z): the Hessian diag(p_i) - p_i p_i^T of the cross-entropy with respect to the
    logits, from the probabilities p (b, d_z); positive semi-definite, with 1 in its kernel."""
    return np.einsum("bi,ij->bij", p, np.eye(p.shape[1])) - p[:, :, None] * p[:, None, :]


def cross_entropy(z: np.ndarray, y: np.ndarray) -> float:
    """Mean softmax cross-entropy of logits (b, d_z) against labels (b,)."""
    shifted = z - z.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


class Network:
    """A stack of layers with softmax cross-entropy; parameters in one vector (the layers'
    parameters concatenated in order), initialised from ``seed``."""

    def __init__(self, layers: Sequence[Layer], seed: int = 0) -> None:
        for before, after in itertools.pairwise(layers):
            if before.out_dim != after.in_dim:
                raise ValueError(f"layer sizes do not chain: {before} gives {before.out_dim} "
                                 f"features, {after} expects {after.in_dim}")
        self.layers = list(layers)
        self.n_outputs = layers[-1].out_dim
        bounds = np.cumsum([0] + [layer.n_params for layer in layers])
        self._slices = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
        rng = np.random.default_rng(seed)
        self.params = np.concatenate([layer.init(rng) for layer in layers])

    @property
    def n_params(self) -> int:
        return self.params.size

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(b, d_in) -> (b, d_z)."""
        for layer, part in zip(self.layers, self._slices, strict=True):
            x, _ = layer.forward(self.params[part], x)
        return x

    def evaluate(self, batch: Batch) -> tuple[float, float]:
        z = self.logits(batch.x)
        return cross_entropy(z, batch.y), float((z.argmax(axis=1) == batch.y).mean())

    def linearize(self, batch: Batch) -> NetworkLinearization:
        return NetworkLinearization(self, batch)


class NetworkLinearization:
    """:class:`Linearization` of a :class:`Network`: one forward and one backward pass at
    construction (loss, gradient); the other derivatives reuse the stored activations."""

    def __init__(self, network: Network, batch: Batch) -> None:
        self._layers = network.layers
        self._params = [network.params[part].copy() for part in network._slices]
        self._caches = []
        x = batch.x
        for layer, params in zip(self._layers, self._params, strict=True):
            x, cache = layer.forward(params, x)
            self._caches.append(cache)
        self.logits, self.labels = x, batch.y
        self.probabilities = softmax(x)
        self.loss = cross_entropy(x, batch.y)
        self.grad = self.vjp(self.output_grad() / len(batch.y))

    def output_grad(self) -> np.ndarray:
        g = self.probabilities.copy()
        g[np.arange(len(self.labels)), self.labels] -= 1.0
        return g

    def loss_hessian(self) -> np.ndarray:
        return cross_entropy_hessian(self.probabilities)

    def jacobian(self) -> np.ndarray:
        b, d = self.logits.shape
        eye = np.broadcast_to(np.eye(d), (b, d, d))
        return self.per_sample_vjp(eye).reshape(b * d, -1)

    def per_sample_vjp(self, cotangents: np.ndarray) -> np.ndarray:
        G, parts = cotangents, []
        for i in reversed(range(len(self._layers))):
            J, G = self._layers[i].jacobian(self._params[i], self._caches[i], G, i > 0)
            parts.append(J)
        return np.concatenate(parts[::-1], axis=2)

    def jvp(self, v: np.ndarray) -> np.ndarray:
        dx, start = None, 0
        for layer, params, cache in zip(self._layers, self._params, self._caches, strict=True):
            dx = layer.jvp(params, cache, v[start:start + params.size], dx)
            start += params.size
        assert dx is not None
        return dx

    def vjp(self, u: np.ndarray) -> np.ndarray:
        g, parts = u, []
        for i in reversed(range(len(self._layers))):
            grads, g = self._layers[i].vjp(self._params[i], self._caches[i], g, i > 0)
            parts.append(grads)
        return np.concatenate(parts[::-1])


def softmax_regression(n_features: int, n_classes: int, seed: int = 0) -> Network:
    """Multinomial logistic regression: one dense layer, N = d_z (d_in + 1)."""
    return Network([Dense(n_features, n_classes)], seed)


def mlp(n_features: int, n_classes: int, hidden: Sequence[int] = (32,),
        activation: str = "tanh", seed: int = 0) -> Network:
    """A multilayer perceptron with ``hidden`` layer widths (one or more) and ``activation``
    ("tanh", smooth, or "relu") between dense layers."""
    sizes = [n_features, *hidden]
    layers: list[Layer] = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [Dense(fan_in, fan_out), Activation(fan_out, activation)]
    return Network([*layers, Dense(sizes[-1], n_classes)], seed)


def cnn(image_shape: tuple[int, int, int], n_classes: int, channels: int = 4, kernel: int = 3,
        hidden: int = 16, activation: str = "tanh", seed: int = 0) -> Network:
    """The TNGD paper's MNIST architecture, scaled to the data: one convolution (``channels``
    kernels of kernel x kernel, valid), then two dense layers (``hidden`` units, then the
    classes). On 8 x 8 digits with the defaults N = 2 530."""
    conv = Conv2d(image_shape, channels, kernel)
    return Network([conv, Activation(conv.out_dim, activation),
                    Dense(conv.out_dim, hidden), Activation(hidden, activation),
                    Dense(hidden, n_classes)], seed)
