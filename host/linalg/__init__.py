"""Thermodynamic linear algebra on an SPU: solve A x = b and invert A by letting it equilibrate.

Both functions program A, let the device burn in for ``t_burn`` (units of tau), then record
``t_sample`` of ADC samples in ``blocks`` consecutive blocks, reading each block's average back.
The estimate is the mean over blocks and its standard error the spread of the block averages
over sqrt(blocks) (batch means): honest when a block is much longer than the slowest relaxation
time 1/lambda_min(A) tau, and an underestimate otherwise. The burn-in must likewise exceed a few
1/lambda_min(A) for the state to forget where it started. Nothing here solves or inverts
digitally: the answer is whatever the device's dynamics produced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from spusim.driver.client import Device, Readout, as_float64

Progress = Callable[[int, int], None]  # called with (blocks done, blocks in all)


@dataclass(frozen=True)
class Estimate:
    """What every estimate reports besides its value.

    standard_error: per entry, from the spread of the block averages. error_estimate: its norm,
    the expected size of the estimate's error. samples: ADC samples averaged, in ``blocks``
    blocks. device_time_ns: simulated device time it took (uploads, burn-in, sampling, reads),
    split by phase in ``phase_ns``. sim_time_ns: the device clock at the end.
    """

    standard_error: np.ndarray
    error_estimate: float
    samples: int
    blocks: int
    device_time_ns: int
    phase_ns: dict[str, int]
    sim_time_ns: int


@dataclass(frozen=True)
class SolveResult(Estimate):
    """x: (N,) estimate of A^-1 b; standard_error (N,)."""

    x: np.ndarray


@dataclass(frozen=True)
class InverseResult(Estimate):
    """inverse: (N, N) estimate of A^-1; standard_error (N, N)."""

    inverse: np.ndarray


def solve(device: Device, A: Any, b: Any, *, t_burn: float = 50.0, t_sample: float = 500.0,
          blocks: int = 10, x0: Any = None, seed: int | None = None,
          integrator: str | None = None, progress: Progress | None = None) -> SolveResult:
    """x ~ A^-1 b for symmetric positive definite A (N, N), b (N,), from the device's mean.

    t_burn, t_sample: burn-in and sampling time in units of tau. x0: initial state (default:
    whatever state the device holds, i.e. a warm start). seed: noise seed for reproducibility.
    integrator: "exact" or "euler_maruyama" (default: the daemon's).
    """
    A, b = as_float64(A, "A", 2), as_float64(b, "b", 1)
    x, error, costs = _sample_statistic(device, A, b, x0, seed, integrator, t_burn, t_sample,
                                        blocks, progress, second_moments=False)
    return SolveResult(x=x, standard_error=error, error_estimate=float(np.linalg.norm(error)),
                       **costs)


def inv(device: Device, A: Any, *, t_burn: float = 50.0, t_sample: float = 2000.0,
        blocks: int = 10, seed: int | None = None, integrator: str | None = None,
        progress: Progress | None = None) -> InverseResult:
    """A^-1 for symmetric positive definite A (N, N), from the stationary covariance kappa0 A^-1.

    The bias is set to zero, so the stationary mean is exactly 0 and the covariance is the
    averaged second moment, divided by the device's kappa0. Arguments as in :func:`solve`.
    """
    A = as_float64(A, "A", 2)
    kappa0 = float(device.config["kappa0"])
    if kappa0 <= 0:
        raise ValueError("inv needs thermal noise: this device runs with kappa0 = 0")
    moment, error, costs = _sample_statistic(device, A, np.zeros(A.shape[0]), None, seed,
                                             integrator, t_burn, t_sample, blocks, progress,
                                             second_moments=True)
    return InverseResult(inverse=moment / kappa0, standard_error=error / kappa0,
                         error_estimate=float(np.linalg.norm(error)) / kappa0, **costs)


def _sample_statistic(device: Device, A: np.ndarray, b: np.ndarray, x0: Any, seed: int | None,
                      integrator: str | None, t_burn: float, t_sample: float, blocks: int,
                      progress: Progress | None, *, second_moments: bool,
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Equilibrate, sample in blocks; the block-averaged mean (or second moment), its standard
    error, and what it cost (samples, blocks, device time)."""
    _check_schedule(t_burn, t_sample, blocks)
    start = _Start(device)
    seed = _equilibrate(device, A, b, t_burn, x0, seed, integrator)
    reads = _sample_blocks(device, t_sample, blocks, seed, second_moments=second_moments,
                           progress=progress)
    values = np.array([r.second_moment if second_moments else r.mean for r in reads])
    error = values.std(axis=0, ddof=1) / np.sqrt(blocks)
    costs = {"samples": sum(r.samples for r in reads), "blocks": blocks, **start.elapsed(device)}
    return values.mean(axis=0), error, costs


class _Start:
    """The device clock and per-phase totals before an operation, to report what it cost."""

    def __init__(self, device: Device) -> None:
        self.sim_time_ns, self.phase_ns = device.sim_time_ns, device.phase_ns

    def elapsed(self, device: Device) -> dict[str, Any]:
        phases = {phase: ns - self.phase_ns.get(phase, 0)
                  for phase, ns in device.phase_ns.items() if ns != self.phase_ns.get(phase, 0)}
        return {"device_time_ns": device.sim_time_ns - self.sim_time_ns, "phase_ns": phases,
                "sim_time_ns": device.sim_time_ns}


def _equilibrate(device: Device, A: np.ndarray, b: np.ndarray, t_burn: float, x0: Any,
                 seed: int | None, integrator: str | None) -> int | None:
    """Program A and b (and x0) and burn in for ``t_burn`` tau; returns the seed if unused."""
    device.program(A, integrator=integrator)
    device.set_bias(b)
    if x0 is not None:
        device.set_state(x0)
    if t_burn > 0:
        device.run(device.duration_ns(t_burn), record=False, seed=seed)
        return None
    return seed


def _sample_blocks(device: Device, t_sample: float, blocks: int, seed: int | None, *,
                   second_moments: bool, progress: Progress | None) -> list[Readout]:
    block_ns = device.duration_ns(t_sample / blocks)
    reads = []
    for done in range(blocks):
        device.run(block_ns, second_moments=second_moments, clear=True,
                   seed=seed if done == 0 else None)
        reads.append(device.read(second_moments=second_moments))
        if progress is not None:
            progress(done + 1, blocks)
    return reads


def _check_schedule(t_burn: float, t_sample: float, blocks: int) -> None:
    """Refuse a bad schedule before anything is sent to the device."""
    if t_burn < 0:
        raise ValueError(f"t_burn must be >= 0, got {t_burn}")
    if t_sample <= 0:
        raise ValueError(f"t_sample must be > 0, got {t_sample}")
    if blocks < 2:
        raise ValueError(f"blocks must be >= 2 for a standard error, got {blocks}")
