"""The operations of protocol 1.x: their arguments, input arrays and whether a retry is safe.

Both sides use these specs: the daemon validates every request against them, the host library
uses ``idempotent`` to decide whether a timed-out call may be sent again (Lazy Pirate). The
meaning of each op is specified in docs/protocol.md.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from spusim.protocol.codec import UINT64_MAX
from spusim.protocol.errors import ErrorCode, ProtocolError

INTEGRATORS = ("exact", "euler_maruyama")
# Drifts ``program`` accepts (1.3): a symmetric coupling, or any real matrix whose eigenvalues
# have positive real parts (non-reciprocal couplings, docs/physics.md).
DRIFTS = ("symmetric", "general")
# Faults ``inject_fault`` can switch on, each a trigger {"p", "count"} (docs/reliability.md).
FAULT_TRIGGERS = ("drop_reply", "delay_reply", "busy", "reset", "crash_run", "adc_glitch")
MAX_LEASE_S = 3600.0  # longest lease a session may ask for, wall-clock seconds
MAX_STUCK_CELLS = 1024  # entries of inject_fault's stuck_cells
_REQUIRED = object()
# How a rejected argument is quoted in an error message: a few levels and items, never a
# RecursionError on a deeply nested value (1.2).
_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxstring, _QUOTE.maxother = 3, 40, 40


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _is_trigger(value: Any) -> bool:
    """nil, or {"p": probability (default 1), "count": nil or a positive int} (no other keys)."""
    if value is None:
        return True
    if not isinstance(value, dict) or not set(value) <= {"p", "count"}:
        return False
    p, count = value.get("p", 1.0), value.get("count")
    return (_is_real(p) and 0 <= p <= 1
            and (count is None or (_is_int(count) and 0 < count < 2**31)))


def _is_stuck_cells(value: Any) -> bool:
    """An array of at most MAX_STUCK_CELLS [cell index, value] pairs."""
    return (isinstance(value, list) and len(value) <= MAX_STUCK_CELLS
            and all(isinstance(pair, list) and len(pair) == 2 and _is_int(pair[0])
                    and 0 <= pair[0] < 2**31 and _is_real(pair[1]) for pair in value))


@dataclass(frozen=True)
class Arg:
    """One named argument: its check, the wording of that check, and its default."""

    name: str
    check: Callable[[Any], bool]
    expects: str
    default: Any = _REQUIRED


@dataclass(frozen=True)
class OpSpec:
    """An operation: its arguments, the arrays it takes (``optional_arrays`` may be left out),
    and whether repeating it is harmless."""

    name: str
    idempotent: bool
    args: tuple[Arg, ...] = ()
    arrays: tuple[str, ...] = ()
    optional_arrays: tuple[str, ...] = ()

    # Sets for validate, built once per spec (validate runs on every request).
    @cached_property
    def _known(self) -> frozenset[str]:
        return frozenset(arg.name for arg in self.args)

    @cached_property
    def _required_arrays(self) -> frozenset[str]:
        return frozenset(self.arrays)

    @cached_property
    def _accepted_arrays(self) -> frozenset[str]:
        return frozenset((*self.arrays, *self.optional_arrays))

    def validate(self, args: Mapping[str, Any], arrays: Mapping[str, Any]) -> dict[str, Any]:
        """Arguments with defaults filled in; raises ``BAD_ARGUMENT`` for anything amiss."""
        if not args.keys() <= self._known:
            unknown = sorted(set(args) - self._known)
            raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                f"{self.name}: unknown argument(s) {unknown}; accepted: "
                                f"{sorted(self._known)}", op=self.name, unknown=unknown)
        if not self._required_arrays <= arrays.keys() <= self._accepted_arrays:
            optional = f" (optional: {list(self.optional_arrays)})" if self.optional_arrays else ""
            raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                f"{self.name}: takes arrays {list(self.arrays)}{optional}, got "
                                f"{sorted(arrays)}", op=self.name, expected=list(self.arrays))
        values = {}
        for arg in self.args:
            if arg.name not in args:
                if arg.default is _REQUIRED:
                    raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                        f"{self.name}: missing argument {arg.name!r} "
                                        f"({arg.expects})", op=self.name, argument=arg.name)
                values[arg.name] = arg.default
            elif not arg.check(args[arg.name]):
                raise ProtocolError(ErrorCode.BAD_ARGUMENT,
                                    f"{self.name}: argument {arg.name!r} must be {arg.expects}, "
                                    f"got {_QUOTE.repr(args[arg.name])}", op=self.name,
                                    argument=arg.name)
            else:
                values[arg.name] = args[arg.name]
        return values


def _flag(name: str, default: bool) -> Arg:
    return Arg(name, lambda v: isinstance(v, bool), "true or false", default)


def _duration(name: str, default: Any = _REQUIRED) -> Arg:
    """A run length in ns: positive, or with a default of 0 also 0 (no run)."""
    low = 0 if default == 0 else 1
    return Arg(name, lambda v: _is_int(v) and low <= v < 2**62,
               f"an integer number of nanoseconds >= {low}", default)


_INTEGRATOR = Arg("integrator", lambda v: v is None or v in INTEGRATORS,
                  f"null or one of {list(INTEGRATORS)}", None)
_DAMPING = Arg("damping", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
               and 0 <= v < float("inf"), "a finite number >= 0")
_SEED = Arg("seed", lambda v: v is None or (_is_int(v) and 0 <= v < 2**63),
            "null or a non-negative 63-bit integer", None)

OPS: dict[str, OpSpec] = {spec.name: spec for spec in (
    OpSpec("hello", idempotent=True),
    OpSpec("ping", idempotent=True, args=(  # 1.2: ``request`` asks about one of its requests
        Arg("request", lambda v: v is None or (_is_int(v) and 0 <= v <= UINT64_MAX),
            "null or a request id of this session", None),
    )),
    OpSpec("status", idempotent=True),
    OpSpec("program", idempotent=True, arrays=("A",), args=(
        _flag("reset_state", False),
        _INTEGRATOR,
        Arg("drift", lambda v: v in DRIFTS, f"one of {list(DRIFTS)}", "symmetric"),  # 1.3
    )),
    OpSpec("program_factored", idempotent=True, arrays=("J", "H"), args=(
        _DAMPING,
        _flag("reset_state", False),
        _INTEGRATOR,
    )),
    OpSpec("set_bias", idempotent=True, arrays=("b",)),
    OpSpec("set_state", idempotent=True, arrays=("x",)),
    OpSpec("run", idempotent=False, args=(
        Arg("duration_ns", lambda v: _is_int(v) and 0 < v < 2**62,
            "a positive integer number of nanoseconds"),
        _flag("record", True),
        _flag("second_moments", False),
        _flag("clear", False),
        _SEED,
        # 1.5: the on-device lag correlator (x_k x_{k-L}^T, L sample intervals apart)
        Arg("lag_samples", lambda v: _is_int(v) and 0 <= v < 2**31,
            "an integer number of sample intervals >= 0 (0: no lag products)", 0),
    )),
    OpSpec("read", idempotent=False, args=(_flag("second_moments", False), _flag("clear", True),
                                           _flag("lag_moment", False))),  # lag_moment: 1.5
    OpSpec("reset", idempotent=True),
    OpSpec("shutdown", idempotent=True),
    # Protocol 1.1: leases and fault injection.
    OpSpec("acquire", idempotent=True, args=(
        Arg("ttl_s", lambda v: _is_real(v) and 0 < v <= MAX_LEASE_S,
            f"a number of seconds in (0, {MAX_LEASE_S:g}]", 60.0),
    )),
    OpSpec("release", idempotent=True),
    OpSpec("inject_fault", idempotent=True, args=(
        Arg("seed", lambda v: _is_int(v) and 0 <= v < 2**63, "a non-negative 63-bit integer", 0),
        *(Arg(name, _is_trigger, 'null or {"p": probability, "count": null or a positive '
              'integer}', None) for name in FAULT_TRIGGERS),
        Arg("delay_ms", lambda v: _is_real(v) and 0 <= v <= 600_000,
            "a number of milliseconds in [0, 600000]", 100.0),
        Arg("glitch_size", _is_real, "a finite number", 10.0),
        Arg("stuck_cells", _is_stuck_cells,
            f"an array of at most {MAX_STUCK_CELLS} [cell index, finite value] pairs", []),
        Arg("rail", lambda v: v is None or (_is_real(v) and v > 0),
            "null or a positive finite number", None),
    )),
    # Protocol 1.2: stop a request of this session (queued or running).
    OpSpec("cancel", idempotent=True, args=(
        Arg("request", lambda v: _is_int(v) and 0 <= v <= UINT64_MAX,
            "a request id of this session"),
    )),
    # Protocol 1.4: one TNGD step (delay, program_factored, set_bias, set_state, runs, read).
    OpSpec("solve_factored", idempotent=False, arrays=("J", "H", "b"), optional_arrays=("x",),
           args=(
        _DAMPING,
        _INTEGRATOR,
        _duration("delay_ns", 0),
        _duration("burn_ns", 0),
        _duration("record_ns"),
        _SEED,
    )),
)}


def spec_for(op: str) -> OpSpec:
    """The spec of ``op``; raises ``UNKNOWN_OP`` naming the ops that exist."""
    try:
        return OPS[op]
    except KeyError:
        raise ProtocolError(ErrorCode.UNKNOWN_OP,
                            f"unknown op {op!r}; this daemon knows {sorted(OPS)}",
                            op=op, known=sorted(OPS)) from None
