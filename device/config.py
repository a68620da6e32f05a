"""The emulated device's parameters: one frozen, validated record, echoed to hosts by ``hello``.

Units are in the names, and each field states its unit and its allowed range (pydantic checks
them; :func:`profile_config` turns a violation into a :class:`ConfigError` that names the field,
its value, unit and range). Defaults: tau = RC = 1 kOhm x 1 nF = 1 us and an Euler-Maruyama step
of 0.1 tau follow the TNGD paper (arXiv 2405.13817, App. C and D). The capacity, noise level,
ADC sample interval and seed are emulator choices, not taken from a paper. The defaults are the
``ideal`` profile: every non-ideality off. ``PROFILES`` holds the named parameter sets; files of
configurations are device/config_file.py's.
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Mapping
from dataclasses import asdict, field, fields, replace
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic.dataclasses import dataclass
from pydantic.fields import FieldInfo

from spusim.device.converters import Quantizer
from spusim.protocol import INTEGRATORS, MAX_HEADER_BYTES
from spusim.timing import PROFILES as TIMING_PROFILES
from spusim.timing import ConverterModel, LinkModel, TimingModel

DYNAMICS = ("overdamped", "underdamped", "rlc")
IDEAL = "ideal"  # a converter range given as this string: an ideal converter (None)
_INT63 = 2**63


def quantity(unit: str, description: str, **bounds: float) -> Any:
    """A field's metadata: its unit, what it is, and its bounds (ge, gt, le, lt); floats must
    also be finite."""
    return Field(description=description, allow_inf_nan=False,
                 json_schema_extra={"unit": unit}, **bounds)


class ConfigError(ValueError):
    """An invalid device configuration; ``problems`` has one line per offending field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid device configuration: " + "; ".join(problems))


@dataclass(frozen=True, config=ConfigDict(extra="forbid", strict=True))
class DeviceConfig:
    """Parameters of one emulated SPU; each field's description says what it is (``FIELDS``).

    Second-order dynamics run the exact integrator only. Construct with :func:`profile_config`
    (or a file, device/config_file.py) for errors that name the field, its unit and range.
    """

    cells: Annotated[int, quantity("cells", "capacity: the largest N of an N x N coupling",
                                   ge=1, le=65536)] = 4096
    resistance_ohm: Annotated[float, quantity("ohm", "cell resistance R; tau = RC is the time "
                                              "unit of dx = -(A x - b) dt/tau + "
                                              "sqrt(2 kappa0/tau) dW", gt=0)] = 1e3
    capacitance_farad: Annotated[float, quantity("F", "cell capacitance C", gt=0)] = 1e-9
    kappa0: Annotated[float, quantity("state units^2", "noise intensity: the stationary "
                                      "covariance is kappa0 A^-1", ge=0)] = 1e-2
    integrator: Annotated[Literal[INTEGRATORS], Field(
        description="default integrator: the exact OU transition or Euler-Maruyama")] = "exact"
    em_step_ns: Annotated[int, quantity("ns", "Euler-Maruyama step", ge=1)] = 100
    sample_interval_ns: Annotated[int, quantity(
        "ns", "ADC sample interval, a multiple of em_step_ns (the exact integrator steps from "
        "sample to sample)", ge=1)] = 100
    seed: Annotated[int, quantity("", "seed of the noise stream at power-on", ge=0,
                                  lt=_INT63)] = 0
    profile: Annotated[str, Field(description="the named parameter set this configuration "
                                              "started from (PROFILES)")] = "ideal"
    timing: TimingModel = field(default_factory=TimingModel)
    dac_full_scale: Annotated[float | None, quantity(
        "state units", "range +-value of the coupling DAC; \"ideal\": no rounding, no "
        "clipping", gt=0)] = None
    bias_full_scale: Annotated[float | None, quantity(
        "state units", "range of the bias and state DAC; \"ideal\": none", gt=0)] = None
    adc_full_scale: Annotated[float | None, quantity(
        "state units", "range of the ADC; \"ideal\": none", gt=0)] = None
    readout_noise: Annotated[float, quantity(
        "state units", "standard deviation of the noise the ADC adds to each reading",
        ge=0)] = 0.0
    mismatch: Annotated[float, quantity(
        "relative", "standard deviation of every programmed element's fixed error", ge=0)] = 0.0
    bias_offset: Annotated[float, quantity(
        "state units", "standard deviation of the fixed per-cell bias offsets", ge=0)] = 0.0
    readout_offset: Annotated[float, quantity(
        "state units", "standard deviation of the fixed per-cell readout offsets", ge=0)] = 0.0
    serial: Annotated[int, quantity("", "the chip's serial number: same serial, same mismatch "
                                        "and offsets", ge=0, lt=_INT63)] = 0
    dynamics: Annotated[Literal[DYNAMICS], Field(
        description="the cells: RC (overdamped, first order), underdamped Langevin (mass, "
                    "friction), or the SPU board's RLC cells (a programmed A becomes the "
                    "Maxwell capacitance matrix capacitance_farad * A)")] = "overdamped"
    mass: Annotated[float, quantity("tau units", "underdamped cells: mass", gt=0)] = 1.0
    friction: Annotated[float, quantity("tau units", "underdamped cells: friction", gt=0)] = 1.0
    inductance_henry: Annotated[float, quantity("H", "rlc cells: inductance L", gt=0)] = 1e-6
    sign_capable: Annotated[bool, Field(
        description="rlc cells: couplings of either sign (differential), so any symmetric "
                    "positive definite matrix can be programmed")] = False
    program_tau_ns: Annotated[float, quantity(
        "ns", "finite bandwidth of the programming path: every programmed element settles to "
        "its new value as a first-order step response with this time constant while the "
        "cells run (0: instantaneous)", ge=0)] = 0.0
    readout_tau_ns: Annotated[float, quantity(
        "ns", "anti-alias filter before the ADC: first-order low-pass time constant, -3 dB at "
        "1 / (2 pi readout_tau_ns) (0: none)", ge=0)] = 0.0

    @field_validator("dac_full_scale", "bias_full_scale", "adc_full_scale", mode="before")
    @classmethod
    def _ideal(cls, value: Any) -> Any:
        return None if value == IDEAL else value

    def __post_init__(self) -> None:
        problems = []
        if self.tau_ns < 1:
            problems.append(f"tau = resistance_ohm * capacitance_farad = {self.tau_seconds:.3g} "
                            "s must be at least 1 ns")
        if self.sample_interval_ns % self.em_step_ns:
            problems.append(f"sample_interval_ns = {self.sample_interval_ns} ns must be a "
                            f"multiple of em_step_ns = {self.em_step_ns} ns")
        adc_ns = self.timing.adc.time_ns(self.cells, self.cells)
        if adc_ns > self.sample_interval_ns:
            problems.append(f"the ADC needs {adc_ns} ns to convert all {self.cells} cells, more "
                            f"than sample_interval_ns = {self.sample_interval_ns} ns (fewer "
                            "cells, more timing.adc.channels, or a longer interval)")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def tau_seconds(self) -> float:
        return self.resistance_ohm * self.capacitance_farad

    @property
    def tau_ns(self) -> int:
        """tau = RC in whole nanoseconds."""
        return round(self.tau_seconds * 1e9)

    @property
    def max_frame_bytes(self) -> int:
        """Largest frame the daemon accepts: twice a full coupling matrix, so that a matrix
        somewhat over capacity is still answered (CAPACITY_EXCEEDED); larger frames are
        dropped by the transport without a reply."""
        return max(2 * 8 * self.cells * self.cells, MAX_HEADER_BYTES)

    @property
    def coupling_dac(self) -> Quantizer:
        """The DAC of the programmed couplings (matrix, factors, damping)."""
        return Quantizer(self.timing.dac.bits, self.dac_full_scale)

    @property
    def bias_dac(self) -> Quantizer:
        """The DAC of the bias and of a set state."""
        return Quantizer(self.timing.dac.bits, self.bias_full_scale)

    @property
    def adc(self) -> Quantizer:
        return Quantizer(self.timing.adc.bits, self.adc_full_scale)

    @property
    def ideal_readout(self) -> bool:
        """True when the ADC converts its input exactly (no offset, noise, clipping or rounding;
        the anti-alias filter in front of it is ``readout_tau_ns``)."""
        return (self.adc_full_scale is None and self.readout_noise == 0
                and self.readout_offset == 0)

    def describe(self) -> dict[str, Any]:
        """The configuration as sent in ``hello`` (msgpack-serialisable)."""
        return {**asdict(self), "tau_ns": self.tau_ns}


FIELDS: dict[str, FieldInfo] = DeviceConfig.__pydantic_fields__

# Units and bounds of the timing model's fields (timing/ itself stays free of pydantic).
TIMING_FIELDS: dict[str, tuple[str, str, dict[str, float]]] = {
    "bits_per_value": ("bits", "width of one transferred value", {"ge": 1, "le": 64}),
    "bandwidth_bps": ("bit/s", "link bandwidth", {"gt": 0}),
    "latency_ns": ("ns", "fixed cost of each transfer", {"ge": 0}),
    "bits": ("bits", "converter resolution", {"ge": 1, "le": 52}),
    "conversion_ns": ("ns", "time of one conversion", {"ge": 0}),
    "channels": ("converters", "converters in parallel (0: one per cell)", {"ge": 0}),
    "settle_tau_ns": ("ns", "settling time constant, waited for (a cost in time)", {"ge": 0}),
}


def _section(kind: type) -> type[BaseModel]:
    """A pydantic model of one timing dataclass (LinkModel, ConverterModel), its defaults."""
    hints = typing.get_type_hints(kind)
    return create_model(
        kind.__name__, __config__=ConfigDict(extra="forbid", strict=True),
        **{f.name: (Annotated[hints[f.name], quantity(unit, text, **bounds)], f.default)
           for f in fields(kind) for unit, text, bounds in [TIMING_FIELDS[f.name]]})


TIMING_SECTIONS: dict[str, tuple[type, type[BaseModel]]] = {
    "link": (LinkModel, _section(LinkModel)),
    "dac": (ConverterModel, _section(ConverterModel)),
    "adc": (ConverterModel, _section(ConverterModel)),
}


def timing_model(base: TimingModel, changes: Mapping[str, Any]) -> TimingModel:
    """``base`` with ``changes`` ({"link": {...}, "dac": {...}, "adc": {...}}, each a subset of
    the section's fields) applied; ConfigError names each bad ``timing.SECTION.FIELD``."""
    problems = [f"unknown section timing.{name}; known: {', '.join(TIMING_SECTIONS)}"
                for name in changes if name not in TIMING_SECTIONS]
    sections = {}
    for name, (kind, model) in TIMING_SECTIONS.items():
        try:
            given = model.model_validate({**asdict(getattr(base, name)), **changes.get(name, {})})
        except ValidationError as error:
            problems += explain(error, ("timing", name))
        else:
            sections[name] = kind(**given.model_dump())
    if problems:
        raise ConfigError(problems)
    return TimingModel(**sections)


def explain(error: ValidationError, prefix: tuple[str, ...] = ()) -> list[str]:
    """One line per problem of ``error`` (located under ``prefix``): the field, its value, and
    its unit and allowed range."""
    lines = []
    for problem in error.errors():
        location = (*prefix, *map(str, problem["loc"]))
        name, leaf = ".".join(location), location[-1] if location else ""
        if location[:1] == ("timing",):
            known: Mapping[str, Any] = TIMING_FIELDS
            unit, _, bounds = TIMING_FIELDS.get(leaf, ("", "", {}))
        else:
            known, info = FIELDS, FIELDS.get(leaf)
            unit = (info.json_schema_extra or {}).get("unit", "") if info else ""
            bounds = _bounds(info) if info else {}
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            near = difflib.get_close_matches(leaf, list(known), n=1)
            lines.append(f"unknown field {name!r}"
                         + (f" (did you mean {near[0]!r}?)" if near else ""))
        elif not name:
            lines.append(message)
        else:
            allowed = _range_text(leaf, bounds, unit)
            if problem["type"] in _OUT_OF_RANGE and allowed:
                message = "out of range"
            lines.append(f"{name} = {problem['input']!r}: {message}"
                         + (f"; allowed: {allowed}" if allowed else ""))
    return lines


_OUT_OF_RANGE = ("greater_than", "greater_than_equal", "less_than", "less_than_equal",
                 "finite_number")


def field_help(name: str, timing: bool = False) -> tuple[str, str]:
    """(what it is, its allowed range with its unit) of a DeviceConfig field, or of a timing
    section's field with ``timing``."""
    if timing:
        unit, text, bounds = TIMING_FIELDS[name]
        return text, _range_text(name, bounds, unit)
    info = FIELDS[name]
    unit = (info.json_schema_extra or {}).get("unit", "")
    choices = typing.get_args(info.annotation) if typing.get_origin(info.annotation) is Literal \
        else ()
    allowed = "one of " + ", ".join(choices) if choices else _range_text(name, _bounds(info), unit)
    return info.description or "", allowed


def _bounds(info: FieldInfo) -> dict[str, float]:
    bounds: dict[str, float] = {}
    for item in info.metadata:
        for kind, key in ((Ge, "ge"), (Gt, "gt"), (Le, "le"), (Lt, "lt")):
            if isinstance(item, kind):
                bounds[key] = getattr(item, key)
    return bounds


def _range_text(name: str, bounds: Mapping[str, float], unit: str) -> str:
    """"0 <= kappa0 < inf (unit: state units^2)": a field's allowed range and unit."""
    if not bounds:
        return ""
    def number(value: float) -> str:
        return "2^63" if value == _INT63 else f"{value:g}"

    low = (f"{number(bounds['ge'])} <= " if "ge" in bounds else
           f"{number(bounds['gt'])} < " if "gt" in bounds else "")
    high = (f" <= {number(bounds['le'])}" if "le" in bounds else
            f" < {number(bounds['lt'])}" if "lt" in bounds else " < inf")
    return f"{low}{name}{high}" + (f" (unit: {unit})" if unit else "")


# Named parameter sets. Values the papers do not give (ranges, mismatch, noise: neither
# arXiv 2405.13817 nor arXiv 2312.04836 states them) are plausible choices, documented in
# docs/physics.md as such.
PROFILES: dict[str, dict[str, Any]] = {
    "ideal": {},
    # The TNGD paper's assumptions: 16-bit conversions, RC = 1 us; the ranges are ours.
    "tngd-paper": {"dac_full_scale": 16.0, "bias_full_scale": 16.0, "adc_full_scale": 16.0},
    # The 8-cell SPU board (arXiv 2312.04836): 8 capacitively coupled RLC cells read at 12 MHz;
    # L = 1 uH (a 5 MHz resonance with 1 nF), 12-bit converters, 1 % component tolerance and
    # 1 mV-scale offsets and noise are our assumptions.
    "spu-8cell": {"cells": 8, "dynamics": "rlc", "inductance_henry": 1e-6,
                  "dac_full_scale": 2.0, "bias_full_scale": 2.0,
                  "adc_full_scale": 2.0, "mismatch": 0.01, "bias_offset": 1e-3,
                  "readout_offset": 1e-3, "readout_noise": 1e-3},
}
_CONVERTER_BITS = {"tngd-paper": 16, "spu-8cell": 12}


def profile_config(name: str, **overrides: Any) -> DeviceConfig:
    """The configuration of profile ``name`` with ``overrides`` applied (field names; ``timing``
    a TimingModel or a mapping of the sections to change). Raises :class:`ConfigError`, naming
    each offending field with its unit and range."""
    if name not in PROFILES:
        raise ConfigError([f"unknown profile {name!r}; known: {sorted(PROFILES)}"])
    timing = TIMING_PROFILES[name]
    if name in _CONVERTER_BITS:
        bits = _CONVERTER_BITS[name]
        timing = replace(timing, dac=replace(timing.dac, bits=bits),
                         adc=replace(timing.adc, bits=bits))
    changes, problems = overrides.pop("timing", {}), []
    try:
        timing = timing_model(timing, changes) if isinstance(changes, Mapping) else changes
    except ConfigError as error:
        problems += error.problems  # and check the other fields with the profile's timing
    try:
        config = DeviceConfig(**{"profile": name, "timing": timing, **PROFILES[name],
                                 **overrides})
    except ValidationError as error:
        problems += explain(error)
    if problems:
        raise ConfigError(problems)
    return config
