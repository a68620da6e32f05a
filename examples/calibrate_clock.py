"""Calibrating the digital clock: Adam's and TNGD's digital step counted on PyTorch models and
priced by the default roofline, against the TNGD paper's "TNGD about 2x Adam per iteration"
(arXiv 2405.13817, section 5.1, Fig. 3: MNIST, b = 64, an A100).

    python examples/calibrate_clock.py [--digital roofline:a100] [--json PATH]

Models (torch nn.Modules defined here; the counts depend only on their shapes, so the batch is
random): the repository's digits MLP 64-16-10, an MNIST MLP 784-32-10, and a CNN as the paper
describes its MNIST model ("one convolutional layer followed by two feedforward layers", App.
E.1; its sizes are not stated, ours are conv 8 channels 5x5 stride 2, then 32 hidden units).
Adam's digital step: forward, cross-entropy, backward, torch.optim.Adam's update. TNGD's: the
same gradient, the per-sample output Jacobian J_f (b d_z x N, vmap of jacrev) and the softmax
Hessian blocks H_L. Each is counted by spusim.training.work and priced by the digital clock;
TNGD's iteration adds the device's phases under the paper's link (16 bits, 50 Gb/s), t = 50 tau
at tau = 1 us, Algorithm 1's serial loop (timing.serial) and the pipelined one (timing.pipeline).

Printed: the counted work beside the analytic estimate of timing.optimizers (used by
``spu timing``), the per-iteration times and TNGD / Adam ratios, and the link bandwidth at which
the ratio would reach 2 (none if the digital and analog steps alone exceed it); then, from
``spu timing``'s analytic model, the ratio versus N and link bandwidth. Writes nothing unless
``--json`` is given.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from spusim.cli.help import Parser
from spusim.timing.digital import DEFAULT_DIGITAL, DigitalClock, Roofline, Work, parse_digital
from spusim.timing.model import LinkModel, TimingModel
from spusim.timing.optimizers import Problem, digital_work, estimate, tngd_costs
from spusim.timing.pipeline import LoopClock
from spusim.timing.serial import SerialClock
from spusim.training.work import count_work

BATCH, ANALOG_TAU, TARGET_RATIO = 64, 50.0, 2.0


def models() -> dict[str, tuple[nn.Module, tuple[int, ...]]]:
    """name -> (model, one input's shape)."""
    torch.manual_seed(0)
    return {
        "digits MLP 64-16-10": (nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)),
                                (64,)),
        "MNIST MLP 784-32-10": (nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.Tanh(),
                                              nn.Linear(32, 10)), (1, 28, 28)),
        "MNIST CNN (conv 8@5x5/2, 32, 10)": (
            nn.Sequential(nn.Conv2d(1, 8, 5, stride=2), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 12 * 12, 32), nn.ReLU(), nn.Linear(32, 10)),
            (1, 28, 28)),
    }


def adam_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return step


def tngd_digital_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """Gradient, per-sample J_f (b, d_z, N) and H_L (b, d_z, d_z): what TNGD uploads."""
    params = {name: p.detach() for name, p in model.named_parameters()}

    def logits(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(model, p, (xi.unsqueeze(0),)).squeeze(0)

    def step() -> None:
        model.zero_grad()
        out = model(x)
        nn.functional.cross_entropy(out, y).backward()
        jacobians = vmap(jacrev(logits), in_dims=(None, 0))(params, x)
        torch.cat([j.flatten(2) for j in jacobians.values()], dim=2)  # J_f rows
        probs = out.detach().softmax(dim=1)
        torch.diag_embed(probs) - probs.unsqueeze(2) * probs.unsqueeze(1)  # H_L blocks
    return step


def counted(model: nn.Module, make: Callable[..., Callable[[], None]],
            shape: tuple[int, ...]) -> Work:
    """The step's work, counted twice on different random batches: it must not change."""
    works = []
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn((BATCH, *shape), generator=generator)
        y = torch.randint(0, 10, (BATCH,), generator=generator)
        step = make(model, x, y)
        with count_work(model) as counter:
            step()
        works.append(counter.work)
    if works[0] != works[1]:
        raise RuntimeError(f"counting is not deterministic: {works}")
    return works[0]


def tngd_iteration_ns(problem: Problem, digital_ns: int, device: TimingModel,
                      pipelined: bool) -> int:
    """Steady-state TNGD iteration on the serial (Algorithm 1) or pipelined clock, ns."""
    clock = LoopClock() if pipelined else SerialClock()
    cost = tngd_costs(problem, digital_ns, device)
    return [clock.add(cost) for _ in range(4)][-1]


def bandwidth_for(ratio: float, problem: Problem, tngd_ns: int, adam_ns: int) -> float:
    """Link bandwidth (bit/s) at which the serial TNGD iteration is ``ratio`` x Adam's; inf if
    the digital step and the analog run alone exceed it."""
    budget_ns = ratio * adam_ns - tngd_ns - problem.analog_tau * problem.tau_ns
    bits = LinkModel().bits_per_value * (problem.upload_values + problem.n_params)
    return bits * 1e9 / budget_ns if budget_ns > 0 else math.inf


def calibrate(clock: DigitalClock) -> list[dict[str, object]]:
    rows = []
    for name, (model, shape) in models().items():
        n = sum(p.numel() for p in model.parameters())
        problem = Problem(n, batch=BATCH, outputs=10, analog_tau=ANALOG_TAU)
        adam, tngd = counted(model, adam_step, shape), counted(model, tngd_digital_step, shape)
        adam_ns, tngd_ns = clock.price(adam, 0.0), clock.price(tngd, 0.0)
        serial = tngd_iteration_ns(problem, tngd_ns, TimingModel(), pipelined=False)
        pipelined = tngd_iteration_ns(problem, tngd_ns, TimingModel(), pipelined=True)
        free = TimingModel(link=LinkModel(bandwidth_bps=1e30))  # an instant link
        rows.append({
            "model": name, "N": n, "m": problem.rows, "upload_values": problem.upload_values,
            "adam_work": asdict(adam), "tngd_work": asdict(tngd),
            "adam_analytic": asdict(digital_work("adam", problem)),
            "tngd_analytic": asdict(digital_work("tngd", problem)),
            "adam_ns": adam_ns, "tngd_digital_ns": tngd_ns,
            "tngd_serial_ns": serial, "tngd_pipelined_ns": pipelined,
            "ratio_serial": serial / adam_ns, "ratio_pipelined": pipelined / adam_ns,
            "ratio_instant_link_serial":
                tngd_iteration_ns(problem, tngd_ns, free, pipelined=False) / adam_ns,
            "ratio_instant_link_pipelined":
                tngd_iteration_ns(problem, tngd_ns, free, pipelined=True) / adam_ns,
            "bandwidth_for_2x_bps": bandwidth_for(TARGET_RATIO, problem, tngd_ns, adam_ns)})
    return rows


def ratio_versus_n(clock: Roofline, sizes: tuple[int, ...] = (10**3, 10**4, 10**5, 10**6),
                   links_bps: tuple[float, ...] = (50e9, 500e9, 5e12, 1e30)) -> str:
    """``spu timing``'s analytic model (timing.optimizers): pipelined TNGD / Adam per iteration
    versus N and the link's bandwidth (1e30 b/s: an instant link)."""
    lines = ["| N | " + " | ".join("instant link" if bps >= 1e30 else f"{bps / 1e9:g} Gb/s"
                                   for bps in links_bps) + " |",
             "|---|" + "---|" * len(links_bps)]
    for n in sizes:
        problem = Problem(n, batch=BATCH, outputs=10, analog_tau=ANALOG_TAU)
        adam = estimate("adam", problem, clock).iteration_ns
        cells = [estimate("tngd", problem, clock,
                          TimingModel(link=LinkModel(bandwidth_bps=bps))).iteration_ns / adam
                 for bps in links_bps]
        lines.append(f"| {n:.0e} | " + " | ".join(f"{r:.1f}x" for r in cells) + " |")
    return "\n".join(lines)


def report(rows: list[dict[str, object]], label: str) -> str:
    def us(ns: object) -> str:
        return f"{float(ns) / 1e3:.1f} us"  # type: ignore[arg-type]

    def work(w: object) -> str:
        w = dict(w)  # type: ignore[call-overload]
        return f"{w['flops']:.3g} / {w['bytes']:.3g} / {w['calls']}"

    lines = [(f"digital clock: {label}; device: 16 bits, 50 Gb/s, t = {ANALOG_TAU:g} tau, "
              f"tau = 1 us; b = {BATCH}, d_z = 10"), "",
             "| model | N | step | counted FLOPs / bytes / calls | analytic (timing.optimizers) |",
             "|---|---|---|---|---|"]
    for r in rows:
        for step in ("adam", "tngd"):
            lines.append(f"| {r['model']} | {r['N']} | {step} | {work(r[f'{step}_work'])} | "
                         f"{work(r[f'{step}_analytic'])} |")
    lines += ["", ("| model | Adam step | TNGD digital | TNGD iteration serial / pipelined | "
                   "TNGD / Adam serial / pipelined | instant link: serial / pipelined | "
                   "link for 2x (serial) |"), "|---|---|---|---|---|---|---|"]
    for r in rows:
        bandwidth = float(r["bandwidth_for_2x_bps"])  # type: ignore[arg-type]
        link = "none suffices" if math.isinf(bandwidth) else f"{bandwidth / 1e9:.3g} Gb/s"
        lines.append(
            f"| {r['model']} | {us(r['adam_ns'])} | {us(r['tngd_digital_ns'])} | "
            f"{us(r['tngd_serial_ns'])} / {us(r['tngd_pipelined_ns'])} | "
            f"{r['ratio_serial']:.1f}x / {r['ratio_pipelined']:.1f}x | "
            f"{r['ratio_instant_link_serial']:.1f}x / {r['ratio_instant_link_pipelined']:.1f}x | "
            f"{link} |")
    return "\n".join(lines)


def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digital", default=DEFAULT_DIGITAL,
                        help="digital clock: roofline[:ACCELERATOR[:EFFICIENCY[:LATENCY_US]]] "
                             f"(default {DEFAULT_DIGITAL})")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args()
    try:
        clock = parse_digital(args.digital)
    except ValueError as error:
        parser.error(str(error))
    if not isinstance(clock, Roofline):
        parser.error("calibration prices counted work: use a roofline clock")
    rows = calibrate(clock)
    print(report(rows, clock.label))
    print("\nTNGD (pipelined) / Adam per iteration from timing.optimizers' analytic work, "
          "versus N and link bandwidth:\n")
    print(ratio_versus_n(clock))
    if args.json:
        Path(args.json).write_text(json.dumps({"digital": clock.label, "rows": rows}, indent=1))


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
