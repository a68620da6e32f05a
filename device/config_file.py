"""Device configurations as files: TOML written by ``spu config show``, read back by
``spu serve --config``, and JSON (a ``hello`` reply's ``config`` map, as run records keep it).

A file holds a ``profile`` (default ``ideal``) and any DeviceConfig fields, with the timing model
in ``[timing.link]``, ``[timing.dac]`` and ``[timing.adc]`` tables; fields it leaves out keep the
profile's values. An ideal converter range is written ``"ideal"`` (TOML has no null). ``tau_ns``,
which ``hello`` derives from R and C, may be present and must then agree with them.

    profile = "spu-8cell"
    kappa0 = 0.05
    [timing.link]
    bandwidth_bps = 100e9
"""

from __future__ import annotations

import json
import textwrap
import tomllib
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import tomli_w

from spusim.device.config import (
    FIELDS,
    IDEAL,
    TIMING_SECTIONS,
    ConfigError,
    DeviceConfig,
    field_help,
    PROFILES,
    profile_config,
)

DERIVED = "tau_ns"  # in hello's config map, derived from resistance_ohm and capacitance_farad


def read(path: str | Path) -> dict[str, Any]:
    """The mapping in a .toml or .json file (ConfigError if unreadable)."""
    path = Path(path)
    try:
        text = path.read_text()
        return json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, ValueError) as error:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise ConfigError([f"cannot read the configuration file {str(path)!r}: {error}"]) from None


def load(path: str | Path, profile: str | None = None, **overrides: Any) -> DeviceConfig:
    """The configuration of file ``path`` (see :func:`from_mapping`)."""
    return from_mapping(read(path), profile, **overrides)


def from_mapping(mapping: Mapping[str, Any], profile: str | None = None,
                 **overrides: Any) -> DeviceConfig:
    """The configuration ``mapping`` describes, with ``profile`` (if given) replacing its
    profile and ``overrides`` (fields; ``timing`` a mapping of sections) applied over it."""
    fields = dict(mapping)
    tau_ns = fields.pop(DERIVED, None)
    timing = _merged(fields.pop("timing", {}), overrides.pop("timing", {}))
    name = profile or fields.pop("profile", "ideal")
    fields.pop("profile", None)
    config = profile_config(name, **{**fields, **overrides, "timing": timing})
    if tau_ns is not None and tau_ns != config.tau_ns:
        raise ConfigError([f"tau_ns = {tau_ns} ns disagrees with resistance_ohm * "
                           f"capacitance_farad = {config.tau_ns} ns"])
    return config


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """Timing sections: ``changes`` over ``base``, section by section."""
    if not isinstance(base, Mapping):
        raise ConfigError([f"timing must be a table of sections {list(TIMING_SECTIONS)}"])
    return {name: {**base.get(name, {}), **changes.get(name, {})}
            for name in {*base, *changes}}


def to_toml(config: DeviceConfig) -> str:
    """``config`` as a commented TOML file that :func:`load` reads back to an equal config."""
    values = asdict(config)
    lines = ["# spusim device configuration: spu serve --config FILE, Device.spawn(config=FILE).",
             "# Fields left out keep the values of the profile.",
             _entry("profile", config.profile, "one of " + ", ".join(PROFILES))]
    for name in FIELDS:
        if name not in ("profile", "timing"):
            value = IDEAL if values[name] is None else values[name]
            lines.append(_entry(name, value, *field_help(name)))
    for section in TIMING_SECTIONS:
        lines.append(f"\n[timing.{section}]")
        for name, value in values["timing"][section].items():
            lines.append(_entry(name, value, *field_help(name, timing=True)))
    return "\n".join(lines) + "\n"


def _entry(name: str, value: Any, description: str, allowed: str = "") -> str:
    """``name = value`` as TOML, under a comment of what it is, its range and unit."""
    comment = "; ".join(part for part in (description, allowed) if part)
    return "\n".join([*textwrap.wrap(comment, 98, initial_indent="# ", subsequent_indent="# "),
                      tomli_w.dumps({name: value}).strip()])
