"""Upload throughput: ``Device.program(A)`` of a symmetric 2048 x 2048 float64 matrix (32 MiB)
as a ratio to raw zero-copy pyzmq (a DEALER sends ``[small header, array]`` with ``copy=False``
to a ROUTER in a subprocess that views it with ``np.frombuffer`` and answers a small ack).

Both are timed from the send until the reply is in (bytes of A / wall s). ``program`` validates
(one pass: finite, symmetric) and stores A; the eigendecomposition is deferred to the first
``run`` (``EmulatedSPU._prepare``), so none is timed here. Transfers alternate between the two
peers.
"""

from __future__ import annotations

import sys

import numpy as np
import zmq

from _common import RawServer, Row, base_parser, interleaved_samples, median, print_table, quietest
from spusim import Device

N = 2048
TARGET = 0.5


def _symmetric(n: int) -> np.ndarray:
    m = np.random.default_rng(n).standard_normal((n, n))
    return np.ascontiguousarray((m + m.T) / 2 + n * np.eye(n))


def measure(n: int = N, reps: int = 15, warmup: int = 3, retries: int = 1) -> list[Row]:
    A = _symmetric(n)
    context = zmq.Context.instance()
    with RawServer("sink") as server, Device.spawn() as device:
        dealer = context.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(server.endpoint)
        header = f"{n} {n}".encode()

        def raw() -> None:
            dealer.send_multipart([header, A], copy=False)
            dealer.recv()

        try:
            seconds, load = quietest(
                lambda: interleaved_samples({"raw": raw, "program": lambda: device.program(A)},
                                            blocks=reps, per_block=1, warmup=warmup),
                retries=retries, pids=(server.pid, device.process.process.pid), what="upload")
        finally:
            dealer.close()
    return [Row("upload", f"Device.program {n}x{n} f64", A.nbytes / median(seconds["program"]),
                A.nbytes / median(seconds["raw"]), "B/s", target=TARGET,
                foreign_cores=load.cores, steal_cores=load.steal)]


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=N, help="matrix size")
    parser.add_argument("--reps", type=int, default=15, help="timed uploads per peer")
    parser.add_argument("--warmup", type=int, default=3, help="untimed uploads per peer")
    args = parser.parse_args(argv)
    print_table(measure(args.n, args.reps, args.warmup, args.retries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
