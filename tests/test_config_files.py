"""Device configurations as files: ``spu config show`` writes TOML that reads back to the same
configuration, a bad field names itself with its unit and range, and a daemon starts from a
file (``spu serve --config``, ``Device.spawn(config=...)``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spusim import Device
from spusim.device.config import PROFILES, ConfigError, profile_config
from spusim.device.config_file import load, to_toml

DEVICE_CLI = [sys.executable, "-m", "spusim.device"]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_profile_round_trips_through_toml_and_json(tmp_path: Path, profile: str) -> None:
    config = profile_config(profile, kappa0=0.05, seed=7, timing={"link": {"latency_ns": 40}})
    (tmp_path / "chip.toml").write_text(to_toml(config))
    assert load(tmp_path / "chip.toml") == config
    (tmp_path / "hello.json").write_text(json.dumps(config.describe()))  # a record's device
    assert load(tmp_path / "hello.json") == config


def test_an_ideal_converter_is_written_as_ideal_and_read_back_as_none(tmp_path: Path) -> None:
    config = profile_config("tngd-paper", adc_full_scale=None)  # the profile's is 16
    text = to_toml(config)
    assert 'adc_full_scale = "ideal"' in text and "dac_full_scale = 16.0" in text
    (tmp_path / "chip.toml").write_text(text)
    assert load(tmp_path / "chip.toml").adc_full_scale is None


@pytest.mark.parametrize(("fields", "expected"), [
    ({"cells": 0}, "cells = 0: out of range; allowed: 1 <= cells <= 65536 (unit: cells)"),
    ({"kappa0": -0.5}, "kappa0 = -0.5: out of range; allowed: 0 <= kappa0 < inf "
                       "(unit: state units^2)"),
    ({"readout_tau_ns": float("nan")}, "readout_tau_ns = nan: out of range; allowed: "
                                       "0 <= readout_tau_ns < inf (unit: ns)"),
    ({"timing": {"adc": {"bits": 60}}}, "timing.adc.bits = 60: out of range; allowed: "
                                        "1 <= bits <= 52 (unit: bits)"),
    ({"timing": {"link": {"bandwidth_bps": 0}}}, "timing.link.bandwidth_bps = 0: out of range; "
                                                 "allowed: 0 < bandwidth_bps < inf (unit: bit/s)"),
    ({"dynamics": "quantum"}, "dynamics = 'quantum': Input should be 'overdamped', "
                              "'underdamped' or 'rlc'"),
    ({"kappa": 0.5}, "unknown field 'kappa' (did you mean 'kappa0'?)"),
    ({"cells": "8"}, "cells = '8': Input should be a valid integer; allowed: 1 <= cells <= "
                     "65536 (unit: cells)"),  # a file's types are taken as written
    ({"sample_interval_ns": 150}, "sample_interval_ns = 150 ns must be a multiple of "
                                  "em_step_ns = 100 ns"),
])
def test_a_bad_field_names_itself_its_unit_and_range(fields: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        profile_config("ideal", **fields)
    assert error.value.problems == [expected]


def test_every_bad_field_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "chip.toml"
    path.write_text('profile = "spu-8cell"\ncells = 0\nmismatch = -1\n[timing.dac]\nbitz = 3\n')
    with pytest.raises(ConfigError) as error:
        load(path)
    assert [line.split(" ")[0] for line in error.value.problems] == [
        "unknown", "cells", "mismatch"]
    assert "'timing.dac.bitz' (did you mean 'bits'?)" in error.value.problems[0]


def test_config_show_starts_from_a_profile_and_check_names_the_bad_field(tmp_path: Path) -> None:
    shown = subprocess.run([*DEVICE_CLI, "config", "show", "--profile", "spu-8cell",
                            "--kappa0", "0.05", "--link-gbps", "100"],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    path = tmp_path / "chip.toml"
    path.write_text(shown)
    assert load(path) == profile_config("spu-8cell", kappa0=0.05,
                                        timing={"link": {"bandwidth_bps": 100e9}})
    path.write_text(shown.replace("\ncells = 8\n", "\ncells = 70000\n"))
    checked = subprocess.run([*DEVICE_CLI, "config", "check", str(path)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 2 and "Traceback" not in checked.stderr
    assert checked.stderr.strip() == ("spu config: invalid device configuration: cells = 70000: "
                                      "out of range; allowed: 1 <= cells <= 65536 (unit: cells)")


@pytest.mark.daemon
def test_a_daemon_starts_from_a_file_with_options_over_it(tmp_path: Path) -> None:
    path = tmp_path / "chip.toml"
    path.write_text('profile = "spu-8cell"\nseed = 4\nkappa0 = 0.02\n')
    with Device.spawn(config=path, kappa0=0.03) as device:
        config = device.config
        assert (config["profile"], config["cells"], config["seed"], config["kappa0"]) == (
            "spu-8cell", 8, 4, 0.03)
        with Device.spawn(config=config) as again:  # a run record's hello config
            assert again.config == config
