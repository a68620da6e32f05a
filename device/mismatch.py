"""Component mismatch: fixed random errors of one chip, reproducible from its serial number.

Every programmed element carries a multiplicative error (1 + sigma e) and every cell an additive
offset sigma e, with e ~ N(0, 1) drawn from a stream keyed by (serial, array, row): the same
serial gives the same chip, element for element, whatever the size programmed; another serial
gives another chip. Coupling arrays are symmetric, like the single physical element that joins
cells i and j.
"""

from __future__ import annotations

from enum import IntEnum
from functools import lru_cache

import numpy as np


class Array(IntEnum):
    """The chip's physically distinct element arrays (part of the random stream's key)."""

    COUPLING = 1
    JACOBIAN = 2
    HESSIAN = 3
    DAMPING = 4
    BIAS_OFFSET = 5
    READOUT_OFFSET = 6


def _row(serial: int, array: Array, row: int, length: int) -> np.ndarray:
    return np.random.default_rng([serial, int(array), row]).standard_normal(length)


@lru_cache(maxsize=8)
def deviations(serial: int, array: Array, shape: tuple[int, ...]) -> np.ndarray:
    """Standard-normal deviations of ``array``'s elements, (rows, cols) or (n,); read-only and
    cached, since a training loop reprograms arrays of the same shape every step."""
    if len(shape) == 1:
        values = _row(serial, array, 0, shape[0])
    else:
        values = np.array([_row(serial, array, i, shape[1]) for i in range(shape[0])])
    values.flags.writeable = False
    return values


@lru_cache(maxsize=8)
def symmetric_deviations(serial: int, array: Array, n: int) -> np.ndarray:
    """Deviations of an n x n symmetric array: element (i, j) and (j, i) are one component."""
    upper = np.triu(deviations(serial, array, (n, n)))
    values = upper + np.triu(upper, 1).T
    values.flags.writeable = False
    return values
