"""Bounded soak tests: several clients, mixed requests, one daemon subprocess on loopback
(tests/soak.py). Figures for docs/reliability.md come from ``-m slow -s``."""

from __future__ import annotations

import pytest

from spusim.hil.plugin import SpuDaemon
from tests.soak import SoakReport, soak

pytestmark = pytest.mark.daemon

DEVICE = {"cells": 16, "kappa0": 0.01}
FAULTS = {"fault_drop_reply": "0.03", "fault_delay_reply": "0.03", "fault_delay_ms": 400,
          "fault_busy": "0.03", "fault_seed": 7}


def run_soak(daemon: SpuDaemon, clients: int, calls_per_client: int,
             **options: float) -> SoakReport:
    assert daemon.process is not None
    report = soak(daemon.endpoint, daemon.process.process.pid, clients=clients,
                  calls_per_client=calls_per_client, **options)  # type: ignore[arg-type]
    print(f"\nsoak: {report.summary()}")
    assert report.failures == []  # every call answered: nothing lost, nothing disturbed
    assert report.calls == clients * calls_per_client  # not cut short by the time bound
    assert report.leased_blocks > 0
    return report


@pytest.mark.spu_config(**DEVICE)
def test_soak_mixed_clients_briefly(spu_daemon: SpuDaemon) -> None:
    report = run_soak(spu_daemon, clients=4, calls_per_client=250, max_seconds=60)
    assert report.rss_mib[-1] - report.rss_mib[0] < 16


@pytest.mark.spu_config(**DEVICE, **FAULTS)
def test_soak_through_dropped_delayed_and_busy_replies_briefly(spu_daemon: SpuDaemon) -> None:
    # Calls time out after 0.25 s, so 400 ms delays and drops force retries that the reply
    # cache answers; 4 retries make a call's loss (5 faults in a row) negligible.
    report = run_soak(spu_daemon, clients=3, calls_per_client=60, max_seconds=60,
                      timeout=0.25, retries=4)
    assert report.requests_counted > report.calls  # retries happened


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.spu_config(**DEVICE)
def test_soak_mixed_clients(spu_daemon: SpuDaemon) -> None:
    # 80 000 calls: each client's session keeps at most 32 replies (256 KiB), full after its
    # first calls, so the daemon's memory must be flat over the second half.
    report = run_soak(spu_daemon, clients=8, calls_per_client=10_000, max_seconds=900)
    assert report.rss_mib[-1] - report.rss_mib[1] < 4


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.spu_config(**DEVICE, **FAULTS)
def test_soak_through_dropped_delayed_and_busy_replies(spu_daemon: SpuDaemon) -> None:
    report = run_soak(spu_daemon, clients=4, calls_per_client=2000, max_seconds=900,
                      timeout=0.25, retries=4)
    assert report.rss_mib[-1] - report.rss_mib[1] < 8
