"""timing.multichip: K chips' device part of an iteration, against closed forms."""

from __future__ import annotations

import pytest

from spusim.timing.model import Phase
from spusim.timing.multichip import chips_schedule, combine
from spusim.timing.pipeline import IterationCosts
from spusim.timing.serial import SerialClock


def chip(tin: int, dac: int, analog: int, adc: int, tout: int, digital: int = 700,
         delay: int = 0) -> IterationCosts:
    return IterationCosts(digital, {Phase.TRANSFER_IN: tin, Phase.DAC: dac}, analog,
                          {Phase.ADC: adc, Phase.TRANSFER_OUT: tout}, delay)


def device_ns(cost: IterationCosts) -> int:
    return sum(cost.upload.values()) + cost.analog_ns + sum(cost.readout.values())


def test_one_chip_is_that_chip():
    one = chip(300, 20, 5000, 30, 40)
    assert combine([one]) == one
    assert combine([one], "shared") == one


def test_separate_links_take_the_slowest_chip():
    chips = [chip(300, 20, 5000, 30, 40), chip(900, 20, 5000, 30, 400), chip(10, 1, 7000, 1, 1)]
    for cost in (chips, chips[::-1]):
        assert chips_schedule(cost).iteration_ns == [7013]
        combined = combine(cost)
        assert device_ns(combined) == 7013 and combined.analog_ns == 7000
        assert combined.upload == {Phase.TRANSFER_IN: 10, Phase.DAC: 1}


@pytest.mark.parametrize("k", [2, 3, 4])
@pytest.mark.parametrize(("tin", "tout"), [(300, 40), (40, 300), (100, 100)])
def test_a_shared_link_serializes_the_transfers(k, tin, tout):
    """K equal chips: dac + analog + adc + max(K tin + tout, tin + K tout)."""
    chips = [chip(tin, 20, 5000, 30, tout)] * k
    expected = 20 + 5000 + 30 + max(k * tin + tout, tin + k * tout)
    assert chips_schedule(chips, "shared").iteration_ns == [expected]
    assert device_ns(combine(chips, "shared")) == expected
    assert device_ns(combine(chips, "separate")) == tin + 20 + 5000 + 30 + tout


def test_the_critical_path_is_contiguous_and_sums_to_the_schedule():
    chips = [chip(300, 20, 5000, 30, 40), chip(900, 25, 4000, 30, 400), chip(10, 1, 6000, 1, 1)]
    for link in ("separate", "shared"):
        schedule = chips_schedule(chips, link)
        path = schedule.critical_path()
        assert path[0].start_ns == 0 and path[-1].end_ns == schedule.total_ns
        assert all(a.end_ns == b.start_ns for a, b in zip(path, path[1:]))


def test_the_serial_loop_places_k_chips_as_one():
    """Algorithm 1's iteration on K chips: digital, then the K chips' device part."""
    chips = [chip(300, 20, 5000, 30, 40, delay=3), chip(300, 20, 5000, 30, 40, delay=9)]
    combined = combine(chips, "shared")
    assert combined.delay_ns == 9 and combined.digital_ns == 700
    clock = SerialClock()
    assert clock.add(combined) == 700 + 20 + 5000 + 30 + 2 * 300 + 40


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="link"):
        combine([chip(1, 1, 1, 1, 1)], "bus")
    with pytest.raises(ValueError, match="digital"):
        combine([chip(1, 1, 1, 1, 1, digital=1), chip(1, 1, 1, 1, 1, digital=2)])
    with pytest.raises(ValueError, match="no chips"):
        chips_schedule([])
