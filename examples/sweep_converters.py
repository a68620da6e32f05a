"""How many converter bits and how much mismatch does TNGD tolerate? TNGD at t = 5 tau on digits
with DAC bits in {8, 12, 16}, ADC bits in {8, 12} and element mismatch in {0.01, 0.1}, one knob at
a time, against the ideal device (all with kappa0 = 0.001).

    python examples/sweep_converters.py [--quick] [--out docs/results/sweep_converters]

Ranges, from 100 steps of exact NGD on this model (measured maxima: |J| 1.8, |H| 0.008,
|g| 0.15, |x| 0.55): DAC full scale 2 for J, H and lambda (one range for all programmed values,
docs/physics.md), 0.25 for the bias and the state, ADC full scale 1. At 8 bits the coupling LSB
(2/128 = 0.016) is larger than every entry of H = H_L / b, so the programmed curvature is
lambda I alone: TNGD degrades to SGD with rate lr / lambda. The JSON rows count every clip
(device_dac_clipped, device_adc_clipped).
"""

from _experiment import arm, main

DAC = {"dac_full_scale": 2.0, "bias_full_scale": 0.25}
ADC = {"adc_full_scale": 1.0}


def arms(args):
    tngd = {"optimizer": "tngd", "t": 5.0}
    return [arm("ideal", **tngd),
            *(arm(f"DAC {b} bits", {"dac_bits": b, **DAC}, **tngd) for b in (8, 12, 16)),
            *(arm(f"ADC {b} bits", {"adc_bits": b, **ADC}, **tngd) for b in (8, 12)),
            *(arm(f"mismatch {s:g}", {"mismatch": s, "serial": 1}, **tngd) for s in (0.01, 0.1))]


if __name__ == "__main__":
    main("sweep_converters", "DAC/ADC bits and mismatch sweep for TNGD at t = 5τ on digits "
         "(MLP 64-16-10)", arms, iterations=150, quick_iterations=10)
