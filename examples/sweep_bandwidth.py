"""How much bandwidth does TNGD need? TNGD at t = 1 tau on digits with a programming path of
time constant tau_p in {0, 0.1, 0.3, 1} tau (every uploaded element settles first-order while
the cells run) and with an anti-alias filter of tau_f in {0.1, 1} tau before the ADC; exact NGD
for reference.

    python examples/sweep_bandwidth.py [--quick] [--out docs/results/sweep_bandwidth]
"""

from _experiment import arm, main

TAU_NS = 1000.0
PROGRAM_TAUS = (0.0, 0.1, 0.3, 1.0)  # units of tau
FILTER_TAUS = (0.1, 1.0)


def arms(args):
    settling = [arm(f"tngd τ_p={p:g}τ", {"program_tau_ns": p * TAU_NS}, optimizer="tngd", t=1.0)
                for p in PROGRAM_TAUS]
    filtered = [arm(f"tngd τ_f={f:g}τ", {"readout_tau_ns": f * TAU_NS}, optimizer="tngd", t=1.0)
                for f in FILTER_TAUS]
    return [*settling, *filtered, arm("ngd (exact)", optimizer="ngd")]


if __name__ == "__main__":
    main("sweep_bandwidth", "Finite bandwidth: TNGD at t = 1τ on digits (MLP 64-16-10)", arms,
         iterations=200, quick_iterations=30)
