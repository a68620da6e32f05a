"""The TNGD paper's small models as torch ``nn.Module`` s; any other module whose output is
(b, d_z) logits or regression outputs trains the same way.

- :func:`softmax_regression`: one dense layer, N = d_z (d_in + 1).
- :func:`mlp`: dense layers with tanh (or relu) between them.
- :func:`cnn`: the paper's MNIST architecture (arXiv 2405.13817, section 5): one convolution,
  then two dense layers; ``channels`` and ``hidden`` are its width (the paper's Fig. 2 widens
  the same CNN to span N).

Inputs are images (b, C, H, W) (or anything ``nn.Flatten`` makes (b, d_in) of). Weights are
LeCun-normal (std 1 / sqrt(fan_in)) drawn in float64 from a seeded generator (the same
model in any dtype), biases zero; ``dtype`` float64 by
default (the device's wire is float64, and the tests compare with exact arithmetic), float32
works the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]()


def _initialised(model: nn.Module, seed: int, dtype: torch.dtype) -> nn.Module:
    """LeCun-normal weights and zero biases from ``seed``, in ``dtype``."""
    model = model.to(dtype)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                fan_in = layer.weight[0].numel()
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator,
                                               dtype=torch.float64) / fan_in**0.5)
                layer.bias.zero_()
    return model


def softmax_regression(n_features: int, n_classes: int, seed: int = 0,
                       dtype: torch.dtype = torch.float64) -> nn.Module:
    """Multinomial logistic regression: flatten, one dense layer."""
    return _initialised(nn.Sequential(nn.Flatten(), nn.Linear(n_features, n_classes)), seed,
                        dtype)


def mlp(n_features: int, n_classes: int, hidden: Sequence[int] = (32,),
        activation: str = "tanh", seed: int = 0,
        dtype: torch.dtype = torch.float64) -> nn.Module:
    """A multilayer perceptron with ``hidden`` layer widths (one or more, each >= 1)."""
    if not hidden or min(hidden) < 1:
        raise ValueError(f"hidden widths must be >= 1, got {list(hidden)}")
    sizes = [n_features, *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in itertools.pairwise(sizes):
        layers += [nn.Linear(fan_in, fan_out), _activation(activation)]
    return _initialised(nn.Sequential(*layers, nn.Linear(sizes[-1], n_classes)), seed, dtype)


def cnn(image_shape: tuple[int, int, int], n_classes: int, channels: int = 4, kernel: int = 3,
        hidden: int = 16, activation: str = "tanh", seed: int = 0,
        dtype: torch.dtype = torch.float64) -> nn.Module:
    """One convolution (``channels`` kernels of kernel x kernel, valid, stride 1), then two
    dense layers (``hidden`` units, then the classes). N = channels (C k^2 + 1) +
    hidden (channels P + 1) + n_classes (hidden + 1) with P = (H - k + 1)(W - k + 1): 2 530 on
    8 x 8 digits with the defaults."""
    c, height, width = image_shape
    if min(height, width) < kernel or min(channels, hidden) < 1:
        raise ValueError(f"cannot build a CNN with {channels} {kernel}x{kernel} kernels and "
                         f"{hidden} hidden units on images {image_shape}")
    positions = (height - kernel + 1) * (width - kernel + 1)
    return _initialised(nn.Sequential(
        nn.Conv2d(c, channels, kernel), _activation(activation), nn.Flatten(),
        nn.Linear(channels * positions, hidden), _activation(activation),
        nn.Linear(hidden, n_classes)), seed, dtype)


def n_params(model: nn.Module) -> int:
    """The number of trainable parameters N (those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
