"""What the block-diagonal approximation of several chips costs (docs/scaling.md): TNGD on one
chip holding the whole MLP 64-16-10 (N = 1 210), on 2 chips (by layer: 1 040 | 170; and
contiguous: 605 | 605) and on 4 chips (contiguous, 303 | 303 | 302 | 302), against exact
NGD, on the same seeds; then the simulated time of the chips' part of an iteration with a link
per chip and with one shared link; then, without noise, how far each partition's exact
block-diagonal direction is from exact NGD's along an exact NGD run (seed SEED): the cosine of
their angle, their relative difference and their length ratio.

    python examples/scaling_chips.py [--quick] [--seeds 3] [--out PREFIX]

TNGD: t = 5 tau, kappa0 = 0.001, lambda = 0.1, lr 0.3 on every arm (each chip's noise seeded
seed + i), so that the K-chip arms differ from the one-chip arm by the off-diagonal curvature
J_i^T H J_j they drop, and by their noise streams.
"""

from dataclasses import replace
from statistics import mean

import torch
from _experiment import BASE, arm, main, parse

from spusim.training.curvature import factors
from spusim.training.data import batches, load
from spusim.training.linearization import Linearization, ParameterSet
from spusim.training.losses import Loss
from spusim.training.multichip import block_sizes
from spusim.training.optimizers import NGD
from spusim.training.runs import build_model, one_blas_thread
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


def agreement(data_name, seed, iterations, every=25):
    """Along exact NGD's run (BASE's model, lambda, lr, batches), every ``every`` iterations:
    per multi-chip partition, the cosine, relative difference and length ratio of the exact
    block-diagonal direction blockdiag(C_ii + lambda I)^-1 g to the exact direction
    (C + lambda I)^-1 g."""
    data = load(data_name)
    model = build_model("mlp", data, BASE.hidden, seed)
    params, lam = ParameterSet(model), BASE.damping
    optimizer = NGD(model, lr=replace(BASE, optimizer="ngd").learning_rate, damping=lam)
    rows = []
    for k, (x, y) in zip(range(iterations), batches(data.train, BASE.batch_size, seed)):
        if k % every == 0 or k == iterations - 1:
            lin = Linearization(model, params, x, y, Loss("cross_entropy"))
            A = factors(lin).dense() + lam * torch.eye(params.n, dtype=torch.float64)
            g = lin.grad.double()
            exact = torch.linalg.solve(A, g)
            row = [k]
            for _, chips, partition in CHIPS[1:]:
                blocks = torch.split(torch.arange(params.n), block_sizes(params, chips, partition))
                d = torch.cat([torch.linalg.solve(A[b][:, b], g[b]) for b in blocks])
                row.append((float(d @ exact / (d.norm() * exact.norm())),
                            float((d - exact).norm() / exact.norm()),
                            float(d.norm() / exact.norm())))
            rows.append(row)
        optimizer.step(x, y)
    return rows


def agreement_table(rows):
    print("\nexact block-diagonal direction against exact NGD's along an NGD run "
          "(cosine / relative difference / length ratio):")
    print(f"  {'iteration':>9} " + " ".join(f"{name:>24}" for name, _, _ in CHIPS[1:]))
    for k, *triples in rows:
        print(f"  {k:>9} " + " ".join(f"{c:>8.3f} / {r:>5.2f} / {n:>5.2f}" for c, r, n in triples))


DESCRIPTION = "TNGD on 1, 2 and 4 chips (block-diagonal) vs exact NGD on digits (MLP 64-16-10)"

if __name__ == "__main__":
    results = main("scaling_chips", DESCRIPTION, arms, iterations=200, quick_iterations=30,
                   accuracy=True)
    args = parse(DESCRIPTION, 200, 30)  # the same command line, for the data and seed
    timing_table(results[:len(CHIPS) + 1])
    with one_blas_thread():
        agreement_table(agreement(args.data, args.seed, args.iterations))
