"""Command line of the device daemon: ``python -m device serve`` (also ``spu serve``).

Only the standard library and timing/ (itself pure Python) are imported at module level: the
BLAS and numba thread counts must be set in the environment before numpy, scipy or numba load.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from urllib.parse import urlsplit

from timing import PROFILES, TimingModel

DEFAULT_BIND = "tcp://127.0.0.1:5555"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m device",
        description="Emulated stochastic processing unit (SPU): a daemon that holds the device "
                    "state and answers the spusim wire protocol (docs/protocol.md).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="run the device daemon",
        description="Start the daemon: warm up the kernels, bind, print 'READY <endpoint>' on "
                    "stdout, log to stderr, and serve until SIGTERM/SIGINT or a 'shutdown' "
                    "request (exit code 0).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    serve.add_argument("--bind", default=DEFAULT_BIND,
                       help="ZeroMQ endpoint; port 0 picks a free port (the READY line names it)")
    serve.add_argument("--allow-remote", action="store_true",
                       help="allow binding a non-loopback address (unauthenticated: only on a "
                            "network you trust)")
    device = serve.add_argument_group("device")
    device.add_argument("--cells", type=int, default=4096, help="capacity: largest N")
    device.add_argument("--resistance", type=float, default=1e3, metavar="OHM",
                        help="cell resistance R; tau = RC")
    device.add_argument("--capacitance", type=float, default=1e-9, metavar="FARAD",
                        help="cell capacitance C; tau = RC")
    device.add_argument("--kappa0", type=float, default=1e-2,
                        help="noise intensity: stationary covariance kappa0 * A^-1")
    device.add_argument("--integrator", choices=("exact", "euler_maruyama"), default="exact",
                        help="default integrator (a program request may choose another)")
    device.add_argument("--em-step-ns", type=int, default=100, help="Euler-Maruyama step")
    device.add_argument("--sample-interval-ns", type=int, default=100,
                        help="ADC sample interval (a multiple of the Euler-Maruyama step)")
    device.add_argument("--seed", type=int, default=0, help="noise seed at power-on")
    device.add_argument("--profile", choices=sorted(PROFILES), default="tngd-paper",
                        help="named parameter set (docs/timing.md); the options below override it")
    timing = serve.add_argument_group(
        "timing model (docs/timing.md; unset options keep the profile's value)")
    unset = argparse.SUPPRESS
    timing.add_argument("--bits-per-value", type=int, default=unset, metavar="BITS",
                        help="width of a transferred value")
    timing.add_argument("--link-gbps", type=float, default=unset, metavar="GBPS",
                        help="link bandwidth")
    timing.add_argument("--link-latency-ns", type=int, default=unset, metavar="NS",
                        help="fixed cost of each transfer")
    for bank, role in (("dac", "programming"), ("adc", "readout")):
        timing.add_argument(f"--{bank}-bits", type=int, default=unset, metavar="BITS",
                            help=f"{role} converter resolution")
        timing.add_argument(f"--{bank}-conversion-ns", type=float, default=unset, metavar="NS",
                            help=f"time of one {role} conversion")
        timing.add_argument(f"--{bank}-channels", type=int, default=unset, metavar="N",
                            help=f"{role} converters in parallel (0: one per cell)")
        timing.add_argument(f"--{bank}-settle-tau-ns", type=float, default=unset, metavar="NS",
                            help=f"{role} settling time constant")
    runtime = serve.add_argument_group("runtime")
    runtime.add_argument("--threads", type=int, default=1,
                         help="BLAS and numba threads for the kernels")
    runtime.add_argument("--log-level", default="info",
                         choices=("debug", "info", "warning", "error"))
    return parser


def is_loopback(endpoint: str) -> bool:
    """True for ipc://, inproc:// and tcp:// endpoints on a loopback address."""
    parts = urlsplit(endpoint)
    if parts.scheme in ("ipc", "inproc"):
        return True
    host = (parts.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def timing_model(args: argparse.Namespace) -> TimingModel:
    """The profile's timing model with the options given on the command line applied."""
    model = PROFILES[args.profile]

    def given(**options: str) -> dict[str, object]:
        """{field: value} of the options given, by field name -> option attribute."""
        return {field: getattr(args, option) for field, option in options.items()
                if hasattr(args, option)}

    link = given(bits_per_value="bits_per_value", latency_ns="link_latency_ns")
    if hasattr(args, "link_gbps"):
        link["bandwidth_bps"] = args.link_gbps * 1e9
    banks = {bank: given(**{field: f"{bank}_{field}" for field in
                            ("bits", "conversion_ns", "channels", "settle_tau_ns")})
             for bank in ("dac", "adc")}
    return replace(model, link=replace(model.link, **link),
                   dac=replace(model.dac, **banks["dac"]), adc=replace(model.adc, **banks["adc"]))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("spusim.device")
    if not args.allow_remote and not is_loopback(args.bind):
        log.error("refusing to bind %s: not a loopback address (pass --allow-remote to expose "
                  "the device on a network)", args.bind)
        return 2
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                     "NUMBA_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    return _serve(args, log)


def _serve(args: argparse.Namespace, log: logging.Logger) -> int:
    import zmq

    from device import kernels
    from device.config import DeviceConfig
    from device.server import DeviceServer
    try:
        config = DeviceConfig(
            cells=args.cells, resistance_ohm=args.resistance, capacitance_farad=args.capacitance,
            kappa0=args.kappa0, integrator=args.integrator, em_step_ns=args.em_step_ns,
            sample_interval_ns=args.sample_interval_ns, seed=args.seed, profile=args.profile,
            timing=timing_model(args))
    except ValueError as error:
        log.error("%s", error)
        return 2
    started = time.perf_counter()
    kernels.warm_up()
    speed = kernels.seconds_per_cell_step()
    log.info("kernels warm in %.2f s (%.2g ns per cell-step)", time.perf_counter() - started,
             speed * 1e9)
    try:
        server = DeviceServer(config, args.bind, seconds_per_cell_step=speed)
    except zmq.ZMQError as error:
        log.error("cannot bind %s: %s", args.bind, error)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"READY {server.endpoint}", flush=True)
    server.serve(stop)
    return 0
