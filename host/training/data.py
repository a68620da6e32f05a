"""Training data: the handwritten digits that scikit-learn ships, and minibatches of it.

``load_digits()`` reads scikit-learn's copy of the UCI optical digits test set (1797 images of
8 x 8 pixels with 17 grey levels, 10 classes; bundled with the package, nothing is downloaded),
scales the pixels to [0, 1] and splits it once, stratified by class, with a fixed seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

DIGITS_SHAPE = (1, 8, 8)  # channels, height, width of one image
DIGITS_CLASSES = 10


@dataclass(frozen=True)
class Batch:
    """Inputs x (b, d_in), float64, and integer class labels y (b,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """A fixed train/test split. ``image_shape``: (channels, height, width) of one input;
    ``classes``: number of classes."""

    train: Batch
    test: Batch
    image_shape: tuple[int, int, int]
    classes: int

    @property
    def n_features(self) -> int:
        return int(np.prod(self.image_shape))


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """The digits data, pixels / 16 in [0, 1], split stratified: with the defaults 1347 training
    and 450 test images, the same on every machine."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    x = digits.data.astype(np.float64) / 16.0
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Dataset(Batch(x_train, y_train), Batch(x_test, y_test), DIGITS_SHAPE, DIGITS_CLASSES)


def batches(data: Batch, batch_size: int, seed: int = 0) -> Iterator[Batch]:
    """Endless minibatches of ``batch_size``: each epoch a fresh permutation (from ``seed``),
    the incomplete last batch of an epoch dropped."""
    if not 1 <= batch_size <= len(data):
        raise ValueError(f"batch_size must be in 1..{len(data)}, got {batch_size}")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(data))
        for start in range(0, len(data) - batch_size + 1, batch_size):
            index = order[start:start + batch_size]
            yield Batch(data.x[index], data.y[index])
