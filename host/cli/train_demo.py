"""``spu demo``: start a private daemon, train the MLP (a torch module) on digits with TNGD and
with Adam (torch.optim), print a table and save a plot of the loss versus iterations and versus
simulated time."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from spusim.driver.client import Device
from spusim.training.data import load_digits
from spusim.training.runs import Result, one_blas_thread, plot, run, summary_table
from spusim.training.spec import RunSpec

DEMO_KAPPA0 = 0.001  # thermal noise of the demo's device (the daemon's default is 0.01)


def run_training_demo(iterations: int = 150, plot_path: str = "spusim_demo.png",
                      kappa0: float = DEMO_KAPPA0, t: float = 5.0, seed: int = 0,
                      out: TextIO = sys.stdout) -> list[Result]:
    """Train the MLP (64-32-10, N = 2 410) for ``iterations`` steps of batch 32 with TNGD
    (lr 0.3, lambda 0.1, analog time ``t`` in tau, the state reset to g every step as Algorithm
    1 does at t_d = 0, on a daemon with noise ``kappa0``) and with Adam (lr 0.01); print the
    table and write the plot. Returns both runs."""
    started = time.perf_counter()
    data = load_digits()
    specs = [RunSpec(optimizer="tngd", iterations=iterations, t=t, seed=seed),
             RunSpec(optimizer="adam", iterations=iterations, seed=seed)]
    with one_blas_thread(), Device.spawn(kappa0=kappa0, seed=seed) as device:
        config = device.config
        print(f"spusim demo: training an MLP (64-32-10) on the digits data with TNGD on an "
              f"emulated SPU and with Adam\n  daemon {device.endpoint}, profile "
              f"{config.get('profile', 'ideal')}, kappa0 = {config['kappa0']:g}, tau = RC = "
              f"{device.tau_ns} ns; {iterations} iterations of batch 32", file=out)
        results = [run(spec, data, device) for spec in specs]
    print(f"\n{summary_table(results)}\n", file=out)
    print("  train loss: mean batch loss of the last 10 iterations; simulated time: the hybrid "
          f"loop's clock\n  (the digital step's counted work on {results[0].history.clock},\n"
          "  plus the device's phases from its replies: docs/timing.md)", file=out)
    path = plot(results, plot_path, f"MLP on digits, TNGD (t={t:g}τ, κ0={kappa0:g}) vs Adam")
    print(f"  plot: {path}", file=out)
    print(f"  host wall time (incl. daemon start) {time.perf_counter() - started:.1f} s",
          file=out)
    return results
