"""The on-device lag correlator (run lag_samples = L, read lag_moment; protocol 1.5) against the
lag products numpy forms from the same samples, read back one by one, on every kernel path."""

from __future__ import annotations

import numpy as np
import pytest

from spusim import Device
from spusim.device import kernels
from spusim.device.config import DeviceConfig
from spusim.device.spu import EmulatedSPU, _lag_in
from spusim.protocol import ErrorCode, ProtocolError
from spusim.timing import TimingModel

A3 = np.array([[2.0, 0.5, 0.0], [0.5, 1.5, 0.3], [0.0, 0.3, 1.0]])
GENERAL = A3 + np.array([[0.0, 0.8, 0.0], [-0.8, 0.0, 0.4], [0.0, -0.4, 0.0]])
J, H = np.array([[1.0, 0.5, -0.2], [0.3, -1.0, 0.4]]), np.array([[1.0, 0.2], [0.2, 0.5]])
SAMPLES, LAG = 150, 7  # > 64: the second-moment and noise batches are crossed too

# (what the path is, device config, how to program it): every kernel a recorded run can use.
PATHS = {
    "modal, ideal ADC (sums in modal coordinates)": ({}, lambda s: s.program(A3)),
    "modal, real ADC": ({"adc_full_scale": 4.0, "readout_noise": 0.01},
                        lambda s: s.program(A3)),
    "general drift (circuit step)": ({}, lambda s: s.program(GENERAL, drift="general")),
    "euler_maruyama": ({"integrator": "euler_maruyama", "em_step_ns": 25},
                       lambda s: s.program(A3)),
    "factored exact": ({}, lambda s: s.program_factored(J, H, 0.5, integrator="exact")),
    "factored euler_maruyama": ({}, lambda s: s.program_factored(J, H, 0.5)),
    "underdamped cells": ({"dynamics": "underdamped"}, lambda s: s.program(A3)),
    "settling (Euler-Maruyama, then modal coordinates)": ({"program_tau_ns": 300.0},
                                                          lambda s: s.program(A3)),
}


def _device(config: dict, program) -> EmulatedSPU:  # type: ignore[no-untyped-def]
    spu = EmulatedSPU(DeviceConfig(cells=8, **config))
    program(spu)
    spu.set_bias(np.array([0.3, -0.2, 0.1]))
    return spu


@pytest.mark.parametrize("path", PATHS)
def test_lag_moment_is_numpy_on_the_same_samples(path: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """One run with the correlator against runs of one sample each, read one by one (reads
    priced at 0 ns here, so a programmed change settles at the same device times in both)."""
    monkeypatch.setattr(TimingModel, "readout", lambda self, cells, n_values: {})
    config, program = PATHS[path]
    interval = DeviceConfig(**config).sample_interval_ns
    one_run = _device(config, program)
    result, _ = one_run.run(SAMPLES * interval, clear=True, seed=5, lag_samples=LAG,
                            second_moments=True)
    reply, arrays = one_run.read(lag_moment=True)
    sample_by_sample = _device(config, program)
    x = []
    for k in range(SAMPLES):
        sample_by_sample.run(interval, clear=True, seed=5 if k == 0 else None)
        x.append(sample_by_sample.read()[1]["mean"])
    x = np.array(x)
    expected = np.einsum("ki,kj->ij", x[LAG:], x[:-LAG]) / (SAMPLES - LAG)
    assert reply["lag_pairs"] == SAMPLES - LAG and reply["lag_samples"] == LAG
    scale = np.abs(expected).max()
    np.testing.assert_allclose(arrays["lag_moment"], expected, rtol=0, atol=1e-9 * scale)
    assert not np.allclose(arrays["lag_moment"], arrays["lag_moment"].T)  # truly lagged


def test_lag_products_add_over_runs_but_never_across_them() -> None:
    spu = _device({}, lambda s: s.program(A3))
    interval = spu.config.sample_interval_ns
    spu.run(20 * interval, clear=True, lag_samples=3)
    spu.run(10 * interval, lag_samples=3)
    reply, _ = spu.read(lag_moment=True, clear=False)
    assert reply["lag_pairs"] == (20 - 3) + (10 - 3)
    error = pytest.raises(ProtocolError, spu.run, interval, lag_samples=2).value
    assert error.code == ErrorCode.BAD_ARGUMENT and error.details["held"] == 3
    spu.run(2 * interval, lag_samples=2, clear=True)  # shorter than the lag: no pair
    assert pytest.raises(ProtocolError, spu.read, lag_moment=True).value.code == \
        ErrorCode.NO_SAMPLES
    error = pytest.raises(ProtocolError, spu.run, interval, record=False, lag_samples=1).value
    assert error.code == ErrorCode.BAD_ARGUMENT


def test_lag_moment_over_the_wire_and_an_old_style_client(device: Device) -> None:
    device.program(A3)
    device.set_bias(np.zeros(3))
    interval = device.config["sample_interval_ns"]
    before = device.sim_time_ns
    device.run(50 * interval, clear=True, lag_samples=4, seed=1)
    readout = device.read(lag_moment=True)
    assert readout.lag_pairs == 46 and readout.lag_samples == 4
    assert readout.lag_moment is not None and readout.lag_moment.shape == (3, 3)
    assert device.sim_time_ns - before > 50 * interval
    # An old-style (1.4) call: no lag arguments sent, none in the reply.
    reply = device._call("run", {"duration_ns": 10 * interval, "record": True,
                                 "second_moments": False, "clear": True, "seed": None})
    assert "lag_pairs" not in reply.result
    read = device._call("read", {"second_moments": False, "clear": True})
    assert set(read.arrays) == {"mean"} and "lag_pairs" not in read.result
    device.run(10 * interval)
    old = device.read()
    assert old.lag_moment is None and old.lag_pairs == 0


def test_a_lag_ring_beyond_the_byte_budget_is_refused_before_queueing(device: Device) -> None:
    device.program(A3)
    device.set_bias(np.zeros(3))
    with pytest.raises(Exception, match="ring buffer") as info:
        device.run(device.config["sample_interval_ns"], lag_samples=2**31 - 1)
    assert getattr(info.value, "code", None) == ErrorCode.BAD_ARGUMENT


def test_an_empty_ring_is_not_mapped_into_a_stepper_basis() -> None:
    """Entering a stepper's coordinates maps the ring's held samples s to basis^T s; a ring
    holding none (no correlator, or none taken yet) is passed on as it is, not multiplied."""
    basis = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))[0]
    sums = np.zeros((3, 3))
    for lag in (kernels.lag_correlator(LAG, 3), kernels.no_lag(3)):
        assert _lag_in(lag, basis, sums)[0] is lag[0]
    ring, _, position = lag = kernels.lag_correlator(LAG, 3)
    ring[0], position[:] = [1.0, 2.0, 3.0], [1, 1]  # one sample held
    np.testing.assert_array_equal(_lag_in(lag, basis, sums)[0], ring @ basis)
