"""Per-iteration time of TNGD and of the digital optimizers it competes with.

Work estimates (FP32, 4 bytes a value) for a model of N parameters, batch b, output dimension
d_z and m = b d_z rows of the factored curvature. A forward and backward pass over the batch
costs 6bN FLOPs (2 forward, 4 backward per parameter and sample), a Jacobian-vector product 4bN,
a vector-Jacobian product 4bN. These are order-of-magnitude estimates whose growth matches the
TNGD paper's Table 1 (quoted in ``COMPLEXITY``); docs/timing.md lists every term. They know
only N, b and d_z: a training run's digital step is priced from the work counted on the actual
model (spusim.training.work), which docs/timing.md ("Calibration") compares with these: FLOPs
within 2x, bytes 3-7x below the counted eager-PyTorch traffic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spusim.timing.digital import Roofline, Work
from spusim.timing.model import Phase, TimingModel
from spusim.timing.pipeline import IterationCosts, Schedule, phase_sums, schedule

FLOAT_BYTES = 4
OPTIMIZERS = ("sgd", "adam", "ngd", "ngd-cg", "ngd-woodbury", "tngd")
COMPLEXITY = {  # TNGD paper, Table 1: runtime per iteration
    "sgd": "O(bN)", "adam": "O(bN)", "ngd": "O(N^3 + b d_z N^2)", "ngd-cg": "O(c b N)",
    "ngd-woodbury": "O(b^2 d_z^2 N + b^3 d_z^3)", "tngd": "O(b d_z N + t)",
}


@dataclass(frozen=True)
class Problem:
    """One training step's sizes: parameters N, batch b, outputs d_z, CG iterations c, and the
    TNGD device settings: analog time t and delay t_d (units of tau), tau (ns)."""

    n_params: int
    batch: int = 64
    outputs: int = 10
    cg_iterations: int = 200
    analog_tau: float = 50.0
    delay_tau: float = 0.0
    tau_ns: int = 1000

    @property
    def rows(self) -> int:
        """m = b d_z: rows of the factored curvature J_f."""
        return self.batch * self.outputs

    @property
    def upload_values(self) -> int:
        """Gradient plus J_f, H_L and J_f^T: N + m (m + 2N) values (TNGD App. C)."""
        n, m = self.n_params, self.rows
        return n + m * (m + 2 * n)


def gradient_work(p: Problem) -> Work:
    """Forward and backward pass over the batch."""
    return Work(6 * p.batch * p.n_params, FLOAT_BYTES * 3 * p.n_params, calls=2)


def jacobian_work(p: Problem) -> Work:
    """Per-sample output Jacobian J_f (m x N): one forward, m vector-Jacobian products."""
    n, m = p.n_params, p.rows
    return Work(2 * p.batch * n + 4 * m * n, FLOAT_BYTES * m * n, calls=2)  # vmapped


def digital_work(optimizer: str, p: Problem) -> Work:
    """The host's work in one iteration of ``optimizer``."""
    n, m, b, c = p.n_params, p.rows, p.batch, p.cg_iterations
    grad = gradient_work(p)
    match optimizer:
        case "sgd":
            return grad + Work(2 * n, FLOAT_BYTES * 3 * n)
        case "adam":
            return grad + Work(10 * n, FLOAT_BYTES * 7 * n)
        case "ngd":  # G = J^T H J, then Cholesky of G + lambda I and two triangular solves
            return (grad + jacobian_work(p) + Work(2 * m * m * n + 2 * m * n * n, 0)
                    + Work(n**3 / 3 + 2 * n * n, FLOAT_BYTES * 3 * n * n))
        case "ngd-cg":  # c GGN-vector products (a JVP and a VJP each) and CG vector updates
            return grad + c * Work(8 * b * n + 10 * n, FLOAT_BYTES * 6 * n, calls=2)
        case "ngd-woodbury":  # V = H J, I + V U / lambda, its factorisation, then apply
            return (grad + jacobian_work(p)
                    + Work(4 * m * m * n + m**3 / 3 + 4 * m * n,
                           FLOAT_BYTES * (2 * m * n + m * m)))
        case "tngd":  # gradient, J_f and the softmax Hessian blocks H_L
            return grad + jacobian_work(p) + Work(b * p.outputs**2, FLOAT_BYTES * m * p.outputs)
    raise ValueError(f"unknown optimizer {optimizer!r}; known: {list(OPTIMIZERS)}")


def tngd_costs(p: Problem, digital_ns: int, device: TimingModel) -> IterationCosts:
    """One TNGD iteration's phases: upload the factors, run t, read the N-vector estimate."""
    return IterationCosts(
        digital_ns=digital_ns,
        upload=device.upload(p.upload_values, cells=p.n_params),
        analog_ns=round(p.analog_tau * p.tau_ns),
        readout=device.readout(cells=p.n_params, n_values=p.n_params),
        delay_ns=round(p.delay_tau * p.tau_ns))


@dataclass(frozen=True)
class IterationEstimate:
    """Steady-state time of one iteration, the time per phase on its critical path, and the
    phase that dominates it."""

    optimizer: str
    iteration_ns: int
    critical_ns: dict[Phase, int] = field(default_factory=dict)
    dominant: Phase = Phase.DIGITAL
    schedule: Schedule | None = None


def estimate(optimizer: str, p: Problem, digital: Roofline,
             device: TimingModel | None = None, iterations: int = 4) -> IterationEstimate:
    """Per-iteration time of ``optimizer`` on ``p``: digital only, or the TNGD pipeline."""
    digital_ns = digital.ns(digital_work(optimizer, p))
    if optimizer != "tngd":
        return IterationEstimate(optimizer, digital_ns, {Phase.DIGITAL: digital_ns})
    loop = schedule([tngd_costs(p, digital_ns, device or TimingModel())] * iterations)
    critical = {phase: ns for phase, ns in phase_sums(loop.critical_path()).items() if ns}
    return IterationEstimate(optimizer, loop.iteration_ns[-1], critical,
                             loop.dominant_phase(), loop)
