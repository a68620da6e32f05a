"""A command line that explains itself: each default shown once and only where it means
something, no abbreviated options (here, on the daemon, and through the pytest plugin), one line
and exit code 2 for a user's mistake, ``spu status`` readable or as JSON, ``spu timing
--link-gbps``, and TNGD labels that state the analog time really run."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spusim import DaemonStartError
from spusim.cli import build_parser
from spusim.driver.daemon import DaemonProcess
from spusim.hil.plugin import SpuDaemon
from spusim.training.runs import RunSpec

SPU = str(Path(sys.executable).with_name("spu"))


def _spu(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SPU, *args], capture_output=True, text=True, timeout=timeout)


def _command(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return commands.choices[name]


def _help(command: str) -> str:
    return " ".join(_command(command).format_help().split())  # one line: wrapping aside


@pytest.mark.parametrize("command", ["train", "timing", "status", "demo", "plot", "compare"])
def test_help_shows_each_real_default_once(command: str) -> None:
    parser = _command(command)
    formatter = parser._get_formatter()  # noqa: SLF001
    for action in parser._actions:  # noqa: SLF001
        if action.help:
            text = formatter._expand_help(action)  # noqa: SLF001
            assert text.count("default") <= 1, text
            assert not any(f"(default: {value})" in text for value in ("None", "True", "False"))


def test_train_help_names_the_default_optimizer_and_warm_start_reads_right() -> None:
    text = _help("train")
    assert "the device (tngd, tngd-adam) (default: tngd)" in text
    assert "--lr LR learning rate (default: the optimizer's, listed below) --momentum" in text
    assert ("--warm-start keep the state between iterations even at t_d = 0 (default: "
            "Algorithm 1's rule: reset at t_d = 0, kept at t_d > 0) --no-warm-start") in text


def test_status_and_timing_options_are_explained() -> None:
    status = _help("status")
    assert "--connect ENDPOINT the daemon's ZeroMQ endpoint, tcp://HOST:PORT" in status
    assert "--json print {endpoint, hello, status} as JSON" in status
    assert "--link-gbps GBPS host-device link bandwidth" in _help("timing")


@pytest.mark.parametrize(("args", "message"), [
    (["timing", "--sizes", "0"], "spu timing: error: argument --sizes: 0: a positive whole "
                                 "number must be >= 1 (see spu timing --help)"),
    (["timing", "--link-gbps", "-5"], "spu timing: error: argument --link-gbps: -5: a positive "
                                      "number must be > 0 (see spu timing --help)"),
    (["status", "--connect", "localhost"], "spu status: error: argument --connect: "
                                           "'localhost' is not an endpoint: expected "
                                           "tcp://HOST:PORT (e.g. tcp://127.0.0.1:5555) or "
                                           "ipc://PATH (see spu status --help)"),
    (["timing", "--size", "1000"], "spu: error: unrecognized arguments: --size 1000 (see spu "
                                   "--help)"),
])
def test_a_users_mistake_is_one_line_and_exit_code_2(args: list[str], message: str) -> None:
    result = _spu(*args)
    assert (result.returncode, result.stderr.strip(), result.stdout) == (2, message, "")


def test_an_unreachable_daemon_is_one_line_and_exit_code_1() -> None:
    """HOST:PORT is read as tcp://HOST:PORT; nothing listens on port 9 (discard)."""
    result = _spu("status", "--connect", "localhost:9", "--timeout", "0.3")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("spu: [TIMEOUT] no reply to 'hello' from tcp://localhost:9")
    assert "is a daemon running there?" in result.stderr


def test_the_daemon_refuses_abbreviated_options() -> None:
    """``spu_config(kappa=0.5)`` in the pytest plugin becomes ``--kappa 0.5``: the daemon must
    not read it as --kappa0."""
    with pytest.raises(DaemonStartError, match="unrecognized arguments: --kappa 0.5"):
        DaemonProcess.start(kappa=0.5)


@pytest.mark.daemon
def test_the_plugin_fails_loudly_on_a_misspelt_option(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user="""
import pytest

@pytest.mark.spu_config(kappa=0.5)
def test_misspelt(spu_device):
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unrecognized arguments: --kappa 0.5*"])


@pytest.mark.daemon
@pytest.mark.spu_config(cells=16, kappa0=0.01)  # a daemon other tests start anyway
def test_status_is_readable_nested_or_json(spu_daemon: SpuDaemon) -> None:
    shown = _spu("status", "--connect", spu_daemon.endpoint)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[1] == "device configuration:" and "  cells: 16" in lines
    assert "  timing:" in lines and "    link:" in lines and "      latency_ns: 0" in lines
    assert "status:" in lines and "  lease:" in lines and "    held: False" in lines
    as_json = json.loads(_spu("status", "--connect", spu_daemon.endpoint, "--json").stdout)
    assert as_json["hello"]["config"]["cells"] == 16 and as_json["status"]["lease"]["held"] is False


def test_timing_link_gbps_speeds_up_the_upload() -> None:
    """Ten times the bandwidth, a tenth of TNGD's upload: at N = 1e6, m (m + 2N) values of 16
    bits with m = b d_z = 640 take 410 ms at 50 Gb/s."""
    slow, fast = (_spu("timing", "--sizes", "1e6", *extra).stdout
                  for extra in ([], ["--link-gbps", "500"]))
    assert "device profile tngd-paper, 50 Gb/s link." in slow
    assert "device profile tngd-paper, 500 Gb/s link (--link-gbps)." in fast

    def transfer_in(text: str) -> str:
        row = next(line for line in text.splitlines() if line.startswith("| 1e+06 |"))
        return row.split("|")[3].strip()

    assert (transfer_in(slow), transfer_in(fast)) == ("410 ms", "41 ms")


class _Device:
    """What RunSpec.label asks of a Device: tau and run durations (100 ns sample interval)."""

    tau_ns = 1000

    @staticmethod
    def duration_ns(t: float) -> int:
        return max(1, -(-round(t * 1000) // 100)) * 100


@pytest.mark.parametrize(("t", "label"), [(5.0, "tngd (t=5τ)"), (0.0, "tngd (t=0.1τ, asked 0)"),
                                          (0.05, "tngd (t=0.1τ, asked 0.05)")])
def test_tngd_labels_state_the_analog_time_really_run(t: float, label: str) -> None:
    assert RunSpec(optimizer="tngd", t=t).label(_Device()) == label  # type: ignore[arg-type]
