"""Records you can look at later: fresh run directories, examples that leave docs/ alone, records
that keep their device configuration and replay, and ``spu plot`` / ``spu compare``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spusim.timing.digital import Measured, parse_digital
from spusim.training.record_plots import curves, labels
from spusim.training.records import RecordError, load, replay_report, run_directory

ROOT = Path(__file__).resolve().parents[1]
SPU = str(Path(sys.executable).with_name("spu"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _spu(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SPU, *args], capture_output=True, text=True, timeout=180, cwd=cwd)


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _run(label: str, spec: dict, device: dict | None, accuracy: float = 0.5) -> dict:
    rows = [{"iteration": k, "loss": 2.0 - k / 10, "sim_time_ns": 1000 * (k + 1),
             "test_loss": 1.9 if k % 5 == 0 else None,
             "test_accuracy": 0.3 if k % 5 == 0 else None} for k in range(10)]
    return {"label": label, "spec": spec, "device": device, "rows": rows,
            "final_test_loss": 1.0, "final_test_accuracy": accuracy, "sim_time_ns": 10_000,
            "final_train_loss": 1.1}


def test_run_directories_are_fresh_and_named_by_time_and_run(tmp_path: Path) -> None:
    first, second = run_directory("mlp-tngd", tmp_path), run_directory("mlp-tngd", tmp_path)
    assert first != second and first.is_dir() and second.is_dir()
    assert first.parent == tmp_path and first.name.endswith("-mlp-tngd")
    stamp = len("20261201-051033")
    assert second.name == f"{first.name}-2" or second.name[:stamp] > first.name[:stamp]


def test_labels_tell_apart_runs_that_differ_only_in_kappa0_or_readout() -> None:
    spec = {"optimizer": "tngd", "t": 5.0, "readout": "final"}
    runs = [_run("tngd (t=5τ)", spec, {"kappa0": 0.001, "seed": 0}),
            _run("tngd (t=5τ)", spec, {"kappa0": 0.01, "seed": 0}),
            _run("tngd (t=5τ)", {**spec, "readout": "average"}, {"kappa0": 0.01, "seed": 0}),
            _run("adam", {"optimizer": "adam"}, None)]
    assert labels(runs) == ["tngd (t=5τ) (kappa0=0.001, readout=final)",
                            "tngd (t=5τ) (kappa0=0.01, readout=final)",
                            "tngd (t=5τ) (kappa0=0.01, readout=average)", "adam"]
    assert labels(runs[:1] * 2) == ["tngd (t=5τ) (#1)", "tngd (t=5τ) (#2)"]


def test_the_final_test_evaluation_is_a_point_of_the_curves() -> None:
    c = curves(_run("sgd", {}, None, accuracy=0.75))
    assert list(c["test_x"]) == [0.0, 5.0, 10.0]  # evaluations at 0 and 5, the final after 9
    assert list(c["test_accuracy"]) == [0.3, 0.3, 0.75]
    assert c["test_ms"][-1] == 0.01


def test_the_replay_report_flags_simulated_time_only_where_it_is_deterministic() -> None:
    """On the roofline clock (the default) the simulated time is checked like the losses; on
    a measured clock it is reported as differing without a flag; across clocks it is
    flagged, naming both."""
    roofline, measured = parse_digital().label, Measured(2.0).label

    def run(sim_time_ns: int, clock: str, digital: str | None) -> dict:
        return {"final_train_loss": 0.5, "final_test_loss": 0.6, "final_test_accuracy": 0.8,
                "sim_time_ns": sim_time_ns, "clock": clock,
                "spec": {} if digital is None else {"digital": digital}}

    def verdict(recorded: dict, now: dict) -> str:
        report = replay_report(recorded, now).splitlines()
        assert [line.split()[-1] for line in report[1:4]] == ["same"] * 3
        return report[4].split(maxsplit=4)[-1]

    assert verdict(run(7, roofline, None), run(7, roofline, None)) == "same"
    assert verdict(run(7, roofline, None), run(8, roofline, None)) == "DIFFERS"
    assert verdict(run(7, measured, "measured:2"), run(8, measured, "measured:2")) == (
        "differs (measured clock: the host's wall time)")
    assert verdict(run(7, measured, "measured:2"), run(8, roofline, None)) == (
        f"DIFFERS: recorded on {measured}, replayed on {roofline}")


def test_not_a_record_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"config": {}}')
    with pytest.raises(RecordError, match="not a run record"):
        load(tmp_path / "x.json")
    result = _spu("plot", str(tmp_path / "x.json"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.daemon
def test_examples_leave_docs_alone_and_their_records_replay_and_plot(tmp_path: Path) -> None:
    """sweep_delay.py for 2 iterations from another working directory: its record lands in
    runs/<timestamp>-sweep_delay/ there, nothing under docs/ (here or in the repository), each
    run keeps its daemon's configuration, a TNGD run replays to the same losses, and spu plot /
    spu compare draw it with a spu train record."""
    docs_before = _tree_digest(ROOT / "docs")
    script = ROOT / "examples" / "sweep_delay.py"
    result = subprocess.run([sys.executable, str(script), "--iterations", "2"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "docs").exists() and _tree_digest(ROOT / "docs") == docs_before
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.endswith("-sweep_delay")
    record_path = run_dir / "sweep_delay.json"
    assert (run_dir / "sweep_delay.png").read_bytes()[:8] == PNG_MAGIC
    runs = load(record_path)["runs"]
    assert [run["device"]["kappa0"] if run["device"] else None for run in runs] == [
        0.001, 0.001, 0.001, None]

    replay = _spu("train", "--replay", str(record_path), "--replay-run", "1",
                  "--json", str(tmp_path / "replayed.json"))
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.count(" same") == 4, replay.stdout  # the losses and the roofline time
    replayed = json.loads((tmp_path / "replayed.json").read_text())
    assert replayed["config"]["device"] == runs[1]["device"]
    assert replayed["config"]["replay_of"] == {"record": str(record_path), "run": 1}

    png = tmp_path / "both.png"
    plotted = _spu("compare", str(record_path), str(tmp_path / "replayed.json"), "--out",
                   str(png))
    assert plotted.returncode == 0, plotted.stderr
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "tngd t_d=0.2τ" in plotted.stdout and "tngd (t=5τ, t_d=0.2τ)" in plotted.stdout
