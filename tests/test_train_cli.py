"""``spu demo`` (the training demo) and ``spu train``, run as the user runs them: the ``spu``
command in a subprocess, its table, JSON record and PNG checked."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SPU = str(Path(sys.executable).with_name("spu"))
CHANCE = 0.1  # ten balanced classes
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _spu(*args: str, timeout: float = 120) -> str:
    result = subprocess.run([SPU, *args], check=False, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _table(stdout: str) -> dict[str, list[float]]:
    """The summary table's rows: label -> [train loss, test loss, test acc, iters, sim ms,
    host s]."""
    rows = re.findall(r"^\s+(\S+(?: \([^)]*\))?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+"
                      r"([\d.]+)\s+([\d.]+)$", stdout, re.MULTILINE)
    return {row[0]: [float(v) for v in row[1:]] for row in rows}


def test_training_demo_trains_both_optimizers_and_writes_the_plot(tmp_path: Path) -> None:
    """40 iterations: both optimizers' test loss below ln 10 = 2.30 (the untrained network's),
    accuracy far above chance; TNGD's simulated time includes the device's analog runs of
    50 tau = 50 us each, so it exceeds 40 x 50 us."""
    png = tmp_path / "demo.png"
    stdout = _spu("demo", "--iterations", "40", "--plot", str(png))
    table = _table(stdout)
    assert set(table) == {"tngd (t=50τ)", "adam"}, stdout
    for train_loss, test_loss, accuracy, iterations, sim_ms, host_s in table.values():
        assert train_loss < 1.5 and test_loss < 1.5, stdout
        assert accuracy > 5 * CHANCE, stdout
        assert iterations == 40 and sim_ms > 0 and host_s > 0
    assert table["tngd (t=50τ)"][4] > 40 * 50e-3
    assert png.read_bytes()[:8] == PNG_MAGIC
    # the regime and the verdict: its kappa0, the closed form at kappa0 = 0.001, who wins in
    # simulated time and the timing model's ratio versus N
    assert "thermal noise kappa0 = 0.0001" in stdout
    assert re.search(r"at kappa0 = 0.001 it would be [\d.]+, at kappa0\* = ", stdout), stdout
    assert re.search(r"(Adam|TNGD) wins in simulated time at this scale", stdout), stdout
    assert "TNGD / Adam per iteration: " in stdout and "at N = 1e+06" in stdout


@pytest.mark.parametrize("optimizer", ["ngd-cg", "tngd"])
def test_train_writes_a_json_record_of_every_iteration(tmp_path: Path, optimizer: str) -> None:
    record_path, png = tmp_path / "run.json", tmp_path / "run.png"
    _spu("train", "--model", "softmax", "--optimizer", optimizer, "--iterations", "25",
         "--t", "2", "--seed", "3", "--json", str(record_path), "--plot", str(png))
    record = json.loads(record_path.read_text())
    assert record["config"]["seed"] == 3 and record["config"]["spec"]["optimizer"] == optimizer
    (run,) = record["runs"]
    rows = run["rows"]
    assert [row["iteration"] for row in rows] == list(range(25))
    assert rows[-1]["sim_time_ns"] == run["sim_time_ns"] > 0
    assert run["final_train_loss"] < 0.7 * rows[0]["loss"]
    assert run["final_test_accuracy"] > 5 * CHANCE
    assert ("device_analog_ns" in rows[0]) == (optimizer == "tngd")
    if optimizer == "tngd":
        assert record["config"]["device"]["kappa0"] == 0.001
        assert all(row["device_analog_ns"] == 2000 for row in rows)
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_train_help_explains_the_options() -> None:
    stdout = _spu("train", "--help")
    for option in ("--optimizer", "--t ", "--t-d", "--kappa0", "--readout", "--no-warm-start",
                   "--json", "tngd-adam", "units of tau"):
        assert option in stdout, option


def test_an_example_writes_its_record_and_plot(tmp_path: Path) -> None:
    """examples/sweep_delay.py for 5 iterations and 2 seeds: one run per arm and seed, each with
    its spec, rows and the delay it was asked for (t_d = 1 tau = 1000 ns of device time on every
    step but the first), and the table over the seeds."""
    script = Path(__file__).resolve().parents[1] / "examples" / "sweep_delay.py"
    prefix = tmp_path / "delay"
    result = subprocess.run([sys.executable, str(script), "--iterations", "5", "--seeds", "2",
                             "--out", str(prefix)], check=False, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr
    record = json.loads(prefix.with_suffix(".json").read_text())
    labels = [run["label"] for run in record["runs"]]
    arms = ["tngd t_d=0τ", "tngd t_d=0.2τ", "tngd t_d=1τ", "ngd (exact)"]
    assert labels == arms * 2 and record["config"]["seeds"] == [0, 1]
    assert [run["spec"]["seed"] for run in record["runs"]] == [0] * 4 + [1] * 4
    assert "over seeds 0..1" in result.stdout and "ngd (exact)                2" in result.stdout
    delayed = record["runs"][2]
    assert delayed["spec"]["delay"] == 1.0 and len(delayed["rows"]) == 5
    assert [row["device_delay_ns"] for row in delayed["rows"]] == [0] + [1000] * 4
    assert prefix.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("option, given, message", [
    ("--iterations", "0", "--iterations must be >= 1, got 0"),
    ("--batch-size", "5000", "--batch-size must be in 1..1347 (the digits training set), got 5000"),
    ("--lr", "-1", "--lr must be > 0, got -1.0"),
    ("--hidden", "0", "--hidden must be >= 1, got 0"),
    ("--eval-every", "0", "--eval-every must be >= 1, got 0"),
])
def test_bad_option_values_get_one_error_line_and_exit_2(tmp_path: Path, option: str,
                                                         given: str, message: str) -> None:
    result = subprocess.run([SPU, "train", "--optimizer", "sgd", option, given, "--json",
                             str(tmp_path / "run.json")], check=False, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"spu train: error: {message}"]
    assert not (tmp_path / "run.json").exists()


def test_ctrl_c_writes_the_partial_record_and_exits_130(tmp_path: Path) -> None:
    """SIGINT while TNGD trains: the record holds the iterations done (consecutive, from 0),
    flagged interrupted, the exit code is 130 and no traceback is printed."""
    record_path = tmp_path / "run.json"
    process = subprocess.Popen(
        [SPU, "train", "--optimizer", "tngd", "--iterations", "100000", "--t", "1",
         "--json", str(record_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()  # printed once the daemon is up
        assert first_line.startswith("spu train: tngd"), first_line
        time.sleep(4.0)  # torch's first optimizer costs ~2.5 s (it imports torch._dynamo)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted after" in stderr and "Traceback" not in stderr
    record = json.loads(record_path.read_text())
    assert record["config"]["interrupted"] is True
    rows = record["runs"][0]["rows"]
    assert [row["iteration"] for row in rows] == list(range(len(rows)))
    assert str(record_path) in stdout
