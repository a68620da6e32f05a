"""The analog-time sweep (the paper's Fig. 4a) on digits: TNGD with t in {5, 10, 20, 50} tau
against exact NGD; the longer the device runs, the closer its estimate to the NGD direction.

Our digits settings (examples/_experiment.py BASE: lambda 0.1, batch 32, the per-optimizer
learning rates of spusim.training.spec), not the paper's: examples/noise_map.py re-runs this
figure with the paper's hyperparameters (docs/results.md).

    python examples/sweep_analog_time.py [--quick] [--out docs/results/sweep_t]

kappa0 = 0.001, lambda = 0.1, lr 0.3, t_d = 0 (so the state is reset to g every step: Algorithm
1's rule), final readout.
"""

from _experiment import arm, main

TIMES = (5.0, 10.0, 20.0, 50.0)  # units of tau


def arms(args):
    return [*(arm(f"tngd t={t:g}τ", optimizer="tngd", t=t) for t in TIMES),
            arm("ngd (exact)", optimizer="ngd")]


if __name__ == "__main__":
    main("sweep_t", "Analog time t sweep for TNGD on digits (MLP 64-16-10)", arms,
         iterations=200, quick_iterations=30)
