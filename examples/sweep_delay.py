"""The delay sweep (the paper's Fig. 4b) on digits: TNGD at t = 5 tau with t_d in {0, 0.2, 1}
tau, the device running on under the previous step's programming between a readout and the
next upload; exact NGD for reference.

Our digits settings (examples/_experiment.py BASE: lambda 0.1, batch 32, the per-optimizer
learning rates of spusim.training.spec), not the paper's: examples/noise_map.py re-runs this
figure with the paper's hyperparameters (docs/results.md).

    python examples/sweep_delay.py [--quick] [--out docs/results/sweep_delay]
"""

from _experiment import arm, main

DELAYS = (0.0, 0.2, 1.0)  # units of tau


def arms(args):
    return [*(arm(f"tngd t_d={d:g}τ", optimizer="tngd", t=5.0, delay=d) for d in DELAYS),
            arm("ngd (exact)", optimizer="ngd")]


if __name__ == "__main__":
    main("sweep_delay", "Delay t_d sweep for TNGD at t = 5τ on digits (MLP 64-16-10)", arms,
         iterations=200, quick_iterations=30)
