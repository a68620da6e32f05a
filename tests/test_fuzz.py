"""Fuzzing the daemon with hypothesis: random frames, structure-aware headers and mutated valid
requests. Every message must get exactly one reply (an error with a code of the closed list, or
a result), the daemon must never stop, and afterwards it must still compute correctly.

The default run sends 1 000 messages; ``-m slow`` sends 100 000 (docs/reliability.md).
Fuzzing ops exclude ``shutdown`` (it would stop the daemon, as it should) and ``acquire`` (a
lease held by a fuzz session would, correctly, refuse the final check's device ops).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from unittest import mock

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import providers

from spusim import Device
from spusim.protocol import OPS, ErrorCode, decode_reply, encode_request
from tests.conftest import ServedDevice

EXCLUDED_OPS = frozenset({"shutdown", "acquire"})
FUZZ_OPS = sorted(set(OPS) - EXCLUDED_OPS)
CODES = {code.value for code in ErrorCode}
CONFIG = {"kappa0": 0.01, "cells": 8}
BATCH = 1000  # examples per hypothesis run

# --- strategies --------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
                    st.binary(max_size=8))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-3, 3)), inner, max_size=4)),
    max_leaves=8)
unknown_ops = st.text(max_size=12).filter(lambda name: name not in EXCLUDED_OPS)
# Valid run durations stay short (at most 10^4 samples on at most 5 cells); the invalid ones
# include huge values that fail validation.
durations = st.one_of(st.integers(-200, 1_000_000), st.sampled_from([0, 2**62, 2**64 - 1]),
                      st.floats(0, 1e6), st.none(), st.text(max_size=3))
triggers = st.one_of(st.none(), st.fixed_dictionaries({}, optional={
    "p": st.one_of(st.floats(-1, 2), values), "count": st.one_of(st.integers(-2, 5), values)}),
    values)
ARG_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "duration_ns": durations,
    "integrator": st.one_of(st.sampled_from([None, "exact", "euler_maruyama", "rk4"]), values),
    "ttl_s": st.one_of(st.floats(-1, 4000), values),
    "stuck_cells": st.one_of(st.lists(st.lists(st.one_of(st.integers(-1, 9), values),
                                               min_size=2, max_size=2), max_size=3), values),
    **dict.fromkeys(("drop_reply", "delay_reply", "busy", "reset", "crash_run", "adc_glitch"),
                    triggers),
}
plausible = st.one_of(st.booleans(), st.none(), st.integers(-3, 2**63), st.floats(-10, 10),
                      values)


def uniform_mask(draw: st.DrawFn, bits: int) -> int:
    """``bits`` random bits from one draw (hypothesis favours small integers; this does not)."""
    drawn = draw(st.integers(0, 2**32 - 1))
    return int(np.random.default_rng(drawn).integers(0, 2**bits))


def junk(mask: int, slot: int) -> bool:
    """One time in 16: whether field ``slot`` gets a junk value (4 bits of ``mask`` a slot)."""
    return (mask >> (4 * slot)) & 15 == 0


@st.composite
def arrays(draw: st.DrawFn, names: tuple[str, ...]) -> tuple[list[Any], list[bytes]]:
    """Descriptors and frames: mostly well-formed (often a usable SPD matrix), sometimes not.

    Few draws per array (a bit mask, a size, a seed): hypothesis's cost is per draw.
    """
    specs, frames = [], []
    chosen = list(names) if draw(st.integers(0, 7)) else draw(st.lists(st.sampled_from(
        ["A", "b", "x", "J", "H", "zz"]), max_size=3))
    for name in chosen:
        mask, n = uniform_mask(draw, 24), draw(st.integers(0, 5))
        rng = np.random.default_rng(mask)
        shape: Any = [n, n] if name in ("A", "H", "J") else [n]
        if junk(mask, 0):
            shape = draw(st.one_of(st.lists(st.integers(-2, 6), max_size=3), values))
        valid_shape = isinstance(shape, list) and all(
            isinstance(d, int) and 0 <= d < 8 for d in shape)
        array = rng.standard_normal(math.prod(shape) if valid_shape else 1)
        if shape == [n, n] and mask & 1 << 20:  # symmetric positive definite
            half = array.reshape(n, n)
            array = half + half.T + 2 * n * np.eye(n)
        elif array.size and junk(mask, 2):
            array.flat[rng.integers(array.size)] = rng.choice([np.nan, np.inf, -np.inf])
        frame = array.astype("<f8").tobytes()
        if junk(mask, 3):
            frame = rng.bytes(int(rng.integers(0, 64)))
        spec: Any = {"name": name, "dtype": "<f8", "shape": shape}
        if junk(mask, 4):
            spec["dtype"] = draw(st.one_of(st.sampled_from(["<f4", ">f8", "f8"]), values))
        if junk(mask, 1):
            spec = draw(values)
        specs.append(spec)
        frames.append(frame)
    return specs, frames


@st.composite
def structured(draw: st.DrawFn) -> list[bytes]:
    """A header built field by field: each field valid 15 times in 16, else junk; arrays to
    match."""
    mask = uniform_mask(draw, 44)
    op = draw(unknown_ops) if junk(mask, 8) else draw(st.sampled_from(FUZZ_OPS))
    spec = OPS.get(op)
    names = [arg.name for arg in spec.args] if spec else []
    chosen = draw(st.lists(st.sampled_from(names), unique=True)) if names else []
    args: Any = {name: draw(ARG_VALUES.get(name, plausible)) for name in chosen}
    if junk(mask, 0):
        args.update(draw(st.dictionaries(st.text(max_size=6), values, max_size=2)))
    descriptors, frames = draw(arrays(spec.arrays if spec else ()))
    sessions = [None, "s1", "s2", None, "s1", "s2", "s3"]
    header: dict[Any, Any] = {
        "v": [1, 1] if mask & 1 << 36 else [1, 0], "id": draw(st.integers(0, 2**64 - 1)),
        "op": op, "session": sessions[(mask >> 37) % 7], "args": args, "arrays": descriptors}
    for slot, key in enumerate(header, start=1):
        if junk(mask, slot):
            header[key] = draw(values) if key != "session" else draw(
                st.one_of(st.text(max_size=130), values))
    if junk(mask, 6):
        del header[draw(st.sampled_from(list(header)))]
    if junk(mask, 7) and mask & 1 << 40:
        header[draw(st.one_of(st.text(max_size=4), st.integers(0, 3)))] = draw(values)
    return [msgpack.packb(header), *frames]


@st.composite
def mutated(draw: st.DrawFn) -> list[bytes]:
    """A valid request with a few bytes of its header flipped, inserted or deleted."""
    frames = [bytes(memoryview(frame)) for frame in encode_request(
        draw(st.integers(0, 2**64 - 1)), draw(st.sampled_from(FUZZ_OPS)),
        {"duration_ns": 100}, session="m")]
    header = bytearray(frames[0])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(header)))
        match draw(st.integers(0, 2)):
            case 0 if at < len(header):
                header[at] ^= 1 << draw(st.integers(0, 7))
            case 1:
                header[at:at] = draw(st.binary(min_size=1, max_size=4))
            case _:
                del header[at:at + draw(st.integers(1, 4))]
    return [bytes(header), *frames[1:]]


raw = st.lists(st.binary(max_size=256), min_size=1, max_size=6)


@st.composite
def messages(draw: st.DrawFn) -> list[bytes]:
    """Random frames 2 times in 10, a mutated valid request 2 in 10, else a structured one."""
    kind = uniform_mask(draw, 8) % 10
    return draw(raw if kind < 2 else mutated() if kind < 4 else structured())

# --- the test --------------------------------------------------------------------------------


def experiment(device: Device) -> np.ndarray:
    """A deterministic computation: program, bias, a seeded run from x = 0, read."""
    A = np.array([[2.0, 0.5, 0.0], [0.5, 1.5, 0.3], [0.0, 0.3, 1.0]])
    device.program(A, reset_state=True, integrator="exact")
    device.set_bias([1.0, -0.5, 0.8])
    device.run(20_000, seed=3, clear=True)
    return device.read().mean


def fuzz(examples: int) -> dict[str, Any]:
    """Send ``examples`` fuzzed messages to an in-process daemon; check every reply and the
    daemon afterwards. Returns figures for docs/reliability.md."""
    with no_source_constants():
        return _fuzz(examples)


@contextlib.contextmanager
def no_source_constants() -> Iterator[None]:
    """Hypothesis also draws literals found in the loaded modules' source: the messages would
    then change with any string in the package (and with which modules a test run loaded).
    Without them the draws depend on the seed alone. (A private hook of Hypothesis: a version
    without it draws no such constants, and nothing needs patching.)"""
    if not hasattr(providers, "_get_local_constants"):
        yield
        return
    with mock.patch.object(providers, "_get_local_constants", providers.Constants):
        yield


def _fuzz(examples: int) -> dict[str, Any]:
    served = ServedDevice(**CONFIG)
    outcomes: Counter[str] = Counter()
    try:
        with zmq.Context() as context, context.socket(zmq.DEALER) as socket:
            socket.linger = 0
            socket.connect(served.endpoint)

            def one(frames: list[bytes]) -> None:
                socket.send_multipart(frames)
                assert socket.poll(5000), f"no reply to {frames!r}"
                reply_frames = socket.recv_multipart()
                if frames[0] == b"":  # sent with an empty first frame: a REQ-style delimiter
                    assert reply_frames[0] == b""
                    reply_frames = reply_frames[1:]
                reply = decode_reply(reply_frames)
                if reply.ok:
                    outcomes["ok"] += 1
                else:
                    assert reply.error is not None and reply.error["code"] in CODES
                    assert reply.error["code"] != ErrorCode.INTERNAL, reply.error
                    outcomes[reply.error["code"]] += 1

            started = time.perf_counter()
            for batch in range(math.ceil(examples / BATCH)):  # batches: hypothesis's memory
                run = settings(max_examples=min(BATCH, examples - batch * BATCH), deadline=None,
                               database=None, suppress_health_check=list(HealthCheck))(
                    given(frames=messages())(one))
                seed(batch)(run)()  # reproducible: batch k always draws the same messages
            elapsed = time.perf_counter() - started
            assert not socket.poll(200), "a message got more than one reply"
        sent = sum(outcomes.values())
        with Device.connect(served.endpoint, timeout=5.0) as device:
            counters = device.status()["counters"]  # counted before its own reply
            assert counters["requests"] == counters["replies"] + 1 >= sent
            mean = experiment(device)
        assert served._thread.is_alive()
    finally:
        served.stop()
    fresh = ServedDevice(**CONFIG)
    try:
        with Device.connect(fresh.endpoint, timeout=5.0) as device:
            np.testing.assert_array_equal(mean, experiment(device))  # still computes exactly
    finally:
        fresh.stop()
    return {"messages": sent, "seconds": elapsed, "outcomes": dict(outcomes)}


def report(figures: dict[str, Any]) -> None:
    print(f"\nfuzz: {figures['messages']} messages in {figures['seconds']:.1f} s "
          f"({figures['messages'] / figures['seconds']:.0f}/s), outcomes {figures['outcomes']}")


def test_fuzzed_messages_are_all_answered_and_the_daemon_stays_correct() -> None:
    figures = fuzz(1000)
    report(figures)
    assert figures["messages"] >= 1000
    outcomes = figures["outcomes"]
    # The fuzzer reaches deep: well-formed requests that succeed, and many distinct errors.
    assert outcomes.get("ok", 0) > 50 and len(outcomes) >= 8, outcomes


@pytest.mark.slow
@pytest.mark.timeout(3600)  # about 10 minutes on 2 cores
def test_fuzz_100k_messages() -> None:
    figures = fuzz(100_000)
    report(figures)
    assert figures["messages"] >= 100_000
