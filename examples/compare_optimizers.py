"""TNGD against Adam, SGD, exact NGD and NGD-CG on digits (the paper's Fig. 3 on a small scale):
loss and test accuracy versus iterations and versus simulated time.

Our digits settings (examples/_experiment.py BASE: lambda 0.1, batch 32, the per-optimizer
learning rates of spusim.training.spec), not the paper's: examples/noise_map.py re-runs this
figure with the paper's hyperparameters (docs/results.md).

    python examples/compare_optimizers.py [--quick] [--out docs/results/compare]

TNGD: t = 5 tau and t = 50 tau (the paper's Fig. 3 setting), kappa0 = 0.001, lambda = 0.1,
lr 0.3; exact NGD and NGD-CG (10 CG iterations) with the same lambda and lr; SGD lr 0.5; Adam
lr 0.01 (rates from spusim.training.runs.DEFAULT_LR). Simulated time: the host's compute at this host's
speed plus the device's phases (docs/timing.md), so the time axis compares this CPU's digital
optimizers with a device attached to it, not an A100.
"""

from _experiment import arm, main


def arms(args):
    return [arm("sgd", optimizer="sgd"), arm("adam", optimizer="adam"),
            arm("ngd (exact)", optimizer="ngd"), arm("ngd-cg (c=10)", optimizer="ngd-cg"),
            arm("tngd t=5τ", optimizer="tngd", t=5.0),
            arm("tngd t=50τ", optimizer="tngd", t=50.0)]


if __name__ == "__main__":
    main("compare", "TNGD vs Adam, SGD, exact NGD and NGD-CG on digits (MLP 64-16-10)", arms,
         iterations=300, quick_iterations=30, accuracy=True)
