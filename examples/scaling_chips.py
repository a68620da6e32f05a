"""What the block-diagonal approximation of several chips costs (docs/scaling.md): TNGD on one
chip holding the whole MLP 64-16-10 (N = 1 210), on 2 chips (by layer: 1 040 | 170; and
contiguous: 605 | 605) and on 4 chips (contiguous, 303 | 303 | 302 | 302), against exact
NGD, on the same seeds; then the simulated time of the chips' part of an iteration with a link
per chip and with one shared link.

    python examples/scaling_chips.py [--quick] [--seeds 3] [--out PREFIX]

TNGD: t = 5 tau, kappa0 = 0.001, lambda = 0.1, lr 0.3 on every arm (each chip's noise seeded
seed + i), so that the K-chip arms differ from the one-chip arm by the off-diagonal curvature
J_i^T H J_j they drop, and by their noise streams.
"""

from statistics import mean

from _experiment import arm, main

from spusim.timing.multichip import combine

CHIPS = (("1 chip", 1, "layer"), ("2 chips by layer", 2, "layer"),
         ("2 chips contiguous", 2, "contiguous"), ("4 chips contiguous", 4, "contiguous"))


def arms(args):
    return [arm("ngd (exact)", optimizer="ngd"),
            *(arm(f"tngd {name}", optimizer="tngd", t=5.0, chips=k, partition=partition)
              for name, k, partition in CHIPS)]


def device_part_us(steps, link=None):
    """Mean simulated time of the chips' part of an iteration (upload to last readout), us:
    as recorded (one chip), or recomputed from each chip's phases for ``link``."""
    def part(step):
        cost = combine([chip.costs(0) for chip in step.chips], link) if link else step.costs(0)
        return sum(cost.upload.values()) + cost.analog_ns + sum(cost.readout.values())
    return mean(part(step) for step in steps) / 1e3


def timing_table(results):
    print("\nthe chips' part of an iteration (simulated, mean over the first seed's run):")
    print(f"  {'arm':<30} {'blocks':<22} {'separate links us':>17} {'one shared link us':>18}")
    for result in results:
        steps = [record.device for record in result.history.records]
        if not steps or steps[0] is None:
            continue
        chips = getattr(steps[0], "chips", ())
        blocks = " | ".join(map(str, steps[0].blocks)) if chips else "all"
        separate = device_part_us(steps, "separate") if chips else device_part_us(steps)
        shared = device_part_us(steps, "shared") if chips else separate
        print(f"  {result.label:<30} {blocks:<22} {separate:>17.1f} {shared:>18.1f}")


if __name__ == "__main__":
    results = main("scaling_chips", "TNGD on 1, 2 and 4 chips (block-diagonal) vs exact NGD on "
                   "digits (MLP 64-16-10)", arms, iterations=200, quick_iterations=30,
                   accuracy=True)
    timing_table([r for r in results[:len(CHIPS) + 1]])
