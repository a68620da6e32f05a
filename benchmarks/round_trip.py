"""Daemon round trip: ``Device.ping()`` against a daemon from ``Device.spawn()``, as a ratio to a
raw pyzmq DEALER/ROUTER ping-pong (8-byte payload, echo ROUTER in a subprocess, tcp loopback).

Both peers run side by side; blocks of round trips alternate between them so drift hits both
alike. Every round trip is timed alone (perf_counter_ns around the call); the table gives the
median and the 99th percentile of each, and their ratio product / raw (lower is better). A
third row gives the CPU time of a round trip, client and server together (no target): on a
shared machine it moves far less than wall time, and it is what the Python on both sides costs.
"""

from __future__ import annotations

import sys

import zmq

from _common import (
    RawServer,
    Row,
    base_parser,
    interleaved_cpu,
    interleaved_samples,
    median,
    percentile,
    print_table,
    quietest,
)
from spusim import Device

TARGET = 2.0  # round trip <= 2x raw pyzmq


def measure(blocks: int = 20, per_block: int = 500, warmup: int = 500,
            retries: int = 1) -> list[Row]:
    context = zmq.Context.instance()
    with RawServer("echo") as server, Device.spawn() as device:
        dealer = context.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(server.endpoint)
        payload = b"8 bytes!"

        def raw() -> None:
            dealer.send(payload)
            dealer.recv()

        daemon = device.process.process.pid
        try:
            samples, load = quietest(
                lambda: interleaved_samples({"raw": raw, "ping": device.ping}, blocks=blocks,
                                            per_block=per_block, warmup=warmup),
                retries=retries, pids=(server.pid, daemon), what="round trip")
            # blocks long enough (~0.5 s) for the 10 ms ticks of /proc's CPU times
            cpu = interleaved_cpu({"raw": (raw, server.pid), "ping": (device.ping, daemon)},
                                  blocks=4, per_block=5000)
        finally:
            dealer.close()
    rows = []
    for label, statistic in (("median", median), ("p99", lambda v: percentile(v, 99))):
        rows.append(Row("round trip", f"Device.ping {label}", statistic(samples["ping"]),
                        statistic(samples["raw"]), "s", target=TARGET, time=True,
                        foreign_cores=load.cores, steal_cores=load.steal))
    rows.append(Row("round trip", "Device.ping CPU, both sides", cpu["ping"], cpu["raw"], "s",
                    time=True, foreign_cores=load.cores, steal_cores=load.steal))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=20, help="alternating blocks per peer")
    parser.add_argument("--per-block", type=int, default=500, help="round trips per block")
    parser.add_argument("--warmup", type=int, default=500, help="untimed round trips per peer")
    args = parser.parse_args(argv)
    print_table(measure(args.blocks, args.per_block, args.warmup, args.retries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
