"""The host's handle on one SPU: the protocol's ops as Python methods.

    with Device.spawn(kappa0=0.01) as device:      # or Device.connect("tcp://127.0.0.1:5555")
        device.program(A)
        device.set_bias(b)
        device.run(device.duration_ns(50.0), record=False)     # burn in for 50 tau
        device.run(device.duration_ns(500.0))                  # record 500 tau of samples
        mean = device.read().mean

Every call validates the reply, raises a typed :mod:`host.errors` exception on failure, tracks
the device's simulated clock (:attr:`Device.sim_time_ns`) and notices a daemon restart (a new
boot id) as :class:`~host.errors.DeviceRestarted`. Timeouts grow with the work a call asks for.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from host.daemon import DaemonProcess
from host.errors import DeviceRestarted, InvalidRequest, error_from_reply
from host.transport import Transport
from protocol import ErrorCode, Reply, spec_for
from timing.report import Span, write_chrome_trace

# Safety factor on the daemon's own kernel speed when sizing a call's timeout.
_WORK_TIMEOUT_FACTOR = 20.0
# Pessimistic transfer rate for sizing the timeout of large uploads and reads, bytes/s.
_SLOW_LINK_BYTES_PER_S = 50e6


@dataclass(frozen=True)
class Readout:
    """What ``read`` returns: time averages over the recorded ADC samples.

    mean: (N,) average state. second_moment: (N, N) average of x x^T, or None if not asked.
    samples / second_moment_samples: how many samples each average covers.
    """

    mean: np.ndarray
    second_moment: np.ndarray | None
    samples: int
    second_moment_samples: int


def as_float64(array: Any, name: str, ndim: int) -> np.ndarray:
    """``array`` as a C-contiguous float64 ndarray of ``ndim`` dimensions, or ValueError."""
    result = np.ascontiguousarray(array, dtype=np.float64)
    if result.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {result.shape}")
    return result


class Device:
    """A connection to one SPU daemon. Use :meth:`connect` or :meth:`spawn`; a context manager.

    timeout: seconds allowed for a call that asks for little work; calls that ask for more get
    proportionally longer. retries: extra attempts for calls that are safe to repeat.
    """

    def __init__(self, transport: Transport, *, timeout: float = 10.0, retries: int = 2,
                 process: DaemonProcess | None = None) -> None:
        self.timeout = timeout
        self.retries = retries
        self.process = process
        self._transport = transport
        self._boot_id: str | None = None
        self._info: dict[str, Any] = {}
        self._sim_time_ns = 0
        self._n = 0
        self._integrator: str | None = None
        self._ready = False  # the programmed matrix passed a run's checks
        self._phase_ns: dict[str, int] = {}
        self._timeline: list[Span] = []

    @classmethod
    def connect(cls, endpoint: str, *, timeout: float = 10.0, retries: int = 2) -> Device:
        """Connect to a running daemon at ``endpoint`` and shake hands (``hello``)."""
        device = cls(Transport(endpoint), timeout=timeout, retries=retries)
        try:
            device.hello()
        except BaseException:
            device.close()
            raise
        return device

    @classmethod
    def spawn(cls, *, timeout: float = 10.0, retries: int = 2, start_timeout: float = 120.0,
              **config: Any) -> Device:
        """Start a private daemon on a free loopback port, connect, and stop it on close.

        ``config`` are daemon options by their flag names (``cells``, ``kappa0``,
        ``integrator``, ``seed``, ``threads``, ...; see ``python -m device serve --help``).
        """
        process = DaemonProcess.start(start_timeout=start_timeout, **config)
        try:
            device = cls.connect(process.endpoint, timeout=timeout, retries=retries)
        except BaseException:
            process.stop()
            raise
        device.process = process
        return device

    def close(self) -> None:
        """Close the connection; a spawned daemon is stopped (SIGTERM)."""
        self._transport.close()
        if self.process is not None:
            self.process.stop()
            self.process = None

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- what the device told us -----------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return self._transport.endpoint

    @property
    def info(self) -> dict[str, Any]:
        """The daemon's ``hello``: protocol, capabilities, limits, configuration."""
        return self._info

    @property
    def config(self) -> dict[str, Any]:
        """The device configuration (units in the key names)."""
        return self._info["config"]

    @property
    def boot_id(self) -> str | None:
        return self._boot_id

    @property
    def sim_time_ns(self) -> int:
        """The device's simulated clock as of the last reply, ns."""
        return self._sim_time_ns

    @property
    def phase_ns(self) -> dict[str, int]:
        """Simulated device time spent per phase (transfer_in, analog, ...) by this client, ns."""
        return dict(self._phase_ns)

    @property
    def timeline(self) -> list[Span]:
        """Every phase of device time this client caused, in simulated time (for traces)."""
        return list(self._timeline)

    def write_trace(self, path: str | Path) -> Path:
        """Write :attr:`timeline` as Chrome Trace Event JSON (opens in Perfetto)."""
        return write_chrome_trace(self._timeline, path)

    @property
    def tau_ns(self) -> int:
        """The time unit of the dynamics, tau = RC, in ns."""
        return int(self.config["tau_ns"])

    def duration_ns(self, t_tau: float) -> int:
        """``t_tau`` (units of tau) as a run duration: rounded up to whole ADC sample intervals."""
        interval = int(self.config["sample_interval_ns"])
        return max(1, math.ceil(round(t_tau * self.tau_ns, 6) / interval)) * interval

    # --- ops -------------------------------------------------------------------------------

    def hello(self) -> dict[str, Any]:
        """Handshake: protocol version, capabilities, limits, configuration, boot id."""
        reply = self._call("hello")
        self._info = reply.result
        self._boot_id = reply.result["boot_id"]
        return reply.result

    def ping(self) -> float:
        """Round-trip time of an empty request, seconds of host wall time."""
        started = time.perf_counter()
        self._call("ping")
        return time.perf_counter() - started

    def status(self) -> dict[str, Any]:
        """Programmed size, integrator, samples held, busy flag, queue depth, clock."""
        return self._call("status").result

    def program(self, A: Any, *, reset_state: bool = False,
                integrator: str | None = None) -> dict[str, Any]:
        """Program the symmetric N x N coupling matrix ``A``.

        The state persists unless ``reset_state`` (or N changed, which also zeroes the bias).
        ``integrator``: "exact" or "euler_maruyama" for the runs that follow (default: the
        daemon's). Positive definiteness and step stability are checked by the first run.
        """
        A = as_float64(A, "A", 2)
        result = self._call("program", {"reset_state": reset_state, "integrator": integrator},
                            {"A": A}, extra_timeout=A.nbytes / _SLOW_LINK_BYTES_PER_S).result
        self._n, self._integrator, self._ready = A.shape[0], result["integrator"], False
        return result

    def set_bias(self, b: Any) -> dict[str, Any]:
        """Set the bias vector b (N,): the stationary mean becomes A^-1 b."""
        return self._call("set_bias", arrays={"b": as_float64(b, "b", 1)}).result

    def set_state(self, x: Any) -> dict[str, Any]:
        """Set the cell state x (N,), e.g. to warm-start the next run."""
        return self._call("set_state", arrays={"x": as_float64(x, "x", 1)}).result

    def run(self, duration_ns: int, *, record: bool = True, second_moments: bool = False,
            clear: bool = False, seed: int | None = None) -> dict[str, Any]:
        """Let the device evolve for ``duration_ns`` (a multiple of the ADC sample interval).

        record: add the ADC samples to the device's averager; second_moments: also x x^T;
        clear: discard previously recorded samples first; seed: restart the noise stream.
        Never retried: a run advances the device and its noise.
        """
        result = self._call("run", {"duration_ns": int(duration_ns), "record": record,
                                    "second_moments": second_moments, "clear": clear,
                                    "seed": seed},
                            extra_timeout=self._run_seconds(duration_ns, second_moments)).result
        self._ready = True
        return result

    def read(self, *, second_moments: bool = False, clear: bool = True) -> Readout:
        """Time averages of the recorded samples; ``clear`` empties the averager after."""
        reply = self._call("read", {"second_moments": second_moments, "clear": clear},
                           extra_timeout=8 * self._n**2 * second_moments
                           / _SLOW_LINK_BYTES_PER_S)
        return Readout(mean=reply.arrays["mean"], second_moment=reply.arrays.get("second_moment"),
                       samples=reply.result["samples"],
                       second_moment_samples=reply.result["second_moment_samples"])

    def reset(self) -> dict[str, Any]:
        """Power-on state: nothing programmed; the clock and noise stream continue."""
        self._n, self._integrator, self._ready = 0, None, False
        return self._call("reset").result

    def shutdown(self) -> None:
        """Ask the daemon to stop (it answers first, then exits with code 0)."""
        self._call("shutdown")

    # --- plumbing --------------------------------------------------------------------------

    def _run_seconds(self, duration_ns: int, second_moments: bool) -> float:
        """Generous wall-time bound of a run: the daemon's measured kernel speed x a margin."""
        config = self._info.get("config", {})
        per_cell_step = float(self._info.get("seconds_per_cell_step", 1e-8))
        interval = int(config.get("sample_interval_ns", 1))
        steps = duration_ns // interval
        if self._integrator == "euler_maruyama":
            steps *= interval // int(config.get("em_step_ns", interval))
        n2 = self._n**2
        work = steps * n2 * (1.5 if second_moments else 1.0)
        if not self._ready:  # the first run checks the matrix (an eigendecomposition)
            work += 10 * n2 * self._n
        return _WORK_TIMEOUT_FACTOR * per_cell_step * work

    def _record_timing(self, op: str, reply: Reply) -> None:
        """Add a reply's phases (laid out in order, ending at the reply's clock) to the totals
        and the timeline."""
        timing = {phase: int(ns) for phase, ns in reply.result.get("timing", {}).items()}
        start = self._sim_time_ns - sum(timing.values())
        for phase, ns in timing.items():
            self._phase_ns[phase] = self._phase_ns.get(phase, 0) + ns
            self._timeline.append(Span("device", phase, start, start + ns, {"op": op}))
            start += ns

    def _check_frame_sizes(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Refuse locally what the daemon's transport would drop without a reply."""
        limit = self._info.get("limits", {}).get("max_frame_bytes")
        for name, array in arrays.items():
            if limit is not None and array.nbytes > limit:
                raise InvalidRequest(ErrorCode.MESSAGE_TOO_LARGE,
                                     f"{name} of shape {list(array.shape)} is {array.nbytes} "
                                     f"bytes; this daemon accepts frames up to {limit} bytes",
                                     {"array": name, "limit": limit})

    def _call(self, op: str, args: Mapping[str, Any] | None = None,
              arrays: Mapping[str, np.ndarray] | None = None,
              extra_timeout: float = 0.0) -> Reply:
        retries = self.retries if spec_for(op).idempotent else 0
        self._check_frame_sizes(arrays or {})
        reply = self._transport.call(op, args, arrays, timeout=self.timeout + extra_timeout,
                                     retries=retries)
        self._sim_time_ns = int(reply.device.get("sim_time_ns", self._sim_time_ns))
        self._record_timing(op, reply)
        boot_id = reply.device.get("boot_id")
        if self._boot_id is not None and boot_id != self._boot_id:
            self._boot_id = boot_id
            self._n, self._integrator, self._ready = 0, None, False
            raise DeviceRestarted("RESTARTED", f"the daemon at {self.endpoint} restarted (boot "
                                  f"id now {boot_id}): everything programmed is gone",
                                  {"boot_id": boot_id})
        if not reply.ok:
            assert reply.error is not None
            raise error_from_reply(reply.error)
        return reply
