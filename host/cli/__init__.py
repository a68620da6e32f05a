"""``spu``: the command line of spusim.

    spu serve [options]        run the device daemon (same as ``python -m spusim.device serve``)
    spu status --connect URL   show a running daemon's identity, configuration and state
    spu demo                   start a private daemon, train an MLP with TNGD and Adam on it
    spu demo --solve           start a private daemon and solve a linear system on it
    spu train                  train a model on digits with a chosen optimizer, write a record
    spu timing                 per-iteration time of TNGD and digital optimizers versus N
    spu linalg                 solve, inv, logdet, lyapunov and expnegm on a private daemon
"""

from __future__ import annotations

import argparse
import os
import sys

from spusim.driver.errors import DeviceError
from spusim.timing import PROFILES
from spusim.timing.digital import ACCELERATORS, Roofline
from spusim.timing.optimizers import Problem

EPILOG = ("The device daemon and the host library meet only on the wire (docs/protocol.md). "
          "See README.md for the architecture.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spu", epilog=EPILOG,
        description="spusim: an emulated analog thermodynamic co-processor (SPU) and its host "
                    "software.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", add_help=False,
                        help="run the device daemon (options: spu serve --help)")
    status = commands.add_parser("status", help="show a running daemon's identity and state")
    status.add_argument("--connect", default="tcp://127.0.0.1:5555", metavar="ENDPOINT")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds")
    demo = commands.add_parser(
        "demo", help="train an MLP with TNGD and Adam on a private daemon (--solve: A x = b)",
        description="Start a private daemon and train an MLP on the digits data with TNGD on "
                    "the emulated SPU and with Adam; print a table and save a plot of the "
                    "loss versus iterations and versus simulated time. With --solve: solve a "
                    "random linear system A x = b on the device instead.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo.add_argument("--iterations", type=int, default=150, help="training iterations")
    demo.add_argument("--plot", default="spusim_demo.png", metavar="PATH",
                      help="where to write the PNG plot")
    demo.add_argument("--seed", type=int, default=0)
    solve = demo.add_argument_group("the linear-solve demo (--solve)")
    solve.add_argument("--solve", action="store_true",
                       help="solve A x = b instead of training")
    solve.add_argument("--n", type=int, default=32, help="problem size")
    solve.add_argument("--condition", type=float, default=10.0, help="condition number of A")
    solve.add_argument("--t-sample", type=float, default=1000.0,
                       help="sampling time, units of tau")
    solve.add_argument("--trace", metavar="PATH",
                       help="write the device's timeline as Chrome Trace JSON (Perfetto)")
    from spusim.cli.train import add_parser as add_train_parser

    add_train_parser(commands)
    from spusim.cli.linalg_demo import add_parser as add_linalg_parser

    add_linalg_parser(commands)
    timing = commands.add_parser(
        "timing", help="per-iteration time of TNGD and the digital optimizers versus N",
        description="Estimate one training iteration of SGD, Adam, exact NGD, NGD-CG, "
                    "NGD-Woodbury and TNGD from the timing model (docs/timing.md): a roofline "
                    "bound for the digital work on a named accelerator, and the pipelined "
                    "host-device loop for TNGD.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    timing.add_argument("--sizes", type=float, nargs="+", default=[1e3, 1e4, 1e5, 1e6],
                        metavar="N", help="numbers of parameters")
    timing.add_argument("--batch", type=int, default=64, help="batch size b")
    timing.add_argument("--outputs", type=int, default=10, help="output dimension d_z")
    timing.add_argument("--cg-iterations", type=int, default=200, help="c of NGD-CG")
    timing.add_argument("--analog-tau", type=float, default=50.0,
                        help="TNGD analog time t, units of tau")
    timing.add_argument("--delay-tau", type=float, default=0.0, help="TNGD delay t_d, tau")
    timing.add_argument("--accelerator", choices=sorted(ACCELERATORS), default="a100")
    timing.add_argument("--efficiency", type=float, default=1.0,
                        help="fraction of the accelerator's peaks reached")
    timing.add_argument("--call-latency-us", type=float, default=0.0,
                        help="latency of each sequential model call (kernel launches)")
    timing.add_argument("--profile", choices=sorted(PROFILES), default="tngd-paper",
                        help="device timing profile")
    timing.add_argument("--plot", metavar="PNG", help="write a log-log plot")
    timing.add_argument("--trace", metavar="JSON",
                        help="write a Chrome trace of 5 TNGD iterations at the largest N")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        # Become the daemon process itself, so signals and the exit code are the daemon's.
        os.execv(sys.executable, [sys.executable, "-m", "spusim.device", *argv])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "status":
            return _status(args.connect, args.timeout)
        if args.command == "timing":
            return _timing(args)
        if args.command == "train":
            from spusim.cli.train import main as train_main

            return train_main(args)
        if args.command == "linalg":
            from spusim.cli.linalg_demo import main as linalg_main

            return linalg_main(args)
        return _demo(args)
    except DeviceError as error:
        print(f"spu: {error}", file=sys.stderr)
        return 1


def _demo(args: argparse.Namespace) -> int:
    if args.solve:
        from spusim.cli.solve_demo import run_demo

        run_demo(n=args.n, condition=args.condition, t_sample=args.t_sample, seed=args.seed,
                 trace=args.trace)
    else:
        from spusim.cli.train_demo import run_training_demo

        run_training_demo(iterations=args.iterations, plot_path=args.plot, seed=args.seed)
    return 0


def _timing(args: argparse.Namespace) -> int:
    from spusim.cli import timing_report

    problem = Problem(n_params=int(args.sizes[-1]), batch=args.batch, outputs=args.outputs,
                      cg_iterations=args.cg_iterations, analog_tau=args.analog_tau,
                      delay_tau=args.delay_tau)
    digital = Roofline(ACCELERATORS[args.accelerator], args.efficiency,
                       args.call_latency_us * 1e3)
    comparison = timing_report.compare([int(n) for n in args.sizes], problem, digital,
                                       args.profile)
    print(f"Time per iteration: b = {args.batch}, d_z = {args.outputs}, c = "
          f"{args.cg_iterations}, t = {args.analog_tau:g} tau, t_d = {args.delay_tau:g} tau; "
          f"digital work at {args.efficiency:g} x the roofline of "
          f"{digital.accelerator.name}, {args.call_latency_us:g} us per sequential model call; "
          f"device profile {args.profile}.\n")
    print(timing_report.table(comparison))
    print("\nTNGD, time per phase on the critical path:\n")
    print(timing_report.tngd_breakdown(comparison))
    if args.plot:
        title = (f"b={args.batch}, d_z={args.outputs}, t={args.analog_tau:g}τ, "
                 f"{digital.accelerator.name} roofline, {args.profile}")
        print(f"\nplot: {timing_report.plot(comparison, args.plot, title)}")
    if args.trace:
        print(f"trace: {timing_report.write_tngd_trace(problem, digital, args.trace, args.profile)}")
    return 0


def _status(endpoint: str, timeout: float) -> int:
    from spusim.driver.client import Device

    with Device.connect(endpoint, timeout=timeout, retries=0) as device:
        info, state = device.info, device.status()
    print(f"{info['implementation']} {info['implementation_version']} at {endpoint}, protocol "
          f"{'.'.join(map(str, info['protocol']))}, boot id {info['boot_id']}")
    for key, value in info["config"].items():
        print(f"  config.{key} = {value}")
    for key, value in state.items():
        print(f"  {key} = {value}")
    return 0
