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


def test_the_critical_path_is_the_hand_placed_one():
    """The three chips placed by hand (lane, phase, start, end in ns). Separate links: chip 2
    (10 + 1 + 6000 + 1 + 1) finishes last, at 6013, on its own. Shared link: the uploads go
    in chip order (0-300, 300-1200, 1200-1210), the readouts as the chips' ADCs finish
    (chip 1 at 5255, chip 0 at 5350, chip 2 at 7212), so chip 2's path starts with the two
    uploads before its own. With chip 2 gone, chip 0's readout waits for chip 1's on the
    link (5655): the path crosses from chip 1 to chip 0's readout."""
    chips = [chip(300, 20, 5000, 30, 40), chip(900, 25, 4000, 30, 400), chip(10, 1, 6000, 1, 1)]
    TI, DAC, AN, ADC, TO = (Phase.TRANSFER_IN, Phase.DAC, Phase.ANALOG, Phase.ADC,
                            Phase.TRANSFER_OUT)

    def path(chosen, link):
        return [(e.lane, e.phase, e.start_ns, e.end_ns)
                for e in chips_schedule(chosen, link).critical_path()]

    assert path(chips, "separate") == [
        ("link2", TI, 0, 10), ("chip2", DAC, 10, 11), ("chip2", AN, 11, 6011),
        ("chip2", ADC, 6011, 6012), ("link2", TO, 6012, 6013)]
    assert path(chips, "shared") == [
        ("link-in", TI, 0, 300), ("link-in", TI, 300, 1200), ("link-in", TI, 1200, 1210),
        ("chip2", DAC, 1210, 1211), ("chip2", AN, 1211, 7211), ("chip2", ADC, 7211, 7212),
        ("link-out", TO, 7212, 7213)]
    assert path(chips[:2], "shared") == [
        ("link-in", TI, 0, 300), ("link-in", TI, 300, 1200), ("chip1", DAC, 1200, 1225),
        ("chip1", AN, 1225, 5225), ("chip1", ADC, 5225, 5255), ("link-out", TO, 5255, 5655),
        ("link-out", TO, 5655, 5695)]


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
