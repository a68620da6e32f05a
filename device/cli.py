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
# Device options: flag, type, metavar, help. The flag names the DeviceConfig field (see
# FIELD_OF for the two whose names differ).
DEVICE_OPTIONS: tuple[tuple[str, type, str, str], ...] = (
    ("--cells", int, "N", "capacity: largest N (ideal: 4096)"),
    ("--resistance", float, "OHM", "cell resistance R; tau = RC (1 kOhm)"),
    ("--capacitance", float, "FARAD", "cell capacitance C; tau = RC (1 nF)"),
    ("--kappa0", float, "K", "noise intensity: stationary covariance kappa0 A^-1 (0.01)"),
    ("--em-step-ns", int, "NS", "Euler-Maruyama step (100)"),
    ("--sample-interval-ns", int, "NS", "ADC sample interval, a multiple of the step (100)"),
    ("--seed", int, "S", "noise seed at power-on (0)"),
    ("--dac-full-scale", float, "V", "coupling DAC range +-V (ideal: none)"),
    ("--bias-full-scale", float, "V", "bias and state DAC range +-V (ideal: none)"),
    ("--adc-full-scale", float, "V", "ADC range +-V (ideal: none)"),
    ("--readout-noise", float, "V", "std of the noise on each ADC reading (0)"),
    ("--mismatch", float, "SIGMA", "relative std of each element's fixed error (0)"),
    ("--bias-offset", float, "V", "std of the fixed per-cell bias offsets (0)"),
    ("--readout-offset", float, "V", "std of the fixed per-cell readout offsets (0)"),
    ("--serial", int, "S", "chip serial number: fixes mismatch and offsets (0)"),
)
FIELD_OF = {"resistance": "resistance_ohm", "capacitance": "capacitance_farad"}


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
    unset = argparse.SUPPRESS  # options left out keep the profile's value
    device = serve.add_argument_group(
        "device (docs/physics.md; unset options keep the profile's value)")
    device.add_argument("--profile", choices=sorted(PROFILES), default="ideal",
                        help="named parameter set: ideal, tngd-paper or spu-8cell")
    for option, kind, metavar, text in DEVICE_OPTIONS:
        device.add_argument(option, type=kind, default=unset, metavar=metavar, help=text)
    device.add_argument("--integrator", choices=("exact", "euler_maruyama"), default=unset,
                        help="default integrator (a program request may choose another)")
    timing = serve.add_argument_group(
        "timing model (docs/timing.md; unset options keep the profile's value)")
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


def device_fields(args: argparse.Namespace) -> dict[str, object]:
    """The DeviceConfig fields given on the command line (the device group's options)."""
    dests = [option[2:].replace("-", "_") for option, *_ in DEVICE_OPTIONS] + ["integrator"]
    return {FIELD_OF.get(dest, dest): getattr(args, dest) for dest in dests
            if hasattr(args, dest)}


def timing_model(args: argparse.Namespace, model: TimingModel) -> TimingModel:
    """``model`` (the profile's) with the timing options given on the command line applied."""

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
    from device.config import profile_config
    from device.server import DeviceServer
    try:
        base = profile_config(args.profile)
        config = replace(base, timing=timing_model(args, base.timing), **device_fields(args))
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
