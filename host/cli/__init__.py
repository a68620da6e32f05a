"""``spu``: the command line of spusim.

    spu serve [options]        run the device daemon (same as ``python -m spusim.device serve``)
    spu config show|check      write a device configuration file (TOML) or check one
    spu status --connect URL   show a running daemon's identity, configuration and state
    spu demo                   start a private daemon, train an MLP with TNGD and Adam on it
    spu demo --solve           start a private daemon and solve a linear system on it
    spu train                  train a model on digits with a chosen optimizer, write a record
    spu timing                 per-iteration time of TNGD and digital optimizers versus N
    spu plot RECORD...         loss and accuracy of saved runs against iterations and sim. time
    spu compare RECORD...      the same plot and a table of the runs' final numbers
    spu linalg                 solve, inv, logdet, lyapunov and expnegm on a private daemon
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from typing import Any

from spusim.cli.help import COUNT, NONNEGATIVE, POSITIVE, Parser, endpoint, fail, number
from spusim.driver.errors import DeviceError
from spusim.timing import PROFILES, TimingModel
from spusim.timing.digital import ACCELERATORS, Roofline
from spusim.timing.optimizers import Problem

EPILOG = ("The device daemon and the host library meet only on the wire (docs/protocol.md). "
          "See README.md for the architecture.")


# Commands the daemon's own command line runs (``python -m spusim.device COMMAND``).
DEVICE_COMMANDS = ("serve", "config")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="spu", epilog=EPILOG,
        description="spusim: an emulated analog thermodynamic co-processor (SPU) and its host "
                    "software.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", add_help=False,
                        help="run the device daemon (options: spu serve --help)")
    commands.add_parser("config", add_help=False,
                        help="write a device configuration file (spu config show --profile "
                             "spu-8cell > chip.toml) or check one (spu config --help)")
    status = commands.add_parser(
        "status", help="show a running daemon's identity, configuration and state",
        description="Connect to a running daemon, print its hello (identity, protocol, limits, "
                    "device configuration) and its status (programmed matrix, clock, queue, "
                    "lease, faults).")
    status.add_argument("--connect", type=endpoint, default="tcp://127.0.0.1:5555",
                        metavar="ENDPOINT",
                        help="the daemon's ZeroMQ endpoint, tcp://HOST:PORT (HOST:PORT is "
                             "taken as tcp)")
    status.add_argument("--timeout", type=POSITIVE, default=5.0,
                        help="seconds to wait for the daemon's answer")
    status.add_argument("--json", action="store_true",
                        help="print {endpoint, hello, status} as JSON instead")
    demo = commands.add_parser(
        "demo", help="train an MLP with TNGD and Adam on a private daemon (--solve: A x = b)",
        description="Start a private daemon and train an MLP on the digits data with TNGD on "
                    "the emulated SPU and with Adam; print a table and save a plot of the "
                    "loss versus iterations and versus simulated time. With --solve: solve a "
                    "random linear system A x = b on the device instead.")
    demo.add_argument("--iterations", type=COUNT, default=150, help="training iterations")
    demo.add_argument("--plot", default="spusim_demo.png", metavar="PATH",
                      help="where to write the PNG plot")
    demo.add_argument("--seed", type=int, default=0)
    solve = demo.add_argument_group("the linear-solve demo (--solve)")
    solve.add_argument("--solve", action="store_true",
                       help="solve A x = b instead of training")
    solve.add_argument("--n", type=COUNT, default=32, help="problem size")
    solve.add_argument("--condition", type=number(float, 1.0, what="condition number"),
                       default=10.0, help="condition number of A")
    solve.add_argument("--t-sample", type=POSITIVE, default=1000.0,
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
                    "host-device loop for TNGD.")
    timing.add_argument("--sizes", type=COUNT, nargs="+", default=[1000, 10**4, 10**5, 10**6],
                        metavar="N", help="numbers of parameters (1e6 is accepted)")
    timing.add_argument("--batch", type=COUNT, default=64, help="batch size b")
    timing.add_argument("--outputs", type=COUNT, default=10, help="output dimension d_z")
    timing.add_argument("--cg-iterations", type=COUNT, default=200, help="c of NGD-CG")
    timing.add_argument("--analog-tau", type=NONNEGATIVE, default=50.0,
                        help="TNGD analog time t, units of tau")
    timing.add_argument("--delay-tau", type=NONNEGATIVE, default=0.0,
                        help="TNGD delay t_d, units of tau")
    timing.add_argument("--accelerator", choices=sorted(ACCELERATORS), default="a100",
                        help="the accelerator whose roofline bounds the digital work")
    timing.add_argument("--efficiency", type=number(float, 0.0, 1.0, low_open=True,
                                                    what="fraction"), default=1.0,
                        help="fraction of the accelerator's peaks reached")
    timing.add_argument("--call-latency-us", type=NONNEGATIVE, default=0.0,
                        help="latency of each sequential model call (kernel launches)")
    timing.add_argument("--profile", choices=sorted(PROFILES), default="tngd-paper",
                        help="device timing profile")
    timing.add_argument("--link-gbps", type=POSITIVE, metavar="GBPS",
                        help="host-device link bandwidth, 10^9 bit/s (default: the profile's, "
                             "50): a faster link shortens TNGD's uploads (docs/timing.md)")
    timing.add_argument("--plot", metavar="PNG", help="write a log-log plot")
    timing.add_argument("--trace", metavar="JSON",
                        help="write a Chrome trace of 5 TNGD iterations at the largest N")
    for name, text in (("plot", "draw saved runs' loss and test accuracy against iterations "
                                "and simulated time"),
                       ("compare", "the plot of 'spu plot' and a table of the runs' final "
                                   "numbers")):
        records = commands.add_parser(
            name, help=text,
            description=f"{text[0].upper()}{text[1:]}, from run records (spu train's "
                        "record.json, an example's PREFIX.json). Test points include the final "
                        "evaluation after the last step (a star); runs that share a label are "
                        "labelled by the fields in which they differ (e.g. kappa0, readout).")
        records.add_argument("records", nargs="+", metavar="RECORD", help="JSON run records")
        records.add_argument("--out", default=f"spusim_{name}.png", metavar="PNG",
                             help="where to write the plot")
        records.add_argument("--title", default="", help="the figure's title")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in DEVICE_COMMANDS:
        # Become the daemon's command line itself, so signals and the exit code are its own.
        os.execv(sys.executable, [sys.executable, "-m", "spusim.device", *argv])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "status":
            return _status(args.connect, args.timeout, args.json)
        if args.command == "timing":
            return _timing(args)
        if args.command == "train":
            from spusim.cli.train import main as train_main

            return train_main(args)
        if args.command in ("plot", "compare"):
            return _records(args)
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

    device: TimingModel = PROFILES[args.profile]
    link = f"{device.link.bandwidth_bps / 1e9:g} Gb/s link"
    if args.link_gbps is not None:
        device = replace(device, link=replace(device.link, bandwidth_bps=args.link_gbps * 1e9))
        link = f"{args.link_gbps:g} Gb/s link (--link-gbps)"
    problem = Problem(n_params=int(max(args.sizes)), batch=args.batch, outputs=args.outputs,
                      cg_iterations=args.cg_iterations, analog_tau=args.analog_tau,
                      delay_tau=args.delay_tau)
    digital = Roofline(ACCELERATORS[args.accelerator], args.efficiency,
                       args.call_latency_us * 1e3)
    comparison = timing_report.compare(args.sizes, problem, digital, device)
    print(f"Time per iteration: b = {args.batch}, d_z = {args.outputs}, c = "
          f"{args.cg_iterations}, t = {args.analog_tau:g} tau, t_d = {args.delay_tau:g} tau; "
          f"digital work at {args.efficiency:g} x the roofline of "
          f"{digital.accelerator.name}, {args.call_latency_us:g} us per sequential model call; "
          f"device profile {args.profile}, {link}.\n")
    print(timing_report.table(comparison))
    print("\nTNGD, time per phase on the critical path:\n")
    print(timing_report.tngd_breakdown(comparison))
    if args.plot:
        title = (f"b={args.batch}, d_z={args.outputs}, t={args.analog_tau:g}τ, "
                 f"{digital.accelerator.name} roofline, {args.profile}, {link}")
        print(f"\nplot: {timing_report.plot(comparison, args.plot, title)}")
    if args.trace:
        print(f"trace: {timing_report.write_tngd_trace(problem, digital, args.trace, device)}")
    return 0


def _records(args: argparse.Namespace) -> int:
    """``spu plot`` / ``spu compare``: every run of the records, one figure (and a table)."""
    from spusim.training import records
    from spusim.training.record_plots import comparison_table, plot_runs

    runs = []
    for path in args.records:
        try:
            runs += records.load(path)["runs"]
        except records.RecordError as error:
            return fail(str(error))
    if args.command == "compare":
        print(comparison_table(runs))
    print(f"plot: {plot_runs(runs, args.out, args.title, accuracy=True)}")
    return 0


def _status(endpoint: str, timeout: float, as_json: bool) -> int:
    from spusim.driver.client import Device
    from spusim.driver.errors import DeviceTimeout

    try:
        with Device.connect(endpoint, timeout=timeout, retries=0) as device:
            info, state = device.info, device.status()
    except DeviceTimeout as error:
        print(f"spu: {error}: is a daemon running there? (start one: spu serve --bind "
              f"{endpoint})", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({"endpoint": endpoint, "hello": info, "status": state}, indent=2,
                         default=str))
        return 0
    print(f"{info['implementation']} {info['implementation_version']} at {endpoint}, protocol "
          f"{'.'.join(map(str, info['protocol']))}, boot id {info['boot_id']}")
    for title, tree in (("device configuration", info["config"]), ("limits", info["limits"]),
                        ("status", state)):
        print(f"{title}:")
        print("\n".join(_tree(tree, "  ")))
    return 0


def _tree(value: Any, indent: str) -> list[str]:
    """A nested mapping as indented ``key: value`` lines."""
    lines = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            lines += [f"{indent}{key}:", *_tree(item, indent + "  ")]
        else:
            lines.append(f"{indent}{key}: {item}")
    return lines
