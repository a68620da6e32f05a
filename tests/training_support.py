"""Shared fixtures of the training tests (test_models, test_optimizers, test_tngd,
test_training): import them into a test module to use them.

``one_blas_thread`` (autouse where imported): the host's linear algebra on one thread (numpy's
BLAS and torch's intra-op threads: spusim.training.runs.one_blas_thread). On a 2-core machine
that also runs daemons or other tests, OpenBLAS's second thread can make a small Cholesky a
hundred times slower (measured: 0.4 s instead of 2 ms for N = 385); the daemons run with one
thread too (``--threads 1``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from spusim.training import runs


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread() -> Iterator[None]:
    with runs.one_blas_thread():
        yield
