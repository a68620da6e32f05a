"""The noise sweep (the paper's Fig. 7) on digits: TNGD at t = 1 tau on devices with thermal
noise kappa0 in {0.1, 0.01, 0.001}; exact NGD for reference.

Our digits settings (examples/_experiment.py BASE: lambda 0.1, batch 32, the per-optimizer
learning rates of spusim.training.spec), not the paper's: examples/noise_map.py re-runs this
figure with the paper's hyperparameters (docs/results.md).

    python examples/sweep_noise.py [--quick] [--out docs/results/sweep_noise]

The daemons integrate with an Euler-Maruyama step of 25 ns = 0.025 tau instead of the default
0.1 tau: with kappa0 = 0.1 the run wanders to curvatures whose largest eigenvalue (27.6 measured)
makes the default step unstable, which the daemon refuses (UNSTABLE_STEP).
"""

from _experiment import arm, main

KAPPAS = (0.1, 0.01, 0.001)
EM_STEP_NS = 25


def arms(args):
    return [*(arm(f"tngd κ0={k:g}", {"kappa0": k, "em_step_ns": EM_STEP_NS}, optimizer="tngd", t=1.0) for k in KAPPAS),
            arm("ngd (exact)", optimizer="ngd")]


if __name__ == "__main__":
    main("sweep_noise", "Thermal noise kappa0 sweep for TNGD at t = 1τ on digits "
         "(MLP 64-16-10)", arms, iterations=200, quick_iterations=30)
