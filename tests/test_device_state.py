"""The device object's contract: validation, state that persists, and the simulated clock."""

from __future__ import annotations

import numpy as np
import pytest

from spusim.device.config import DeviceConfig
from spusim.device.spu import EmulatedSPU
from spusim.protocol import ErrorCode, ProtocolError

A2 = np.array([[3.0, 2.0], [2.0, 4.0]])


def programmed(**config: object) -> EmulatedSPU:
    spu = EmulatedSPU(DeviceConfig(**config))  # type: ignore[arg-type]
    spu.program(A2)
    spu.set_bias(np.ones(2))
    return spu


def raises(code: ErrorCode, call, *args, **kwargs) -> ProtocolError:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolError) as info:
        call(*args, **kwargs)
    assert info.value.code == code, info.value
    return info.value


def test_rejects_asymmetric_matrix_naming_the_entry() -> None:
    A = np.eye(3)
    A[0, 2] = 0.5
    error = raises(ErrorCode.NOT_SYMMETRIC, EmulatedSPU(DeviceConfig()).program, A)
    assert error.details["index"] in ([0, 2], [2, 0])
    assert "A[0,2]" in error.message or "A[2,0]" in error.message


def test_rejects_non_finite_and_oversized_and_non_square() -> None:
    spu = EmulatedSPU(DeviceConfig(cells=4))
    bad = A2.copy()
    bad[1, 0] = np.nan
    raises(ErrorCode.NON_FINITE, spu.program, bad)
    raises(ErrorCode.CAPACITY_EXCEEDED, spu.program, np.eye(5))
    raises(ErrorCode.BAD_SHAPE, spu.program, np.ones((2, 3)))
    assert spu.n == 0 and spu.clock.now_ns == 0  # nothing changed


def test_indefinite_matrix_is_refused_before_anything_runs() -> None:
    spu = EmulatedSPU(DeviceConfig())
    spu.program(np.array([[1.0, 2.0], [2.0, 1.0]]))  # eigenvalues 3 and -1
    before = spu.clock.now_ns
    error = raises(ErrorCode.NOT_POSITIVE_DEFINITE, spu.run, 1000)
    assert error.details["smallest_eigenvalue"] == pytest.approx(-1.0)
    assert spu.clock.now_ns == before


def test_euler_step_too_large_is_refused_with_the_limit() -> None:
    spu = EmulatedSPU(DeviceConfig(integrator="euler_maruyama"))
    spu.program(np.diag([1.0, 25.0]))  # h * lam_max = 2.5 at h = 0.1
    error = raises(ErrorCode.UNSTABLE_STEP, spu.run, 1000)
    assert "80 ns" in error.message  # 2 / 25 tau = 80 ns
    spu.program(np.diag([1.0, 25.0]), integrator="exact")
    spu.run(1000)  # the exact integrator has no step limit


def test_ops_before_programming_and_reading_without_samples() -> None:
    spu = EmulatedSPU(DeviceConfig())
    raises(ErrorCode.NOT_PROGRAMMED, spu.run, 100)
    raises(ErrorCode.NOT_PROGRAMMED, spu.set_bias, np.ones(2))
    raises(ErrorCode.NOT_PROGRAMMED, spu.read)
    spu.program(A2)
    raises(ErrorCode.NO_SAMPLES, spu.read)
    spu.run(100)
    raises(ErrorCode.NO_SAMPLES, spu.read, second_moments=True)
    assert spu.read()[0]["samples"] == 1


def test_vector_shape_and_duration_are_checked() -> None:
    spu = programmed()
    raises(ErrorCode.BAD_SHAPE, spu.set_bias, np.ones(3))
    raises(ErrorCode.NON_FINITE, spu.set_state, np.array([0.0, np.inf]))
    raises(ErrorCode.BAD_ARGUMENT, spu.run, 150)  # not a multiple of the 100 ns interval


def test_state_persists_across_programming_unless_reset_or_resized() -> None:
    spu = programmed(kappa0=0.0)
    spu.set_state(np.array([5.0, -5.0]))
    result, _ = spu.program(2 * A2)
    assert not result["state_reset"] and not result["bias_reset"]
    spu.run(100, clear=True)
    assert np.all(np.abs(spu.read()[1]["mean"]) > 1)  # continued from (5, -5)
    result, _ = spu.program(A2, reset_state=True)
    assert result["state_reset"]
    spu.run(100, clear=True)
    first = spu.read()[1]["mean"]
    assert np.all(np.abs(first) < 1)  # started from 0
    result, _ = spu.program(np.eye(3))
    assert result["state_reset"] and result["bias_reset"]
    spu.run(100)
    np.testing.assert_array_equal(spu.read()[1]["mean"], np.zeros(3))  # zero bias, no noise


def test_read_clears_unless_asked_and_reset_returns_to_power_on() -> None:
    spu = programmed()
    spu.run(1000)
    assert spu.read(clear=False)[0]["samples"] == 10
    spu.run(500)
    assert spu.read()[0]["samples"] == 15
    raises(ErrorCode.NO_SAMPLES, spu.read)
    clock = spu.clock.now_ns
    spu.reset()
    assert spu.status()["programmed"] is False and spu.clock.now_ns == clock


def test_clock_advances_by_the_timing_model() -> None:
    """16-bit values over 50 Gb/s: 0.32 ns a value; runs cost their analog duration."""
    spu = EmulatedSPU(DeviceConfig())
    result, _ = spu.program(np.eye(100))  # 10^4 values -> 3200 ns
    assert result["timing"] == {"transfer_in": 3200}
    spu.set_bias(np.zeros(100))  # 100 values -> 32 ns
    result, _ = spu.run(5000)
    assert result["timing"] == {"analog": 5000}
    result, _ = spu.read(second_moments=False)
    assert result["timing"] == {"transfer_out": 32}
    assert spu.clock.now_ns == 3200 + 32 + 5000 + 32


def test_divergence_is_reported_and_clears_state_and_samples() -> None:
    """A state pushed past the float range (mean 1e310) stops the run with DIVERGED."""
    spu = EmulatedSPU(DeviceConfig(kappa0=0.0))
    spu.program(np.diag([1e-3, 1.0]))
    spu.set_bias(np.array([1e307, 0.0]))
    spu.run(100)
    spu.set_state(np.array([1e308, 0.0]))
    clock = spu.clock.now_ns
    error = raises(ErrorCode.DIVERGED, spu.run, 10_000)
    assert spu.clock.now_ns - clock == error.details["completed_ns"] > 0
    raises(ErrorCode.NO_SAMPLES, spu.read)  # the samples, inf included, are gone
    spu.set_bias(np.zeros(2))
    spu.run(100)
    np.testing.assert_array_equal(spu.read()[1]["mean"], np.zeros(2))  # state was zeroed
