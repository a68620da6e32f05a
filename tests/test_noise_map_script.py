"""Smoke test of examples/noise_map.py: the whole script (arms, tables, record, the closed form
measured on the device, the map and the figures) on a reduced map of its own arms, run in this
process for --quick, so that it stays fast: two kappa0, one variant, one figure arm, one Adam,
t = 1 tau instead of 50."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.daemon
def test_noise_map_quick_writes_its_record_closed_form_map_and_figures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import noise_map

    monkeypatch.setattr(noise_map, "PAPER", {**noise_map.PAPER, "t": 1.0})
    monkeypatch.setattr(noise_map, "KAPPAS", (0.0, noise_map.KAPPA0))
    monkeypatch.setattr(noise_map, "VARIANTS", {"tngd average readout": {"readout": "average"}})
    monkeypatch.setattr(noise_map, "FIGURES", {"fig7": [("tngd t=1τ κ0=0.01", {}, 0.01)]})
    monkeypatch.setattr(noise_map, "ADAM_LRS", (1e-3,))
    monkeypatch.setattr(noise_map, "QUICK_ITERATIONS", 2)
    prefix = tmp_path / "map"
    monkeypatch.setattr(sys, "argv", ["noise_map.py", "--quick", "--out", str(prefix)])
    noise_map.run()

    runs = json.loads(prefix.with_suffix(".json").read_text())["runs"]
    assert [run["label"] for run in runs] == [
        "tngd κ0=0", noise_map.BASE_LABEL, "tngd average readout", "tngd t=1τ κ0=0.01",
        "ngd (exact)", "adam lr=0.001"]
    assert all(len(run["rows"]) == 2 for run in runs)
    closed = json.loads((tmp_path / "map_closed_form.json").read_text())
    point = closed["closed_form"]["points"][0]
    predicted, measured = point["predicted"], point["measured"]
    assert set(predicted) == {noise_map.BASE_LABEL, "tngd average readout"}
    assert set(measured) == set(predicted)
    for label, p in predicted.items():
        assert p["step"] > 0 and p["null_noise"] > 0 and p["rank"] < point["n"]
        assert p["kappa0_star"] == pytest.approx(noise_map.KAPPA0 / p["ratio"])
        assert measured[label]["null_noise"] > 0
    assert predicted["tngd average readout"]["samples"] == 10  # t = 1 tau of 0.1 tau samples
    for name in ("map.png", "map_map.png", "map_fig7.png", "map_fig3.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_MAGIC
