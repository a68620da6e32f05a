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

from host.client import Device, Readout, as_float64

Progress = Callable[[int, int], None]  # called with (blocks done, blocks in all)


@dataclass(frozen=True)
class SolveResult:
    """x: (N,) estimate of A^-1 b. standard_error: (N,) per component.

    error_estimate: the norm of ``standard_error``, the expected size of ||x - A^-1 b||.
    samples: ADC samples averaged. device_time_ns: simulated device time the solve took
    (uploads, burn-in, sampling, reads), split by phase in ``phase_ns``.
    sim_time_ns: the device clock at the end.
    """

    x: np.ndarray
    standard_error: np.ndarray
    error_estimate: float
    samples: int
    blocks: int
    device_time_ns: int
    phase_ns: dict[str, int]
    sim_time_ns: int


@dataclass(frozen=True)
class InverseResult:
    """inverse: (N, N) estimate of A^-1. standard_error: (N, N) per entry.

    error_estimate: the Frobenius norm of ``standard_error``. Other fields as in SolveResult.
    """

    inverse: np.ndarray
    standard_error: np.ndarray
    error_estimate: float
    samples: int
    blocks: int
    device_time_ns: int
    phase_ns: dict[str, int]
    sim_time_ns: int


def solve(device: Device, A: Any, b: Any, *, t_burn: float = 50.0, t_sample: float = 500.0,
          blocks: int = 10, x0: Any = None, seed: int | None = None,
          integrator: str | None = None, progress: Progress | None = None) -> SolveResult:
    """x ~ A^-1 b for symmetric positive definite A (N, N), b (N,), from the device's mean.

    t_burn, t_sample: burn-in and sampling time in units of tau. x0: initial state (default:
    whatever state the device holds, i.e. a warm start). seed: noise seed for reproducibility.
    integrator: "exact" or "euler_maruyama" (default: the daemon's).
    """
    A, b = as_float64(A, "A", 2), as_float64(b, "b", 1)
    _check_schedule(t_burn, t_sample, blocks)
    start = _Start(device)
    seed = _equilibrate(device, A, b, t_burn, x0, seed, integrator)
    reads = _sample_blocks(device, t_sample, blocks, seed, second_moments=False,
                           progress=progress)
    x, error = _batch_mean(np.array([r.mean for r in reads]))
    return SolveResult(x=x, standard_error=error, error_estimate=float(np.linalg.norm(error)),
                       samples=sum(r.samples for r in reads), blocks=blocks,
                       **start.elapsed(device))


def inv(device: Device, A: Any, *, t_burn: float = 50.0, t_sample: float = 2000.0,
        blocks: int = 10, seed: int | None = None, integrator: str | None = None,
        progress: Progress | None = None) -> InverseResult:
    """A^-1 for symmetric positive definite A (N, N), from the stationary covariance kappa0 A^-1.

    The bias is set to zero, so the stationary mean is exactly 0 and the covariance is the
    averaged second moment, divided by the device's kappa0. Arguments as in :func:`solve`.
    """
    A = as_float64(A, "A", 2)
    _check_schedule(t_burn, t_sample, blocks)
    kappa0 = float(device.config["kappa0"])
    if kappa0 <= 0:
        raise ValueError("inv needs thermal noise: this device runs with kappa0 = 0")
    start = _Start(device)
    seed = _equilibrate(device, A, np.zeros(A.shape[0]), t_burn, None, seed, integrator)
    reads = _sample_blocks(device, t_sample, blocks, seed, second_moments=True,
                           progress=progress)
    inverse, error = _batch_mean(np.array([r.second_moment for r in reads]) / kappa0)
    return InverseResult(inverse=inverse, standard_error=error,
                         error_estimate=float(np.linalg.norm(error)),
                         samples=sum(r.samples for r in reads), blocks=blocks,
                         **start.elapsed(device))


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


def _batch_mean(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over the first axis and its standard error from the spread of the blocks."""
    return values.mean(axis=0), values.std(axis=0, ddof=1) / np.sqrt(values.shape[0])
