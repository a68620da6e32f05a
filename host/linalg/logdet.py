"""logdet: log det A of a symmetric positive definite A by thermodynamic integration, the
quasi-static limit of the switching protocols that give free-energy differences (Jarzynski,
Crooks).

The device's Gibbs law N(0, kappa0 A^-1) has the free energy F(A) = (kappa0 / 2) log det A +
const, so log det A = log det A_0 + (2 / kappa0) (F(A) - F(A_0)). Along the path
A_lambda = c I + lambda (A - c I), c = tr(A) / N (so det A_0 = c^N is known), the work's
equilibrium average gives dF / dlambda = <x^T (A - c I) x> / 2, hence

    log det A = N log c + int_0^1 f(lambda) dlambda,   f(lambda) = tr(D Sigma_lambda) / kappa0,

D = A - c I and Sigma_lambda the device's stationary covariance at coupling A_lambda. A
switching protocol driven at a finite rate measures the same integral plus dissipated work,
which Jarzynski's exponential average removes at an exponential cost in variance; sampling
f at equilibrium at a few values of lambda has no dissipation and a variance that is the sum
of the nodes' own. f is smooth (f(lambda) = sum_i mu_i / (1 + lambda mu_i), mu_i the
eigenvalues of D / c), so Clenshaw-Curtis quadrature on nodes clustered at the ends, where
the poles of f near lambda = 1 (at 1 + lambda_min(A) / (c - lambda_min(A))) sit, converges
geometrically; its error is estimated by the rule on every other node.

Error law (docs/physics.md): Var f_hat(lambda) ~ 2 tr((D A_lambda^-1)^2) / M_eff per node
(Gaussian quadratic form), M_eff ~ t_sample lambda_min(A_lambda) independent samples, and the
estimate's variance is sum_k w_k^2 Var f_hat(lambda_k).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spusim.driver.client import Device, as_float64
from spusim.linalg.bounds import (
    Parts,
    mismatch_bound,
    moment_error,
    programmed_error,
    systematics,
)
from spusim.linalg.results import LogdetResult
from spusim.linalg.sampling import Progress, burn_in, check_schedule, sample_blocks
from spusim.linalg.session import Session


def clenshaw_curtis(intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (K + 1,) and weights of the Clenshaw-Curtis rule on [0, 1], K = ``intervals``
    even: exact for polynomials of degree K, nodes (1 - cos(k pi / K)) / 2."""
    theta = np.arange(intervals + 1) * np.pi / intervals
    m = np.arange(1, intervals // 2 + 1)
    factor = np.where(2 * m == intervals, 1.0, 2.0) / (4 * m * m - 1)
    weights = 1.0 - np.cos(2 * np.outer(theta, m)) @ factor
    weights *= np.where((theta == 0) | (np.arange(intervals + 1) == intervals), 1.0, 2.0)
    return (1 - np.cos(theta)) / 2, weights / (2 * intervals)


def logdet(device: Device, A: Any, *, intervals: int = 8, t_burn: float = 50.0,
           t_sample: float = 1000.0, blocks: int = 10, seed: int | None = None,
           integrator: str | None = None, scale: bool = True, on_clip: str = "raise",
           progress: Progress | None = None) -> LogdetResult:
    """log det A for symmetric positive definite A (N, N).

    intervals: K (even) of the Clenshaw-Curtis rule in lambda; the device equilibrates at the
    K nodes lambda > 0 (f(0) = tr(D) / c = 0 is known), each for t_burn and then t_sample tau
    in ``blocks`` blocks, so the protocol takes K (t_burn + t_sample) tau plus uploads and
    reads. Other arguments as in :func:`spusim.linalg.solve`.
    """
    A = as_float64(A, "A", 2)
    if intervals < 2 or intervals % 2:
        raise ValueError(f"intervals must be even and >= 2, got {intervals}")
    check_schedule(t_burn, blocks, t_sample)
    session = Session(device, on_clip, scale)
    session.require_noise("logdet")
    n = A.shape[0]
    c = float(np.trace(A)) / n
    if not c > 0:
        raise ValueError("A must be positive definite (its trace is not positive)")
    D = A - c * np.eye(n)
    s = session.converters.coupling.scale_for(np.append(A.ravel(), c)) if scale else 1.0
    lambdas, weights = clenshaw_curtis(intervals)
    samples = 0
    values = np.zeros((intervals + 1, blocks))  # f(lambda_k) per block
    inverses = np.zeros((intervals + 1, n, n))  # A_lambda^-1 estimates, for the bounds
    seeds = (np.random.SeedSequence(seed).generate_state(intervals + 1, np.uint64) >> 1
             if seed is not None else [None] * (intervals + 1))  # independent per node
    for k in range(1, intervals + 1):
        session.program(s * (c * np.eye(n) + lambdas[k] * D), integrator=integrator)
        if k == 1:  # a later program of the same size keeps the bias
            session.set_bias(np.zeros(n))
        node_seed = burn_in(session, t_burn, None if seed is None else int(seeds[k]))
        reads = sample_blocks(session, t_sample, blocks, node_seed, second_moments=True,
                              progress=None)
        moments = np.array([r.second_moment for r in reads]) * (s / session.kappa0)
        samples += sum(r.samples for r in reads)
        values[k] = np.einsum("ij,bji->b", D, moments)
        inverses[k] = moments.mean(axis=0)
        if progress is not None:
            progress(k, intervals)
    per_block = n * np.log(c) + weights @ values
    estimate = float(per_block.mean())
    error = float(per_block.std(ddof=1) / np.sqrt(blocks))
    costs = session.finish()
    half = clenshaw_curtis(intervals // 2)[1] @ values[::2].mean(axis=1)
    quadrature = abs(float(weights @ values.mean(axis=1)) - float(half))
    paths = [c * np.eye(n) + lam * D for lam in lambdas]
    roundings = [programmed_error(session, path, s) for path in paths[1:]]
    # The last node (lambda = 1) programmed A itself: its rounding is A's.
    found = systematics(session, (s, 1.0), roundings[-1],
                        logdet_bound(session, D, paths, weights, inverses, s, roundings))
    return LogdetResult.of(np.array(error), found, samples, blocks, costs,
                           other_error=quadrature, logdet=estimate,
                           quadrature_error=quadrature, nodes=lambdas)


def logdet_bound(session: Session, D: np.ndarray, paths: list[np.ndarray],
                 weights: np.ndarray, inverses: np.ndarray, s: float,
                 roundings: list[np.ndarray]) -> Parts:
    """First-order bound on the estimate's systematic error (besides the quadrature's).

    An error E_k in the programmed A_lambda_k moves f(lambda_k) by -tr(D X_k E_k X_k), X_k the
    node's measured A_lambda_k^-1: summed with the weights for the DAC's rounding (known), and
    at 2 sigma over the chip's fixed mismatch E_k = sigma A_k o Xi (the same Xi at every node).
    A reading's second-moment error eps moves f by at most ||D||_F eps s / kappa0.
    ``roundings``: the DAC's error on each programmed
    node (k >= 1, :func:`~spusim.linalg.bounds.programmed_error`).
    """
    quantization, sensitivity = 0.0, np.zeros_like(D)
    for k, rounding in enumerate(roundings, start=1):
        X = inverses[k]
        response = X @ D @ X
        quantization -= weights[k] * float(np.sum(response.T * rounding))
        sensitivity += weights[k] * response.T * paths[k]
    mismatch = mismatch_bound(session, sensitivity)
    largest = max(float(np.linalg.norm(X, 2)) for X in inverses[1:])
    reading = float(np.linalg.norm(D)) * moment_error(session, D.shape[0], largest / s) * s
    return abs(quantization), mismatch, reading / session.kappa0
