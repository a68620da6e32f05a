"""The timing model's arithmetic against the TNGD paper's numbers (arXiv 2405.13817, App. C)."""

from __future__ import annotations

import math

import pytest

from spusim.timing import ConverterModel, LinkModel, Phase, SimClock, TimingModel


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


# --- the hybrid loop ----------------------------------------------------------------------------

from spusim.timing.digital import ACCELERATORS, Measured, Roofline, Work  # noqa: E402
from spusim.timing.optimizers import OPTIMIZERS, Problem, digital_work, estimate  # noqa: E402
from spusim.timing.pipeline import IterationCosts, schedule  # noqa: E402
from spusim.timing.report import breakdown_table, chrome_trace, schedule_spans  # noqa: E402

UPLOAD = {Phase.TRANSFER_IN: 100, Phase.DAC: 10}
READOUT = {Phase.ADC: 5, Phase.TRANSFER_OUT: 20}


def steady_iteration(digital_ns: int, analog_ns: int, delay_ns: int = 0):  # type: ignore[no-untyped-def]
    loop = schedule([IterationCosts(digital_ns, UPLOAD, analog_ns, READOUT, delay_ns)] * 6)
    return loop, loop.iteration_ns[-1]


def test_a_long_digital_step_hides_the_analog_run() -> None:
    loop, iteration = steady_iteration(digital_ns=1000, analog_ns=300)
    assert iteration == 100 + 1000 + 20  # transfer_in + digital + transfer_out
    assert loop.dominant_phase() == Phase.DIGITAL
    assert Phase.ANALOG not in {event.phase for event in loop.critical_path()}


def test_a_short_digital_step_puts_the_analog_run_on_the_critical_path() -> None:
    loop, iteration = steady_iteration(digital_ns=100, analog_ns=3000)
    assert iteration == 100 + 10 + 3000 + 5 + 20
    assert loop.dominant_phase() == Phase.ANALOG
    assert [e.phase for e in loop.critical_path()] == [
        Phase.TRANSFER_IN, Phase.DAC, Phase.ANALOG, Phase.ADC, Phase.TRANSFER_OUT]


def test_the_delay_between_measurement_and_upload_is_explicit() -> None:
    loop, iteration = steady_iteration(digital_ns=100, analog_ns=3000, delay_ns=500)
    assert iteration == 500 + 100 + 10 + 3000  # t_d exceeds adc + transfer_out (25 ns)
    delays = [e for e in loop.events if e.phase == Phase.DELAY]
    assert len(delays) == 5 and all(e.duration_ns == 500 for e in delays)
    _, short = steady_iteration(digital_ns=100, analog_ns=3000, delay_ns=10)
    assert short == 100 + 10 + 3000 + 5 + 20  # a t_d shorter than the readout changes nothing


def test_critical_path_is_a_gapless_chain_ending_at_the_estimate() -> None:
    loop, _ = steady_iteration(digital_ns=700, analog_ns=650, delay_ns=200)
    path = loop.critical_path()
    assert path[-1].phase == Phase.TRANSFER_OUT
    for before, after in zip(path, path[1:], strict=False):
        assert after.cause is before and after.start_ns == before.end_ns
    for lane in ("host", "device"):  # each does one thing at a time
        spans = sorted((e.start_ns, e.end_ns) for e in loop.events
                       if e.lane == lane and e.duration_ns)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:],
                                                                         strict=False))


def test_tngd_iteration_at_the_paper_settings() -> None:
    """N = 1e4, b = 64, d_z = 10, t = 50 tau: 4.2 ms upload + 50 us analog + 3.2 us readout."""
    problem = Problem(10**4)
    tngd = estimate("tngd", problem, Roofline(ACCELERATORS["a100"]))
    assert tngd.critical_ns[Phase.TRANSFER_IN] == pytest.approx(4.23e6, rel=0.01)
    assert tngd.critical_ns[Phase.TRANSFER_OUT] == 3200
    assert tngd.dominant == Phase.TRANSFER_IN
    assert tngd.iteration_ns == sum(tngd.critical_ns.values())


def test_digital_work_grows_as_the_papers_table_1() -> None:
    """Exponent of N between N = 1e5 and 1e6 at b = 64, d_z = 10: 3 for NGD, 1 for the rest."""
    expected = {"sgd": 1, "adam": 1, "ngd": 3, "ngd-cg": 1, "ngd-woodbury": 1, "tngd": 1}
    for optimizer in OPTIMIZERS:
        small, large = (digital_work(optimizer, Problem(n)).flops for n in (10**5, 10**6))
        assert math.log10(large / small) == pytest.approx(expected[optimizer], abs=0.05)


def test_roofline_and_measured_compute() -> None:
    gpu = Roofline(ACCELERATORS["a100"])
    assert gpu.ns(Work(19.5e12, 0)) == 10**9  # one second of peak FP32
    assert gpu.ns(Work(0, 2.039e12)) == 10**9  # one second of memory traffic
    assert Roofline(ACCELERATORS["a100"], efficiency=0.5).ns(Work(19.5e12, 0)) == 2 * 10**9
    assert Measured(scale=0.1).ns(0.25) == 25_000_000
    with pytest.raises(ValueError):
        Measured(scale=0)


def test_chrome_trace_and_breakdown() -> None:
    loop, _ = steady_iteration(digital_ns=1000, analog_ns=300, delay_ns=50)
    trace = chrome_trace(schedule_spans(loop))
    boxes = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert {e["cat"] for e in boxes} == {"host", "device", "device-delay"}
    digital = [e for e in boxes if e["name"] == "digital"]
    assert len(digital) == 7 and digital[0]["dur"] == 1.0  # 1000 ns = 1 us
    names = {e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert names == {"host", "device", "device-delay"}
    table = breakdown_table({"analog": 750, "transfer_in": 250})
    assert "75.0%" in table and "25.0%" in table and "1 us" in table


@pytest.mark.parametrize("bad", [{"conversion_ns": math.nan}, {"settle_tau_ns": math.inf},
                                 {"channels": -1}, {"bits": 0}])
def test_converter_parameters_are_validated(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ConverterModel(**bad)  # type: ignore[arg-type]


def test_call_latency_counts_sequential_model_calls() -> None:
    """NGD-CG's 2c sequential products pay the latency 2c times; one SGD step pays it twice."""
    slow = Roofline(ACCELERATORS["a100"], call_latency_ns=10_000)
    fast = Roofline(ACCELERATORS["a100"])
    problem = Problem(10**4, cg_iterations=200)
    for optimizer, calls in (("sgd", 2), ("ngd-cg", 2 + 400)):
        work = digital_work(optimizer, problem)
        assert slow.ns(work) - fast.ns(work) == pytest.approx(calls * 10_000, abs=1)


def test_the_loop_clock_advances_one_iteration_at_a_time() -> None:
    """Iterations with different digital times, added one by one, as a training loop would."""
    from spusim.timing.pipeline import LoopClock

    costs = [IterationCosts(d, UPLOAD, 300, READOUT) for d in (1000, 50, 2000, 50)]
    clock = LoopClock()
    took = [clock.add(cost) for cost in costs]
    assert took == schedule(costs).iteration_ns
    assert clock.now_ns == sum(took) == clock.schedule.total_ns
    assert took[3] == 100 + max(50, 10 + 300 + 5) + 20  # a short digital step: analog-bound
    assert took[2] == 100 + 2000 + 20  # a long one hides the analog run


# --- the digital clock's spec and the device between calls -------------------------------------

from spusim.timing.digital import (  # noqa: E402
    DEFAULT_CALL_LATENCY_NS,
    DEFAULT_EFFICIENCY,
    parse_digital,
)
from spusim.timing.pipeline import LoopClock  # noqa: E402
from spusim.timing.serial import SerialClock  # noqa: E402


def test_the_default_digital_clock_is_the_papers_a100_roofline() -> None:
    clock = parse_digital()
    assert clock == Roofline(ACCELERATORS["a100"], DEFAULT_EFFICIENCY, DEFAULT_CALL_LATENCY_NS)
    assert not clock.measured and clock.label.startswith("roofline a100")
    work = Work(19.5e12 * DEFAULT_EFFICIENCY, 0, calls=3)  # one second of FP32 at efficiency
    assert clock.price(work, host_seconds=123.0) == 10**9 + 3 * DEFAULT_CALL_LATENCY_NS
    assert clock.price(work, 0.0) == clock.price(work, 5.0)  # the host's time plays no part


@pytest.mark.parametrize("spec, expected", [
    ("roofline:a100:0.5:3", Roofline(ACCELERATORS["a100"], 0.5, 3000.0)),
    ("roofline::0.25", Roofline(ACCELERATORS["a100"], 0.25, DEFAULT_CALL_LATENCY_NS)),
    (" Roofline:epyc-7763", Roofline(ACCELERATORS["epyc-7763"], DEFAULT_EFFICIENCY,
                                     DEFAULT_CALL_LATENCY_NS)),
    ("measured", Measured(1.0)), ("measured:0.1", Measured(0.1))])
def test_digital_specs(spec: str, expected: object) -> None:
    assert parse_digital(spec) == expected


def test_a_measured_clock_says_so() -> None:
    clock = parse_digital("measured:0.5")
    assert clock.measured and clock.label == "measured (host wall time x 0.5)"
    assert clock.price(Work(1e15, 1e15, 100), host_seconds=0.002) == 1_000_000


@pytest.mark.parametrize("spec, says", [
    ("gpu", "not a known form"), ("roofline:h100", "unknown accelerator 'h100'"),
    ("roofline:a100:2", "efficiency must be in (0, 1]"), ("roofline:a100:x", "EFFICIENCY"),
    ("roofline:a100:1:-5", "call_latency_ns must be >= 0"), ("measured:0", "scale"),
    ("measured:inf", "SCALE must be a number"), ("measured:1:2", "not a known form")])
def test_bad_digital_specs_name_the_allowed_forms(spec: str, says: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_digital(spec)
    message = str(error.value)
    assert says in message and "roofline[:ACCELERATOR[:EFFICIENCY[:LATENCY_US]]]" in message
    assert "measured[:SCALE]" in message


@pytest.mark.parametrize("clock_type", [SerialClock, LoopClock])
def test_the_device_is_held_between_a_readout_and_the_next_upload(clock_type: type) -> None:
    """The emulator's rule: from one upload to the next the state evolves its run t and the
    delay t_d, never the host's compute time. A digital step of 1 ms (1000 tau) against
    t = 3 us and t_d = 0.5 us: the clocks' device evolves 3.5 us per iteration, exactly what
    the emulator runs, and the delay runs after the measurement, hidden under the digital step."""
    cost = IterationCosts(1_000_000, UPLOAD, 3000, READOUT, delay_ns=500)
    clock = clock_type()
    took = [clock.add(cost) for _ in range(5)]
    loop = clock.schedule
    assert [loop.evolved_ns(k) for k in range(4)] == [3000 + 500] * 4
    assert loop.evolved_ns(4) == 3000  # no upload after the last one yet, so no delay
    analog = [e for e in loop.events if e.phase == Phase.ANALOG]
    for event in (e for e in loop.events if e.phase == Phase.DELAY):
        assert event.start_ns == analog[event.iteration].end_ns  # from the measurement on
    if clock_type is SerialClock:
        assert took[1:] == [1_000_000 + 110 + 3000 + 25] * 4
        assert SerialClock().add(IterationCosts(0, UPLOAD, 3000, READOUT, 500)) == 3135


def test_the_serial_clock_is_a_schedule_with_a_critical_path() -> None:
    """Algorithm 1 in a row: a long delay is on the critical path, between the measurement and
    the next upload."""
    clock = SerialClock()
    for _ in range(3):
        clock.add(IterationCosts(100, UPLOAD, 3000, READOUT, delay_ns=2000))
    later = (2000 - 25) + 110 + 3000 + 25  # t_d from the measurement
    assert clock.iteration_ns[1:] == [later, later]
    path = [e.phase for e in clock.schedule.critical_path()]
    assert path == [Phase.DELAY, Phase.TRANSFER_IN, Phase.DAC, Phase.ANALOG, Phase.ADC,
                    Phase.TRANSFER_OUT]
    first = 100 + 110 + 3000 + 25  # no delay before the first upload
    assert clock.now_ns == clock.schedule.total_ns == first + 2 * later
