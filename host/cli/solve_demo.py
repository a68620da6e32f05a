"""``spu demo``: start a private daemon, solve A x = b on it, compare with the exact answer."""

from __future__ import annotations

import sys
import time
from typing import TextIO

import numpy as np

from spusim import linalg
from spusim.driver.client import Device
from spusim.training.progress import ProgressBar
from spusim.timing.report import breakdown_table


def demo_problem(n: int, condition: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A random symmetric positive definite A (eigenvalues 0.5 ... 0.5 * condition) and b."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = (Q * np.geomspace(0.5, 0.5 * condition, n)) @ Q.T
    return (A + A.T) / 2, rng.standard_normal(n)


def run_demo(n: int = 32, condition: float = 10.0, t_burn: float = 50.0,
             t_sample: float = 1000.0, seed: int = 0, trace: str | None = None,
             out: TextIO = sys.stdout) -> float:
    """Print the demo's report; returns the relative error of the device's solution.

    ``trace``: a path to write the device's timeline to, as Chrome Trace JSON."""
    A, b = demo_problem(n, condition, seed)
    started = time.perf_counter()
    with Device.spawn() as device:
        config = device.config
        print(f"spusim demo: solving A x = b with N = {n} (condition number {condition:g}) on an "
              f"emulated SPU\n  daemon {device.endpoint}, integrator {config['integrator']}, "
              f"kappa0 = {config['kappa0']:g}, tau = RC = {device.tau_ns} ns", file=out)
        with ProgressBar("sampling", total=10) as bar:
            result = linalg.solve(device, A, b, t_burn=t_burn, t_sample=t_sample, seed=seed,
                                  progress=bar.update)
        if trace:
            print(f"  device timeline written to {device.write_trace(trace)}", file=out)
    host_seconds = time.perf_counter() - started
    exact = np.linalg.solve(A, b)  # the digital reference, for the comparison only
    shown = min(n, 8)
    print(f"\n  {'i':>3} {'device x_i':>12} {'exact x_i':>12} {'|error|':>10} {'std err':>10}",
          file=out)
    for i in range(shown):
        print(f"  {i:>3} {result.x[i]:>12.5f} {exact[i]:>12.5f} "
              f"{abs(result.x[i] - exact[i]):>10.2e} {result.standard_error[i]:>10.2e}", file=out)
    if shown < n:
        print(f"  ... ({n - shown} more)", file=out)
    relative = float(np.linalg.norm(result.x - exact) / np.linalg.norm(exact))
    print(f"\n  relative error ||x - x*|| / ||x*||  {relative:.2e}  (estimated from the "
          f"samples: {result.error_estimate / np.linalg.norm(exact):.2e})", file=out)
    print(f"  samples averaged                   {result.samples}", file=out)
    print(f"  simulated device time, per phase:\n{breakdown_table(result.phase_ns)}", file=out)
    print(f"  host wall time (incl. daemon start) {host_seconds:.1f} s", file=out)
    return relative
