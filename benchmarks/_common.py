"""Helpers shared by the benchmarks: timing loops, statistics, a foreign-CPU meter, result rows
and the raw-pyzmq reference server.

Every benchmark reports a *ratio* to a reference measured in the same run, never an absolute
time: the machine (2 vCPU, shared) drifts by 10-30 % between runs, a ratio much less.

Run as a script, this module is the reference server: ``python _common.py echo|sink`` binds a
ROUTER on a free loopback TCP port, prints ``READY <endpoint>`` and serves until killed.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

Work = Callable[[int], None]
"""A workload: ``work(count)`` does ``count`` units of work (steps, matvecs, round trips...)."""


# --- statistics --------------------------------------------------------------------------------

def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# --- timing ------------------------------------------------------------------------------------

def calibrate(work: Work, min_seconds: float, warmup: int = 2) -> int:
    """Warm ``work`` up, then find a power-of-two count whose call lasts ``min_seconds``."""
    for _ in range(warmup):
        work(1)
    count = 1
    while True:
        started = time.perf_counter()
        work(count)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return count
        # Jump close to the target, at most 16x at a time (the first calls may be noisy).
        factor = min(16.0, 1.2 * min_seconds / max(elapsed, 1e-9))
        count = max(count * 2, 2 ** math.ceil(math.log2(count * factor)))


def interleaved_rates(works: dict[str, Work], *, reps: int, min_seconds: float,
                      warmup: int = 2) -> dict[str, list[float]]:
    """Units of work per second of each workload, ``reps`` times each.

    The workloads alternate (A B C A B C ...) so that slow drift of the machine hits all of them
    alike; each repetition lasts at least ``min_seconds`` after calibration.
    """
    counts = {name: calibrate(work, min_seconds, warmup) for name, work in works.items()}
    rates: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(reps):
        for name, work in works.items():
            started = time.perf_counter()
            work(counts[name])
            rates[name].append(counts[name] / (time.perf_counter() - started))
    return rates


def interleaved_samples(works: dict[str, Callable[[], None]], *, blocks: int, per_block: int,
                        warmup: int) -> dict[str, list[float]]:
    """Wall seconds of every single call, ``blocks`` x ``per_block`` per workload, alternating
    blocks between the workloads (for latency distributions and slow, large operations)."""
    for work in works.values():
        for _ in range(warmup):
            work()
    samples: dict[str, list[float]] = {name: [] for name in works}
    clock = time.perf_counter_ns
    for _ in range(blocks):
        for name, work in works.items():
            out = samples[name]
            for _ in range(per_block):
                started = clock()
                work()
                out.append((clock() - started) * 1e-9)
    return samples


def interleaved_cpu(works: dict[str, tuple[Callable[[], None], int]], *, blocks: int,
                    per_block: int) -> dict[str, float]:
    """CPU seconds per call of each workload, this process's and its peer's together
    (``works``: name -> (call, pid of the peer process that serves it)), over ``blocks``
    alternating blocks of ``per_block`` calls. CPU time, unlike wall time, hardly changes with
    what other processes do, so it shows where a round trip's own work goes."""
    spent = dict.fromkeys(works, 0.0)
    for _ in range(blocks):
        for name, (work, pid) in works.items():
            before = time.process_time() + _process_ticks(pid) / _TICK
            for _ in range(per_block):
                work()
            spent[name] += time.process_time() + _process_ticks(pid) / _TICK - before
    return {name: total / (blocks * per_block) for name, total in spent.items()}


# --- foreign CPU load --------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_ticks() -> tuple[int, int]:
    """(busy, steal) ticks of the whole machine since boot."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq, steal  # guest time is included in user


def _process_ticks(pid: int | str) -> int:
    """utime + stime of a process (all its threads) plus its waited-for children."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:  # gone: its time is lost to the meter
        return 0
    return sum(int(v) for v in fields[11:15])  # utime stime cutime cstime


class ForeignLoad:
    """CPU taken by others while the block runs, in cores, from /proc/stat (its per-state jiffies).

    ``cores``: busy time of the guest minus ours (this process, ``pids`` - our daemon or
    reference server - and waited-for children). ``steal``: time the hypervisor gave to other
    guests. Both 0 where /proc is unavailable.
    """

    def __init__(self, pids: Iterable[int] = ()) -> None:
        self.cores = self.steal = 0.0
        self._pids = tuple(pids)
        self._start: tuple[float, tuple[int, int], int] | None = None

    def _ours(self) -> int:
        return _process_ticks("self") + sum(_process_ticks(pid) for pid in self._pids)

    def __enter__(self) -> ForeignLoad:
        try:
            self._start = (time.monotonic(), _cpu_ticks(), self._ours())
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is None:
            return
        started, (busy, steal), ours = self._start
        wall = time.monotonic() - started
        (busy_now, steal_now), ours_now = _cpu_ticks(), self._ours()
        if wall > 0:
            self.cores = max(0.0, (busy_now - busy - (ours_now - ours)) / _TICK / wall)
            self.steal = (steal_now - steal) / _TICK / wall


NOISY_CORES = 0.3
"""A measurement during which others took more than this many cores (foreign + steal) is
repeated (up to ``retries`` times) and the quietest attempt kept."""

T = TypeVar("T")


def quietest(measure_once: Callable[[], T], *, retries: int, pids: Iterable[int] = (),
             what: str = "") -> tuple[T, ForeignLoad]:
    """``measure_once()`` under a :class:`ForeignLoad` meter, repeated up to ``retries`` times
    while the machine was busy with others; the result of the quietest attempt and its load."""
    pids = tuple(pids)
    best: tuple[T, ForeignLoad] | None = None
    for attempt in range(1 + retries):
        with ForeignLoad(pids) as load:
            result = measure_once()
        if best is None or load.cores + load.steal < best[1].cores + best[1].steal:
            best = (result, load)
        if load.cores + load.steal <= NOISY_CORES:
            break
        if attempt < retries:
            print(f"  {what}: others took {load.cores:.2f} cores + {load.steal:.2f} steal; "
                  "measuring again", file=sys.stderr, flush=True)
    assert best is not None
    return best


# --- results -----------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the results table: the product's figure against the reference's.

    For rates (``time=False``) the ratio is product / reference and the target a minimum; for
    times (``time=True``) it is product / reference too, "x the reference", and the target a
    maximum.
    """

    benchmark: str
    case: str
    product: float
    reference: float
    unit: str
    target: float | None = None
    time: bool = False
    foreign_cores: float = 0.0
    steal_cores: float = 0.0

    @property
    def ratio(self) -> float:
        return self.product / self.reference

    @property
    def target_text(self) -> str:
        if self.target is None:
            return ""
        return f"{'<=' if self.time else '>='} {self.target:g}"

    @property
    def met(self) -> str:
        if self.target is None:
            return ""
        ok = self.ratio <= self.target if self.time else self.ratio >= self.target
        return "yes" if ok else "NO"


def print_table(rows: Sequence[Row], file=None) -> None:
    """A fixed-width table of ``rows``."""
    header = ("benchmark", "case", "product", "reference", "unit", "ratio", "target", "met",
              "foreign", "steal")
    lines = [header]
    for row in rows:
        lines.append((row.benchmark, row.case, f"{row.product:.3g}", f"{row.reference:.3g}",
                      row.unit, f"{row.ratio:.3g}", row.target_text, row.met,
                      f"{row.foreign_cores:.2f}", f"{row.steal_cores:.2f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = file or sys.stdout
    for k, line in enumerate(lines):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip(), file=out)
        if k == 0:
            print("  ".join("-" * width for width in widths), file=out)
    print("ratio = product / reference (rates: higher is better; times in s: lower is better). "
          "foreign / steal: CPU cores\ntaken meanwhile by other processes / by other VMs "
          "(hypervisor steal).", file=out)


def base_parser(description: str) -> argparse.ArgumentParser:
    """A benchmark's command line, with the option every benchmark shares (--retries)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--retries", type=int, default=1,
                        help="extra attempts of a measurement taken while the machine was busy")
    return parser


# --- the raw-pyzmq reference server ------------------------------------------------------------

class RawServer:
    """A minimal ROUTER in a subprocess on a free tcp loopback port (the reference peer).

    mode ``echo`` returns every message as is; mode ``sink`` takes ``[header, array]`` (header:
    the array's shape, "rows cols" in ASCII), views the array with ``np.frombuffer`` (no copy)
    and answers a small ack.
    """

    def __init__(self, mode: str) -> None:
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), mode],
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.close()
            raise RuntimeError(f"the reference server ({mode}) did not start")
        self.endpoint = line.split()[1]

    @property
    def pid(self) -> int:
        return self.process.pid

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(mode: str) -> None:
    import signal

    import numpy as np
    import zmq

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.linger = 0
    router.bind("tcp://127.0.0.1:0")
    print(f"READY {router.last_endpoint.decode()}", flush=True)
    if mode == "echo":
        while True:
            router.send_multipart(router.recv_multipart())
    while True:
        identity, header, payload = router.recv_multipart(copy=False)
        shape = tuple(int(v) for v in bytes(header.buffer).split())
        array = np.frombuffer(payload.buffer, dtype="<f8").reshape(shape)
        assert array.shape == shape
        router.send_multipart([identity, b"ack"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="raw-pyzmq reference server of the benchmarks")
    parser.add_argument("mode", choices=("echo", "sink"))
    _serve(parser.parse_args().mode)
