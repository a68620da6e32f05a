"""The host's handle on one SPU: the protocol's ops as Python methods.

    with Device.spawn(kappa0=0.01) as device:      # or Device.connect("tcp://127.0.0.1:5555")
        device.program(A)
        device.set_bias(b)
        device.run(device.duration_ns(50.0), record=False)     # burn in for 50 tau
        device.run(device.duration_ns(500.0))                  # record 500 tau of samples
        mean = device.read().mean

Every call validates the reply, raises a typed :mod:`spusim.driver.errors` exception on failure, tracks
the device's simulated clock (:attr:`Device.sim_time_ns`) and notices a daemon restart (a new
boot id) as :class:`~spusim.driver.errors.DeviceRestarted`. Timeouts grow with the work a call
asks for; against a 1.2 daemon a waiting call also sends heartbeats, so a long run never times
out while the daemon works on it and a dead daemon is noticed within seconds (transport.py).
A timed-out call is retried when that is safe: always for idempotent ops, and for every op when
the daemon deduplicates requests (protocol >= 1.1); BUSY is retried after a back-off.
:meth:`Device.lease` keeps other clients off the device (docs/hil.md); a lease that ran out
is reported (:class:`~spusim.driver.errors.LeaseExpired`), never renewed behind the caller's back.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spusim.driver.daemon import DaemonProcess
from spusim.driver.errors import (
    DeviceLeased,
    DeviceRestarted,
    InvalidRequest,
    LeaseExpired,
    error_from_reply,
)
from spusim.driver.transport import CurveClientKeys, Transport
from spusim.protocol import FAULT_TRIGGERS, ErrorCode, Reply, spec_for
from spusim.timing.report import Span, write_chrome_trace

# Spans of device time kept for traces: a long training run would otherwise grow without bound.
TIMELINE_SPANS = 200_000
# Safety factor on the daemon's own kernel speed when sizing a call's timeout.
_WORK_TIMEOUT_FACTOR = 20.0
# Kernel work of a run's sample besides its matrix work (RNG, ADC, bookkeeping), in matrix
# element-steps, for sizing timeouts.
_SAMPLE_OVERHEAD = 256
# Pessimistic transfer rate for sizing the timeout of large uploads and reads, bytes/s.
_SLOW_LINK_BYTES_PER_S = 50e6
# First wait before resending a request answered BUSY (or LEASED, in acquire), s; doubles.
_BACKOFF_S = 0.05
_MAX_BACKOFF_S = 1.0


@dataclass(frozen=True)
class Readout:
    """What ``read`` returns: time averages over the recorded ADC samples.

    mean: (N,) average state. second_moment: (N, N) average of x x^T, or None if not asked.
    samples / second_moment_samples: how many samples each average covers. lag_moment: (N, N)
    average of x_k x_{k-L}^T over lag_pairs pairs of samples lag_samples = L sample intervals
    apart (runs with ``lag_samples``, protocol 1.5), or None if not asked.
    """

    mean: np.ndarray
    second_moment: np.ndarray | None
    samples: int
    second_moment_samples: int
    lag_moment: np.ndarray | None = None
    lag_pairs: int = 0
    lag_samples: int = 0


@dataclass(frozen=True)
class FactoredSolve:
    """What ``solve_factored`` returns: the read-out, and each step the daemon did for it.

    readout: as :meth:`Device.read` returns it. steps: (op, result) in the order executed
    ("run", "program_factored", "set_bias", "set_state", "run", "run", "read"; the first run
    only with a delay, set_state only with a state, the second only with a burn-in), each
    result as the op on its own replies it (with its ``timing``).
    """

    readout: Readout
    steps: list[tuple[str, dict[str, Any]]]


def as_float64(array: Any, name: str, ndim: int) -> np.ndarray:
    """``array`` as a C-contiguous float64 ndarray of ``ndim`` dimensions, or ValueError."""
    result = np.ascontiguousarray(array, dtype=np.float64)
    if result.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {result.shape}")
    return result


class Device:
    """A connection to one SPU daemon. Use :meth:`connect` or :meth:`spawn`; a context manager.

    timeout: seconds allowed for a call that asks for little work; calls that ask for more get
    proportionally longer. retries: extra attempts for calls that are safe to repeat, and for
    calls answered BUSY.
    """

    def __init__(self, transport: Transport, *, timeout: float = 10.0, retries: int = 2,
                 process: DaemonProcess | None = None) -> None:
        self.timeout = timeout
        self.retries = retries
        self.process = process
        self._transport = transport
        self._boot_id: str | None = None
        self._info: dict[str, Any] = {}
        self._protocol: tuple[int, ...] = (1, 0)  # the daemon's version, from its hello
        self._sim_time_ns = 0
        self._n = 0  # programmed cells
        self._elements = 0  # programmable elements in use: N^2, or m (m + 2N) factored
        self._rows = 0  # N, or m factored: the size of the first run's check
        self._integrator: str | None = None
        self._ready = False  # the programmed matrix passed a run's checks
        self._lease_epoch: int | None = None  # the lease grant held (1.2), if any
        self._lease_ttl_s = 0.0
        self._phase_ns: dict[str, int] = {}
        self._timeline: deque[Span] = deque(maxlen=TIMELINE_SPANS)

    @classmethod
    def connect(cls, endpoint: str, *, timeout: float = 10.0, retries: int = 2,
                curve_server_key: str | Path | None = None,
                curve_client_key: str | Path | None = None) -> Device:
        """Connect to a running daemon at ``endpoint`` and shake hands (``hello``).

        For a daemon that requires CURVE, pass its public certificate (``curve_server_key``)
        and this client's secret certificate (``curve_client_key``); see docs/hil.md.
        """
        curve = None
        if curve_server_key is not None or curve_client_key is not None:
            if curve_server_key is None or curve_client_key is None:
                raise ValueError("CURVE needs both curve_server_key and curve_client_key")
            curve = CurveClientKeys(curve_server_key, curve_client_key)
        device = cls(Transport(endpoint, curve=curve), timeout=timeout, retries=retries)
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
        ``integrator``, ``seed``, ``threads``, ...; see ``python -m spusim.device serve --help``);
        ``config="chip.toml"`` starts from a configuration file (``spu config show``), or from a
        mapping such as a run record's ``hello`` config; the other options apply over it.
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
    def session(self) -> str:
        """The session id this client sends: the daemon's key for its replies and lease."""
        return self._transport.session

    @property
    def requests_sent(self) -> int:
        """Requests this client has sent, every retry counted."""
        return self._transport.sent

    @property
    def deduplicates(self) -> bool:
        """Whether the daemon answers a resent request from its kept replies (protocol 1.1),
        which makes every call safe to retry."""
        return self._protocol >= (1, 1)

    @property
    def heartbeats(self) -> bool:
        """Whether the daemon answers heartbeats about a request (protocol 1.2): calls then
        wait as long as it works on them and notice a dead daemon within seconds."""
        return self._protocol >= (1, 2)

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
        """The phases of device time this client caused (the latest ``TIMELINE_SPANS``), in
        simulated time, for traces."""
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
        self._protocol = tuple(reply.result.get("protocol", (1, 0)))
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

    def program(self, A: Any, *, reset_state: bool = False, integrator: str | None = None,
                drift: str = "symmetric") -> dict[str, Any]:
        """Program the symmetric N x N coupling matrix ``A``.

        The state persists unless ``reset_state`` (or N changed, which also zeroes the bias).
        ``integrator``: "exact" or "euler_maruyama" for the runs that follow (default: the
        daemon's). Positive definiteness and step stability are checked by the first run.
        ``drift="general"`` (protocol 1.3, overdamped cells): A may be any real matrix whose
        eigenvalues have positive real parts (non-reciprocal couplings).
        """
        A = as_float64(A, "A", 2)
        args: dict[str, Any] = {"reset_state": reset_state, "integrator": integrator}
        if drift != "symmetric":  # sent only when used, so 1.1 daemons still serve the rest
            args["drift"] = drift
        result = self._call("program", args,
                            {"A": A}, extra_timeout=A.nbytes / _SLOW_LINK_BYTES_PER_S).result
        self._programmed(result, rows=A.shape[0])
        return result

    def program_factored(self, J: Any, H: Any, damping: float, *, reset_state: bool = False,
                         integrator: str | None = None) -> dict[str, Any]:
        """Program the coupling J^T H J + damping I from J (m, N) and H (m, m), the TNGD
        hardware's factored form: the N x N matrix is never formed (m (m + 2N) elements).

        Runs use Euler-Maruyama unless ``integrator`` is "exact" (the exact transition, kept
        factored; refused on a chip whose mismatch makes the damping differ per cell or that
        filters its readout). State rules as in :meth:`program`.
        """
        J, H = as_float64(J, "J", 2), as_float64(H, "H", 2)
        result = self._call("program_factored", {"damping": float(damping),
                                                 "reset_state": reset_state,
                                                 "integrator": integrator},
                            {"J": J, "H": H},
                            extra_timeout=(J.nbytes + H.nbytes) / _SLOW_LINK_BYTES_PER_S).result
        self._programmed(result, rows=J.shape[0])
        return result

    def supports(self, op: str) -> bool:
        """Whether the daemon serves ``op`` (from its ``hello``)."""
        return op in self._info.get("ops", ())

    def solve_factored(self, J: Any, H: Any, damping: float, b: Any, *, record_ns: int,
                       x: Any = None, delay_ns: int = 0, burn_ns: int = 0,
                       integrator: str | None = None, seed: int | None = None) -> FactoredSolve:
        """One TNGD step in one round trip (protocol 1.4): run ``delay_ns`` unrecorded under
        the coupling programmed before (if > 0), :meth:`program_factored` (J, H, damping,
        integrator), :meth:`set_bias` (b), :meth:`set_state` (x, if given), run ``burn_ns``
        unrecorded (if > 0), run ``record_ns`` recording (clearing the averager first), and
        :meth:`read`; ``seed`` restarts the noise at the first run. Every step does and costs
        what the op alone would. It runs the device, so it is retried after a timeout only
        when the daemon deduplicates (it then executes at most once).
        """
        arrays = {"J": as_float64(J, "J", 2), "H": as_float64(H, "H", 2),
                  "b": as_float64(b, "b", 1)}
        if x is not None:
            arrays["x"] = as_float64(x, "x", 1)
        seconds = self._run_seconds(delay_ns, False) if delay_ns else 0.0
        m, n = arrays["J"].shape
        # The coupling this call programs sizes its own time-out; the reply's replaces it.
        self._programmed({"n": n, "elements": m * (m + 2 * n),
                          "integrator": integrator or "euler_maruyama"}, rows=m)
        seconds += self._run_seconds(burn_ns + record_ns, False)
        try:
            reply = self._call("solve_factored",
                               {"damping": float(damping), "integrator": integrator,
                                "delay_ns": int(delay_ns), "burn_ns": int(burn_ns),
                                "record_ns": int(record_ns), "seed": seed}, arrays,
                               extra_timeout=seconds + sum(a.nbytes for a in arrays.values())
                               / _SLOW_LINK_BYTES_PER_S)
        except BaseException:  # how far the steps got is the daemon's (details.completed)
            self._forget_programming()
            raise
        steps = [(step["op"], step["result"]) for step in reply.result["steps"]]
        self._programmed(dict(steps)["program_factored"], rows=m)
        self._ready = True
        read = steps[-1][1]
        return FactoredSolve(Readout(mean=reply.arrays["mean"], second_moment=None,
                                     samples=read["samples"],
                                     second_moment_samples=read["second_moment_samples"]),
                             steps)

    def set_bias(self, b: Any) -> dict[str, Any]:
        """Set the bias vector b (N,): the stationary mean becomes A^-1 b."""
        return self._call("set_bias", arrays={"b": as_float64(b, "b", 1)}).result

    def set_state(self, x: Any) -> dict[str, Any]:
        """Set the cell state x (N,), e.g. to warm-start the next run."""
        return self._call("set_state", arrays={"x": as_float64(x, "x", 1)}).result

    def run(self, duration_ns: int, *, record: bool = True, second_moments: bool = False,
            clear: bool = False, seed: int | None = None,
            lag_samples: int = 0) -> dict[str, Any]:
        """Let the device evolve for ``duration_ns`` (a multiple of the ADC sample interval).

        record: add the ADC samples to the device's averager; second_moments: also x x^T;
        lag_samples: L >= 1 also the lag products x_k x_{k-L}^T within this run (the on-device
        lag correlator, protocol 1.5; 0, the default, is not sent, so older daemons accept
        the call); clear: discard previously recorded samples first; seed: restart the noise
        stream.
        A run advances the device and its noise, so it is retried after a timeout only when the
        daemon deduplicates (:attr:`deduplicates`): it then executes at most once.
        """
        args = {"duration_ns": int(duration_ns), "record": record,
                "second_moments": second_moments, "clear": clear, "seed": seed}
        if lag_samples:
            args["lag_samples"] = int(lag_samples)
        result = self._call("run", args, extra_timeout=self._run_seconds(
            duration_ns, second_moments or lag_samples > 0)).result
        self._ready = True
        return result

    def read(self, *, second_moments: bool = False, clear: bool = True,
             lag_moment: bool = False) -> Readout:
        """Time averages of the recorded samples; ``clear`` empties the averager after;
        ``lag_moment`` also the lag moment of runs with ``lag_samples`` (protocol 1.5; not sent
        when False)."""
        args = {"second_moments": second_moments, "clear": clear}
        if lag_moment:
            args["lag_moment"] = True
        reply = self._call("read", args, extra_timeout=8 * self._n**2
                           * (second_moments + lag_moment) / _SLOW_LINK_BYTES_PER_S)
        result = reply.result
        return Readout(mean=reply.arrays["mean"], second_moment=reply.arrays.get("second_moment"),
                       samples=result["samples"],
                       second_moment_samples=result["second_moment_samples"],
                       lag_moment=reply.arrays.get("lag_moment"),
                       lag_pairs=result.get("lag_pairs", 0),
                       lag_samples=result.get("lag_samples", 0))

    def reset(self) -> dict[str, Any]:
        """Power-on state: nothing programmed; the clock and noise stream continue."""
        self._forget_programming()
        return self._call("reset").result

    def shutdown(self) -> None:
        """Ask the daemon to stop (it answers first, then exits with code 0)."""
        self._call("shutdown")

    def acquire(self, ttl_s: float = 60.0, *, wait_s: float = 0.0) -> dict[str, Any]:
        """Take the device's lease: until released, or ``ttl_s`` seconds (wall time) after this
        client's last request, other sessions' device ops are refused (LEASED).

        wait_s: keep trying, with back-off, this long while another session holds it; then
        :class:`~spusim.driver.errors.DeviceLeased`. Acquiring a lease already held renews it;
        if it ran out meanwhile, :class:`~spusim.driver.errors.LeaseExpired` is raised (others
        may have changed the device): call ``acquire`` again, then re-program.
        """
        deadline = time.monotonic() + wait_s
        for wait in _backoffs():
            try:
                result = self._call("acquire", {"ttl_s": float(ttl_s)}).result
                break
            except LeaseExpired:
                self._lease_epoch = None  # reported once; the next acquire asks afresh
                raise
            except DeviceLeased:
                if time.monotonic() + wait > deadline:
                    raise
            time.sleep(wait)
        self._lease_epoch, self._lease_ttl_s = result.get("epoch"), float(ttl_s)
        return result

    def release(self) -> bool:
        """Give the lease up; False if this client did not hold it."""
        released = bool(self._call("release").result["released"])
        self._lease_epoch = None
        return released

    @contextlib.contextmanager
    def lease(self, ttl_s: float = 60.0, *, wait_s: float = 0.0) -> Iterator[Device]:
        """``with device.lease(): ...``: hold the device's lease for the block."""
        self.acquire(ttl_s, wait_s=wait_s)
        try:
            yield self
        finally:
            self.release()

    def inject_fault(self, **faults: Any) -> dict[str, Any]:
        """Replace the faults the daemon injects (it must run with ``--test-mode``); no
        argument switches them all off. Returns the daemon's fault status.

        Triggers (drop_reply, delay_reply, busy, reset, crash_run, adc_glitch) take a
        probability, a (probability, count) pair or the wire map; stuck_cells takes
        {cell: value} or [(cell, value), ...]; also seed, delay_ms, glitch_size, rail.
        See docs/reliability.md.
        """
        args = dict(faults)
        for name in FAULT_TRIGGERS:
            value = args.get(name)
            if isinstance(value, (int, float)):
                args[name] = {"p": float(value)}
            elif isinstance(value, tuple):
                args[name] = {"p": float(value[0]), "count": value[1]}
        stuck = args.get("stuck_cells")
        if stuck is not None:
            pairs = stuck.items() if isinstance(stuck, Mapping) else stuck
            args["stuck_cells"] = [[int(cell), float(value)] for cell, value in pairs]
        return self._call("inject_fault", args).result

    # --- plumbing --------------------------------------------------------------------------

    def _programmed(self, result: dict[str, Any], rows: int) -> None:
        self._n, self._elements, self._rows = result["n"], result["elements"], rows
        self._integrator, self._ready = result["integrator"], False

    def _forget_programming(self) -> None:
        self._n = self._elements = self._rows = 0
        self._integrator, self._ready = None, False

    def _run_seconds(self, duration_ns: int, second_moments: bool) -> float:
        """Generous wall-time bound of a run: the daemon's measured kernel speed x a margin.

        Work per sample: the exact integrator O(N) (16 N; the factored form's elements; 4 N^2 on
        second-order cells), Euler-Maruyama the programmed elements per step, plus a fixed part
        per sample and N^2 for second moments or lag products. Against a 1.2 daemon heartbeats
        keep a call waiting while the daemon works on it, so this bound matters for older
        daemons only.
        """
        config = self._info.get("config", {})
        per_cell_step = float(self._info.get("seconds_per_cell_step", 1e-8))
        interval = int(config.get("sample_interval_ns", 1))
        samples = duration_ns // interval
        if self._integrator == "euler_maruyama":
            per_sample = self._elements * (interval // int(config.get("em_step_ns", interval)))
        elif config.get("dynamics", "overdamped") != "overdamped":  # the full 2N state
            per_sample = 4 * self._n**2
        elif self._elements == self._n**2:  # dense: the modal transition, O(N)
            per_sample = 16 * self._n
        else:  # factored
            per_sample = self._elements
        per_sample += _SAMPLE_OVERHEAD + (self._n**2 if second_moments else 0)
        work = samples * per_sample
        if not self._ready:  # the first run checks the coupling (an eigendecomposition)
            work += 10 * self._elements * self._rows
        return _WORK_TIMEOUT_FACTOR * per_cell_step * work

    def _record_timing(self, op: str, reply: Reply) -> None:
        """Add a reply's phases (laid out in order, ending at the reply's clock) to the totals
        and the timeline; a reply of several steps (``solve_factored``) step by step."""
        steps = reply.result.get("steps")
        if not steps and not reply.result.get("timing"):
            return  # nothing priced (ping, status, ...)
        parts = ([(step["op"], step["result"]["timing"]) for step in steps] if steps
                 else [(op, reply.result.get("timing", {}))])
        start = self._sim_time_ns - sum(int(ns) for _, timing in parts for ns in timing.values())
        for part, timing in parts:
            for phase, ns in timing.items():
                self._phase_ns[phase] = self._phase_ns.get(phase, 0) + int(ns)
                self._timeline.append(Span("device", phase, start, start + int(ns),
                                           {"op": part}))
                start += int(ns)

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
        retries = self.retries if spec_for(op).idempotent or self.deduplicates else 0
        if arrays:
            self._check_frame_sizes(arrays)
        waits = _backoffs()
        heartbeat_s = (max(0.02, min(1.0, self._lease_ttl_s / 4))
                       if self._lease_epoch is not None else None)
        for attempt in range(self.retries + 1):  # BUSY: the request was not executed; resend
            reply = self._transport.call(op, args, arrays, timeout=self.timeout + extra_timeout,
                                         retries=retries, lease=self._lease_epoch,
                                         heartbeat=self.heartbeats, heartbeat_s=heartbeat_s)
            if reply.ok or (reply.error or {}).get("code") != ErrorCode.BUSY:
                break
            if attempt < self.retries:
                time.sleep(next(waits))
        self._sim_time_ns = int(reply.device.get("sim_time_ns", self._sim_time_ns))
        self._record_timing(op, reply)
        boot_id = reply.device.get("boot_id")
        if self._boot_id is not None and boot_id != self._boot_id:
            self._boot_id = boot_id
            self._forget_programming()
            raise DeviceRestarted("RESTARTED", f"the daemon at {self.endpoint} restarted (boot "
                                  f"id now {boot_id}): everything programmed is gone",
                                  {"boot_id": boot_id})
        if not reply.ok:
            assert reply.error is not None
            # A LeaseExpired keeps the stale epoch: every device op is refused until the caller
            # acquires again (or releases), even if the daemon has forgotten this session.
            raise error_from_reply(reply.error)
        return reply


def _backoffs() -> Iterator[float]:
    """The waits before each resend of a request the daemon turned away (BUSY, or LEASED in
    ``acquire``), s: _BACKOFF_S, doubling up to _MAX_BACKOFF_S, for ever."""
    wait = _BACKOFF_S
    while True:
        yield wait
        wait = min(2 * wait, _MAX_BACKOFF_S)
