"""A bounded soak of one daemon: several client threads send a fixed number of mixed requests
(loopback only), one of them working under the device's lease.

Checked: every call gets its answer (no timeout after retries, no INTERNAL), the daemon counted
as many requests as the clients sent, the leaseholder's results are exactly those of an
undisturbed device, and the daemon's resident memory stops growing. Reported: throughput and
latency percentiles (docs/reliability.md).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spusim import Device, DeviceError
from spusim.protocol import ErrorCode

N = 4
RUN_NS = 10_000  # 100 ADC samples
A = np.array([[2.0, 0.3, 0.0, 0.1], [0.3, 1.5, 0.2, 0.0], [0.0, 0.2, 1.0, 0.1],
              [0.1, 0.0, 0.1, 1.2]])
B = np.array([1.0, -0.5, 0.3, 0.8])
# Errors the mix provokes on purpose: other clients' state, the lease.
EXPECTED_ERRORS = {ErrorCode.NOT_PROGRAMMED, ErrorCode.NO_SAMPLES, ErrorCode.LEASED}


@dataclass
class SoakReport:
    clients: int
    calls: int = 0
    seconds: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # anything but a result or an expected error
    leased_blocks: int = 0  # the leaseholder's experiments, each checked exactly
    rss_mib: list[float] = field(default_factory=list)  # daemon RSS at each quarter
    requests_counted: int = 0  # by the daemon

    @property
    def throughput(self) -> float:
        return self.calls / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3)

    def summary(self) -> str:
        rss = ", ".join(f"{value:.1f}" for value in self.rss_mib)
        return (f"{self.clients} clients, {self.calls} calls in {self.seconds:.2f} s: "
                f"{self.throughput:.0f} calls/s; latency p50 {self.percentile_ms(50):.2f} ms, "
                f"p99 {self.percentile_ms(99):.2f} ms, max {max(self.latencies_s) * 1e3:.1f} ms; "
                f"{self.leased_blocks} leased experiments exact; daemon RSS MiB by quarter "
                f"[{rss}]; outcomes {dict(self.outcomes)}; failures {len(self.failures)}")


def rss_mib(pid: int) -> float:
    """Resident set size of process ``pid`` (Linux /proc), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def experiment(device: Device, seed: int) -> np.ndarray:
    """Deterministic from any prior state: program (x = 0), bias, seeded run, read."""
    device.program(A, reset_state=True)
    device.set_bias(B)
    device.run(RUN_NS, seed=seed, clear=True)
    return device.read().mean


def soak(endpoint: str, pid: int, *, clients: int = 4, calls_per_client: int = 250,
         max_seconds: float = 120.0, timeout: float = 5.0, retries: int = 2,
         seed: int = 0, **connect: Any) -> SoakReport:
    """Run the soak against the daemon at ``endpoint`` (process ``pid``); bounded by count and
    by ``max_seconds`` of wall time."""
    report = SoakReport(clients)
    lock = threading.Lock()
    with Device.connect(endpoint, timeout=timeout, retries=retries, **connect) as probe:
        references = {s: experiment(probe, s) for s in range(4)}
        counted_before = probe.status()["counters"]["requests"]
    deadline = time.monotonic() + max_seconds
    quarters = {calls_per_client * clients * k // 4 for k in range(1, 5)}
    sent = Counter[int]()

    def client(index: int) -> None:
        rng = np.random.default_rng([seed, index])
        latencies, outcomes, failures = [], Counter[str](), []
        blocks = 0
        device = Device.connect(endpoint, timeout=timeout, retries=retries, **connect)
        try:
            for _ in range(calls_per_client):
                if time.monotonic() > deadline:
                    break
                started = time.perf_counter()
                try:
                    if index == 0 and rng.random() < 0.2:  # the leaseholder's experiment
                        which = int(rng.integers(4))
                        with device.lease(ttl_s=10.0, wait_s=timeout):
                            mean = experiment(device, which)
                        if not np.array_equal(mean, references[which]):
                            failures.append(f"leased experiment {which} disturbed: {mean}")
                        blocks += 1
                        outcomes["leased experiment"] += 1
                    else:
                        call(device, rng)
                        outcomes["ok"] += 1
                except DeviceError as error:
                    outcomes[str(error.code)] += 1
                    if error.code not in EXPECTED_ERRORS:
                        failures.append(f"client {index}: {error}")
                latencies.append(time.perf_counter() - started)
                with lock:
                    report.calls += 1
                    if report.calls in quarters:
                        report.rss_mib.append(rss_mib(pid))
        finally:
            sent[index] = device.requests_sent
            device.close()
        with lock:
            report.latencies_s += latencies
            report.outcomes.update(outcomes)
            report.failures += failures
            report.leased_blocks += blocks

    threads = [threading.Thread(target=client, args=(i,), name=f"soak-{i}")
               for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max_seconds + 60)
    report.seconds = time.perf_counter() - started
    if any(thread.is_alive() for thread in threads):
        report.failures.append("a client thread did not finish")
    with Device.connect(endpoint, timeout=timeout, retries=retries, **connect) as probe:
        counted = probe.status()["counters"]["requests"] - counted_before
        report.requests_counted = counted - probe.requests_sent  # less this probe's
        if report.requests_counted != sum(sent.values()):
            report.failures.append(f"the daemon counted {report.requests_counted} requests, "
                                   f"the clients sent {sum(sent.values())}")
    return report


MIX = {  # op: (share of the calls, the call)
    "ping": (0.2, lambda device: device.ping()),
    "status": (0.2, lambda device: device.status()),
    "program": (0.1, lambda device: device.program(A)),
    "set_bias": (0.1, lambda device: device.set_bias(B)),
    "run": (0.2, lambda device: device.run(RUN_NS)),
    "read": (0.2, lambda device: device.read()),
}


def call(device: Device, rng: np.random.Generator) -> None:
    """One call of the mix, chosen with the shares of MIX."""
    shares = [share for share, _ in MIX.values()]
    _, action = list(MIX.values())[int(rng.choice(len(MIX), p=shares))]
    action(device)
