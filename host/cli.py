"""``spu``: the command line of spusim.

    spu serve [options]        run the device daemon (same as ``python -m device serve``)
    spu status --connect URL   show a running daemon's identity, configuration and state
    spu demo                   start a private daemon and solve a linear system on it
"""

from __future__ import annotations

import argparse
import os
import sys

from host.errors import DeviceError

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
        "demo", help="solve a random linear system on a private daemon",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo.add_argument("--n", type=int, default=32, help="problem size")
    demo.add_argument("--condition", type=float, default=10.0, help="condition number of A")
    demo.add_argument("--t-sample", type=float, default=1000.0,
                      help="sampling time, units of tau")
    demo.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        # Become the daemon process itself, so signals and the exit code are the daemon's.
        os.execv(sys.executable, [sys.executable, "-m", "device", *argv])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "status":
            return _status(args.connect, args.timeout)
        from host.demo import run_demo

        run_demo(n=args.n, condition=args.condition, t_sample=args.t_sample, seed=args.seed)
        return 0
    except DeviceError as error:
        print(f"spu: {error}", file=sys.stderr)
        return 1


def _status(endpoint: str, timeout: float) -> int:
    from host.client import Device

    with Device.connect(endpoint, timeout=timeout, retries=0) as device:
        info, state = device.info, device.status()
    print(f"{info['implementation']} {info['implementation_version']} at {endpoint}, protocol "
          f"{'.'.join(map(str, info['protocol']))}, boot id {info['boot_id']}")
    for key, value in info["config"].items():
        print(f"  config.{key} = {value}")
    for key, value in state.items():
        print(f"  {key} = {value}")
    return 0
