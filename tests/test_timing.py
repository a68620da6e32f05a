"""The timing model's arithmetic against the TNGD paper's numbers (papers.md section 1.6)."""

from __future__ import annotations

import pytest

from timing import LinkModel, Phase, SimClock, TimingModel


def tngd_upload_values(n: int, batch: int = 64, outputs: int = 10) -> int:
    """Gradient plus the three factored arrays: N + m (m + 2N) with m = b d_z."""
    m = batch * outputs
    return n + m * (m + 2 * n)


def test_paper_upload_and_readout_times() -> None:
    link = LinkModel()  # 16 bits, 50 Gb/s
    assert tngd_upload_values(10**4) == pytest.approx(1.3e7, rel=0.02)
    assert link.transfer_ns(tngd_upload_values(10**4)) == pytest.approx(4.2e6, rel=0.01)
    assert link.transfer_ns(tngd_upload_values(10**5)) == pytest.approx(41e6, rel=0.01)
    assert link.transfer_ns(10**4) == 3200  # readout of N = 10^4 values: 3.2 us


def test_transfer_rounds_up_and_adds_latency() -> None:
    assert LinkModel().transfer_ns(1) == 1  # 0.32 ns -> 1 ns
    assert LinkModel().transfer_ns(0) == 0
    assert LinkModel(latency_ns=500).transfer_ns(10**4) == 3700
    assert LinkModel(bits_per_value=8, bandwidth_bps=1e9).transfer_ns(1000) == 8000
    with pytest.raises(ValueError):
        LinkModel(bandwidth_bps=0)


def test_analog_time_is_the_run_itself_and_the_clock_only_moves_forward() -> None:
    model = TimingModel()
    assert model.evolve(50_000) == {Phase.ANALOG: 50_000}  # t = 50 tau at tau = 1 us
    clock = SimClock()
    clock.advance(model.upload(10**4, cells=100))
    clock.advance(model.evolve(50_000))
    clock.advance(model.readout(cells=10**4, n_values=10**4))
    assert clock.now_ns == 3200 + 50_000 + 3200
    with pytest.raises(ValueError):
        clock.advance({Phase.ANALOG: -1})
