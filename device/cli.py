"""Command line of the device daemon: ``python -m spusim.device serve`` (also ``spu serve``).

Only the standard library and timing/ (itself pure Python) are imported at module level: the
BLAS and numba thread counts must be set in the environment before numpy, scipy or numba load.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from spusim.timing import PROFILES

if TYPE_CHECKING:
    from spusim.device.config import DeviceConfig
    from spusim.device.faults import FaultConfig
    from spusim.device.security import CurveServerKeys

DEFAULT_BIND = "tcp://127.0.0.1:5555"
DEFAULT_MAX_RUN_NS = 2**40  # longest run accepted by default, simulated ns (about 18 min)
MAX_OPEN_FILES = 65536  # the daemon raises its soft open-files limit towards this (hard cap)
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
    ("--program-tau-ns", float, "NS", ("finite bandwidth: time constant of the first-order "
                                       "settling of every programmed element, seen by the "
                                       "running cells (0: instantaneous)")),
    ("--readout-tau-ns", float, "NS", ("anti-alias filter before the ADC: first-order "
                                       "low-pass time constant, -3 dB at 1/(2 pi tau) (0: "
                                       "none)")),
    ("--mass", float, "M", "underdamped cells: mass, tau units (1)"),
    ("--friction", float, "GAMMA", "underdamped cells: friction, tau units (1)"),
    ("--inductance", float, "HENRY", "rlc cells: inductance L (1 uH)"),
)
FIELD_OF = {"resistance": "resistance_ohm", "capacitance": "capacitance_farad",
            "inductance": "inductance_henry"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m spusim.device", allow_abbrev=False,
        description="Emulated stochastic processing unit (SPU): a daemon that holds the device "
                    "state and answers the spusim wire protocol (docs/protocol.md).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="run the device daemon", allow_abbrev=False,
        description="Start the daemon: warm up the kernels, bind, print 'READY <endpoint>' on "
                    "stdout, log to stderr, and serve until SIGTERM/SIGINT or a 'shutdown' "
                    "request (exit code 0). The device: a profile, then a --config file over "
                    "it, then the options given here over both.")
    serve.add_argument("--bind", default=DEFAULT_BIND,
                       help="ZeroMQ endpoint; port 0 picks a free port (the READY line names "
                            "it) (default: %(default)s)")
    serve.add_argument("--allow-remote", action="store_true",
                       help="allow binding a non-loopback address; also requires CURVE keys "
                            "(--curve-secret-key-file, --curve-public-keys-dir)")
    add_device_options(serve)
    add_reliability_options(serve)
    limits = serve.add_argument_group("limits (docs/reliability.md)")
    limits.add_argument("--max-run-ns", type=positive_int, default=DEFAULT_MAX_RUN_NS,
                        metavar="NS", help="longest run accepted, simulated ns; a longer one is "
                        "refused (BAD_ARGUMENT) before it is queued (default: %(default)s)")
    runtime = serve.add_argument_group("runtime")
    runtime.add_argument("--threads", type=int, default=1,
                         help="BLAS and numba threads for the kernels (default: %(default)s)")
    runtime.add_argument("--log-level", default="info",
                         choices=("debug", "info", "warning", "error"),
                         help="(default: %(default)s)")
    runtime.add_argument("--exit-with-stdin", action="store_true",
                         help="shut down when standard input reaches end of file: a parent that "
                              "spawns the daemon with a pipe on its stdin takes it down when it "
                              "exits, even if it is killed (Device.spawn does this)")
    config = commands.add_parser(
        "config", help="write or check a device configuration file", allow_abbrev=False,
        description="Device configuration files (TOML): 'show' prints a complete, commented "
                    "configuration (every field with its unit and range) to start from, e.g. "
                    "'spu config show --profile spu-8cell > chip.toml'; 'check' validates a "
                    "file. Serve it with 'spu serve --config chip.toml'.")
    actions = config.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", allow_abbrev=False,
                              help="print a configuration as TOML (profile, file, options)")
    add_device_options(show)
    check = actions.add_parser("check", allow_abbrev=False,
                               help="validate a configuration file (.toml, or a .json hello "
                                    "config); exit 2 naming each bad field")
    check.add_argument("file", metavar="FILE")
    return parser


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """The device's options: a profile, a configuration file, then every field (unset options
    keep the file's or the profile's value)."""
    unset = argparse.SUPPRESS
    device = parser.add_argument_group(
        "device (docs/physics.md; unset options keep the file's or the profile's value)")
    device.add_argument("--profile", choices=sorted(PROFILES), default=unset,
                        help="named parameter set to start from: ideal (default), tngd-paper or "
                             "spu-8cell; replaces a --config file's profile")
    device.add_argument("--config", metavar="FILE", default=None,
                        help="a device configuration file (TOML, from 'spu config show'; or "
                             "JSON, a hello config map as run records keep it)")
    for option, kind, metavar, text in DEVICE_OPTIONS:
        device.add_argument(option, type=kind, default=unset, metavar=metavar, help=text)
    device.add_argument("--integrator", choices=("exact", "euler_maruyama"), default=unset,
                        help="default integrator (a program request may choose another)")
    device.add_argument("--dynamics", choices=("overdamped", "underdamped", "rlc"),
                        default=unset, help="the cells: RC (overdamped), underdamped Langevin, "
                        "or the SPU board's RLC cells (ideal: overdamped)")
    device.add_argument("--sign-capable", action="store_true", default=unset,
                        help="rlc cells: couplings of either sign (differential)")
    timing = parser.add_argument_group(
        "timing model (docs/timing.md; unset options keep the file's or the profile's value)")
    timing.add_argument("--bits-per-value", type=int, default=unset, metavar="BITS",
                        help="width of a transferred value")
    timing.add_argument("--link-gbps", type=float, default=unset, metavar="GBPS",
                        help="link bandwidth, 10^9 bit/s")
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
                            help=f"{role} converter settling time constant, waited for (a "
                                 "cost in time; the bandwidth the cells see is "
                                 "--program-tau-ns / --readout-tau-ns)")


def add_reliability_options(serve: argparse.ArgumentParser) -> None:
    """Security (CURVE) and fault-injection options (docs/reliability.md, docs/hil.md)."""
    security = serve.add_argument_group(
        "security (a non-loopback --bind needs --allow-remote and both key files)")
    security.add_argument("--curve-secret-key-file", metavar="PATH",
                          help="the daemon's CURVE certificate with its secret key "
                               "(zmq.auth.create_certificates' NAME.key_secret); with "
                               "--curve-public-keys-dir, turns CURVE on, also on loopback")
    security.add_argument("--curve-public-keys-dir", metavar="DIR",
                          help="directory of the public certificates (*.key) of the clients "
                               "allowed in")
    faults = serve.add_argument_group(
        "fault injection (docs/reliability.md); TRIGGER is P or P:COUNT: probability P each "
        "time, at most COUNT times")
    faults.add_argument("--test-mode", action="store_true",
                        help="let clients switch faults on and off (op inject_fault)")
    faults.add_argument("--fault-seed", type=int, default=0, metavar="S",
                        help="seed of the random stream that decides when faults strike "
                             "(default: %(default)s)")
    for name, text in (("drop-reply", "lose a reply after it was produced"),
                       ("delay-reply", "hold a reply back --fault-delay-ms"),
                       ("busy", "answer a device op BUSY without executing it"),
                       ("reset", "power-cycle the device before a device op (new boot id)"),
                       ("crash-run", "kill the daemon half-way through a run (exit status 70)"),
                       ("adc-glitch", "add +-SIZE to one element of a read's mean")):
        faults.add_argument(f"--fault-{name}", type=trigger, default=None, metavar="TRIGGER",
                            help=text)
    faults.add_argument("--fault-delay-ms", type=float, default=100.0, metavar="MS",
                        help="how long a delayed reply is held back, wall time (default: "
                             "%(default)s)")
    faults.add_argument("--fault-glitch-size", type=float, default=10.0, metavar="SIZE",
                        help="size of an ADC glitch, state units (default: %(default)s)")
    faults.add_argument("--fault-stuck-cell", type=stuck_cell, action="append", default=[],
                        metavar="I[=V]", help="cell I reads V (default 0) (repeatable)")
    faults.add_argument("--fault-rail", type=float, default=None, metavar="V",
                        help="readings saturate at +-V")


def positive_int(text: str) -> int:
    """A positive integer option."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 1")
    return value


def raise_open_files_limit(log: logging.Logger) -> int:
    """Raise this process's soft limit of open files to its hard limit (at most
    MAX_OPEN_FILES): every connected peer holds one, and at the usual soft limit of 1024 about
    a thousand idle peers would lock every new client out. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    log.info("open files limit %d: at most about %d connected peers", soft, soft - 64)
    return soft


def trigger(text: str) -> tuple[float, int | None]:
    """A fault trigger ``P`` or ``P:COUNT`` as (probability, count or None)."""
    p, _, count = text.partition(":")
    try:
        probability, limit = float(p), int(count) if count else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not P or P:COUNT") from None
    if not 0 <= probability <= 1 or (limit is not None and limit < 1):
        raise argparse.ArgumentTypeError(f"{text!r}: P must be in [0, 1] and COUNT >= 1")
    return probability, limit


def stuck_cell(text: str) -> tuple[int, float]:
    """``I`` (stuck at 0) or ``I=V`` as (cell index, value)."""
    index, _, value = text.partition("=")
    try:
        return int(index), float(value) if value else 0.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I or I=V") from None


def security_problem(args: argparse.Namespace) -> str | None:
    """Why the daemon must not start with these bind and key options, or None."""
    keys = (args.curve_secret_key_file, args.curve_public_keys_dir)
    if any(keys) and not all(keys):
        return "CURVE needs both --curve-secret-key-file and --curve-public-keys-dir"
    if is_loopback(args.bind):
        return None
    if not args.allow_remote:
        return (f"refusing to bind {args.bind}: not a loopback address (pass --allow-remote and "
                "CURVE keys to expose the device on a network)")
    if not all(keys):
        return (f"refusing to bind {args.bind} without authentication: a non-loopback address "
                "requires --curve-secret-key-file and --curve-public-keys-dir")
    return None


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
    dests = [option[2:].replace("-", "_") for option, *_ in DEVICE_OPTIONS] + [
        "integrator", "dynamics", "sign_capable"]
    return {FIELD_OF.get(dest, dest): getattr(args, dest) for dest in dests
            if hasattr(args, dest)}


def timing_changes(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    """The timing options given on the command line, as sections of the timing model:
    {"link": {...}, "dac": {...}, "adc": {...}} (only the fields given)."""

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
    return {"link": link, **banks}


def device_config(args: argparse.Namespace) -> DeviceConfig:
    """The device the options describe: the profile, the --config file over it, the other
    options over both (ConfigError naming each bad field)."""
    from spusim.device.config_file import from_mapping, read

    mapping = read(args.config) if args.config else {}
    return from_mapping(mapping, getattr(args, "profile", None), timing=timing_changes(args),
                        **device_fields(args))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "config":
        return _config(args)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("spusim.device")
    problem = security_problem(args)
    if problem is not None:
        log.error("%s", problem)
        return 2
    for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                     "NUMBA_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    raise_open_files_limit(log)
    return _serve(args, log)


def _serve(args: argparse.Namespace, log: logging.Logger) -> int:
    import zmq

    from spusim.device import kernels
    from spusim.device.server import DeviceServer
    try:
        config = device_config(args)
        faults = fault_config(args)
        curve = curve_keys(args)
    except ValueError as error:
        log.error("%s", error)
        return 2
    started = time.perf_counter()
    kernels.warm_up()
    speed = kernels.seconds_per_cell_step()
    log.info("kernels warm in %.2f s (%.2g ns per cell-step)", time.perf_counter() - started,
             speed * 1e9)
    try:
        server = DeviceServer(config, args.bind, seconds_per_cell_step=speed, faults=faults,
                              test_mode=args.test_mode, curve=curve, max_run_ns=args.max_run_ns)
    except zmq.ZMQError as error:
        log.error("cannot bind %s: %s", args.bind, error)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if args.exit_with_stdin:
        threading.Thread(target=_stop_at_end_of_input, args=(stop, log), daemon=True,
                         name="stdin-watch").start()
    print(f"READY {server.endpoint}", flush=True)
    server.serve(stop)
    return 0


def _config(args: argparse.Namespace) -> int:
    """``config show``: the configuration as TOML on stdout; ``config check FILE``."""
    from spusim.device.config import ConfigError
    from spusim.device.config_file import load, to_toml

    try:
        if args.action == "check":
            config = load(args.file)
            print(f"{args.file}: valid; profile {config.profile}, {config.cells} cells, "
                  f"{config.dynamics} dynamics, kappa0 {config.kappa0:g}, tau {config.tau_ns} ns")
        else:
            sys.stdout.write(to_toml(device_config(args)))
    except ConfigError as error:
        print(f"spu config: {error}", file=sys.stderr)
        return 2
    return 0


def _stop_at_end_of_input(stop: threading.Event, log: logging.Logger) -> None:
    """Read standard input until end of file (the parent closed its pipe or died), then stop.

    Raw reads of descriptor 0: a thread blocked in sys.stdin's buffered reader would hold its
    lock and abort the interpreter's shutdown."""
    while os.read(0, 65536):
        pass
    log.warning("standard input closed: the parent process is gone; shutting down")
    stop.set()


def fault_config(args: argparse.Namespace) -> FaultConfig:
    """The faults the fault-injection options ask for (ValueError if inconsistent)."""
    from spusim.device.faults import FaultConfig, Trigger
    from spusim.protocol import FAULT_TRIGGERS

    triggers = {name: Trigger(*value) for name in FAULT_TRIGGERS
                if (value := getattr(args, f"fault_{name}")) is not None}
    return FaultConfig(seed=args.fault_seed, delay_ms=args.fault_delay_ms,
                       glitch_size=args.fault_glitch_size,
                       stuck_cells=tuple(args.fault_stuck_cell), rail=args.fault_rail, **triggers)


def curve_keys(args: argparse.Namespace) -> CurveServerKeys | None:
    """The CURVE key files given, checked (ValueError if unusable); None: no CURVE."""
    from spusim.device.security import CurveServerKeys

    if args.curve_secret_key_file is None:
        return None
    keys = CurveServerKeys(Path(args.curve_secret_key_file), Path(args.curve_public_keys_dir))
    problems = keys.problems()
    if problems:
        raise ValueError("; ".join(problems))
    return keys
