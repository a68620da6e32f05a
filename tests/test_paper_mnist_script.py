"""Smoke test of examples/paper_mnist.py: one figure's whole path (the closed form, the arms on
Dask over two seeds, the record, the table, the figure) and --replot from the record, on the
8 x 8 digits instead of MNIST and 2 iterations, so that it stays fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.daemon
def test_paper_mnist_writes_record_table_and_figure_and_replots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    import paper_mnist

    monkeypatch.setattr(paper_mnist, "MODEL", {**paper_mnist.MODEL, "data": "digits"})
    monkeypatch.setattr(paper_mnist, "DEVICE", {"cells": 4096, "kappa0": 1e-5})
    prefix = tmp_path / "fig3"
    monkeypatch.setattr(sys, "argv", ["paper_mnist.py", "--figure", "fig3", "--iterations", "2",
                                      "--seeds", "2", "--out", str(prefix)])
    paper_mnist.main()
    first = capsys.readouterr().out

    saved = json.loads(prefix.with_suffix(".json").read_text())
    labels = ["tngd t=50τ", paper_mnist.ADAM, "adam lr=0.003", paper_mnist.EXACT,
              f"ngd-cg c={paper_mnist.CG_ITERATIONS}"]
    assert [run["label"] for run in saved["runs"]] == labels * 2
    assert [run["spec"]["seed"] for run in saved["runs"]] == [0] * 5 + [1] * 5
    assert all(len(run["rows"]) == 2 and run["spec"]["batch_size"] == 64
               for run in saved["runs"])
    tngd = saved["runs"][0]
    assert (tngd["spec"]["lr"], tngd["spec"]["damping"], tngd["spec"]["t"]) == (0.01, 0.01, 50.0)
    assert tngd["device"]["kappa0"] == 1e-5
    table = prefix.with_suffix(".md").read_text().splitlines()
    assert [line.split(" | ")[0].strip("| ") for line in table[2:]] == labels
    assert all(line.split(" | ")[1] == "2" for line in table[2:])  # seeds per arm
    png = prefix.with_suffix(".png")
    assert png.read_bytes()[:8] == PNG_MAGIC

    png.unlink()
    monkeypatch.setattr(sys, "argv", ["paper_mnist.py", "--replot",
                                      str(prefix.with_suffix(".json"))])
    paper_mnist.main()
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "\n".join(table) in first and "\n".join(table) in capsys.readouterr().out
