"""solve and inv carry every systematic effect the device reports (issue: no silent wrong
answers): clipping refuses or warns, A and b are scaled into the converters' range by default,
and the error estimate includes the quantization of the values the chip actually programmed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from spusim import Device, linalg
from spusim.device.config import DeviceConfig, profile_config
from spusim.device.converters import Quantizer
from spusim.linalg.converters import Converter
from spusim.timing import TimingModel
from tests import stats
from tests.conftest import ServedDevice

BOARD_A = np.array([[3.0, -1.0], [-1.0, 4.0]])


def _serve(config: DeviceConfig) -> ServedDevice:
    return ServedDevice(**{f.name: getattr(config, f.name) for f in dataclasses.fields(config)})


@pytest.fixture
def board() -> Iterator[Device]:
    """The spu-8cell profile: RLC cells, 12-bit converters of range +-2, 1 % mismatch."""
    served = _serve(profile_config("spu-8cell"))
    with Device.connect(served.endpoint) as device:
        yield device
    served.stop()


def _coarse_dac(bits: int) -> Iterator[Device]:
    timing = TimingModel()
    served = _serve(DeviceConfig(kappa0=0.01, cells=16, dac_full_scale=8.0, bias_full_scale=4.0,
                                 timing=dataclasses.replace(
                                     timing, dac=dataclasses.replace(timing.dac, bits=bits))))
    with Device.connect(served.endpoint) as device:
        yield device
    served.stop()


@pytest.fixture
def four_bit_dac() -> Iterator[Device]:
    """The accuracy sweep's 4-bit DAC of range +-8 (A's entries up to about 5)."""
    yield from _coarse_dac(4)


def test_board_inverse_is_right_with_scaling(board: Device) -> None:
    """Unscaled, the board's DAC (+-2) clipped A = [[3, -1], [-1, 4]] and inv returned
    [[0.678, 0.35], [0.35, 0.679]] with an error estimate of 0.046; scaled, it is right."""
    result = linalg.inv(board, BOARD_A, seed=1)
    truth = np.linalg.inv(BOARD_A)
    assert result.systematics.dac_clipped == 0
    assert result.systematics.coupling_scale == pytest.approx(0.5, rel=1e-3)
    assert np.linalg.norm(result.inverse - truth) <= result.error_estimate
    assert np.abs(result.inverse - truth).max() < 0.03
    assert result.systematics.bound > 0  # 1 % mismatch, offsets, 12-bit steps: reported


def test_board_refuses_clipped_values_unless_asked_to_warn(board: Device) -> None:
    with pytest.raises(linalg.ConverterClipped) as caught:
        linalg.inv(board, BOARD_A, seed=1, scale=False)
    assert caught.value.counts["dac_clipped"] == 2
    assert "dac_clipped=2" in str(caught.value)
    assert board.sim_time_ns < 10 * board.tau_ns  # refused before any sampling
    with pytest.warns(linalg.ClippingWarning, match="dac_clipped=2"):
        result = linalg.inv(board, BOARD_A, seed=1, scale=False, on_clip="warn", t_sample=200)
    assert result.systematics.dac_clipped == 2 and result.systematics.clipped


def test_adc_clipping_is_refused_with_its_count() -> None:
    served = ServedDevice(kappa0=0.01, cells=8, adc_full_scale=0.05)
    with Device.connect(served.endpoint) as device:
        with pytest.raises(linalg.ConverterClipped) as caught:
            linalg.solve(device, np.eye(2), np.array([1.0, -1.0]), t_sample=20, seed=0)
        assert caught.value.counts["adc_clipped"] > 0
        with pytest.raises(ValueError, match="on_clip"):
            linalg.solve(device, np.eye(2), np.ones(2), on_clip="ignore")
    served.stop()


def test_four_bit_dac_error_estimate_covers_the_real_error(four_bit_dac: Device) -> None:
    """At 4 DAC bits the error was 0.91 against an estimate of 0.0032: the quantization of A
    (the values actually programmed) now enters the bound, and scaling shrinks the error."""
    A = stats.spd_matrix(np.linspace(0.5, 5.0, 16), seed=0)
    b = np.random.default_rng(0).standard_normal(16)
    solved = linalg.solve(four_bit_dac, A, b, t_sample=2000, seed=0)
    x = np.linalg.solve(A, b)
    error = np.linalg.norm(solved.x - x)
    assert error > 5 * solved.sampling_error  # the quantization dominates: teeth
    assert error <= solved.error_estimate
    assert solved.systematics.quantization_error > 0
    inverse = linalg.inv(four_bit_dac, A, t_sample=4000, seed=0)
    error = np.linalg.norm(inverse.inverse - np.linalg.inv(A))
    assert error > 5 * inverse.sampling_error
    assert error <= inverse.error_estimate


def test_an_ideal_device_has_no_systematic_bound(device: Device) -> None:
    A = stats.spd_matrix(np.linspace(1.0, 3.0, 4), seed=1)
    result = linalg.solve(device, A, np.ones(4), seed=2)
    assert result.systematics.bound == 0.0
    assert result.error_estimate == result.sampling_error
    assert result.systematics.coupling_scale == 1.0


def test_the_hosts_converter_is_the_devices() -> None:
    """The host's copy of the converter specification rounds and clips exactly as the chip."""
    values = np.linspace(-3.0, 3.0, 1001)
    for bits, full_scale in ((4, 2.0), (12, 2.0), (16, None)):
        device_values, _ = Quantizer(bits, full_scale).apply(values)
        np.testing.assert_array_equal(Converter(bits, full_scale).programmed(values),
                                      device_values)
    assert Converter(4, 2.0).scale_for(np.array([4.0])) == pytest.approx(1.75 / 4.0)



def test_spu_linalg_command(capsys: pytest.CaptureFixture[str]) -> None:
    from spusim.cli import main

    assert main(["linalg", "--n", "3", "--ops", "solve", "logdet", "expnegm",
                 "--readings", "400"]) == 0
    out = capsys.readouterr().out
    for op in ("solve", "logdet", "expnegm"):
        row = next(line for line in out.splitlines() if line.strip().startswith(op))
        relative_error, estimated = (float(v) for v in row.split()[1:3])
        assert relative_error < 3 * estimated
    for bad in (["--n", "0"], ["--readings", "3"], ["--kappa0", "0"]):
        with pytest.raises(SystemExit) as caught:
            main(["linalg", *bad])
        assert caught.value.code == 2
        assert "Traceback" not in capsys.readouterr().err


def test_the_anti_alias_filters_bias_is_in_the_inverses_estimate() -> None:
    """A filter of time constant tau shrinks each mode's variance by a / (a + lambda): the
    inverse is ~40 % low, and its error estimate must say so."""
    served = ServedDevice(kappa0=0.01, cells=8, readout_tau_ns=1000.0)
    A = stats.spd_matrix(np.linspace(0.5, 2.0, 4), seed=3)
    with Device.connect(served.endpoint) as device:
        result = linalg.inv(device, A, t_sample=4000, seed=1)
    served.stop()
    error = np.linalg.norm(result.inverse - np.linalg.inv(A))
    assert error > 5 * result.sampling_error
    assert error <= result.error_estimate


def test_sampling_waits_for_the_programmed_values_to_settle() -> None:
    """A programming path of 20 tau: without waiting, the first samples see a coupling far from
    A; the burn-in is stretched to the replies' settle_ns."""
    served = ServedDevice(kappa0=0.01, cells=8, program_tau_ns=20_000.0)
    A = stats.spd_matrix(np.linspace(1.0, 2.0, 3), seed=2)
    with Device.connect(served.endpoint) as device:
        result = linalg.solve(device, A, np.ones(3), t_burn=1.0, t_sample=200, seed=1)
    served.stop()
    assert result.systematics.settle_ns > 100 * 1000
    assert result.device_time_ns > result.systematics.settle_ns
    assert np.linalg.norm(result.x - np.linalg.solve(A, np.ones(3))) < 4 * result.error_estimate


def test_the_bound_says_which_effect_dominates(four_bit_dac: Device) -> None:
    """At 4 DAC bits on an otherwise ideal chip the quantization is the whole bound."""
    A = stats.spd_matrix(np.linspace(0.5, 5.0, 8), seed=0)
    found = linalg.inv(four_bit_dac, A, t_sample=1000, seed=0).systematics
    assert found.quantization_bound > 0
    assert found.mismatch_bound == 0 and found.readout_bound == 0
    assert found.bound == found.quantization_bound
