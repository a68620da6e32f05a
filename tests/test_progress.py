"""Progress readable anywhere: a tqdm bar with rate, ETA, loss and simulated time on a terminal,
plain periodic lines elsewhere, and a piped ``spu train`` that prints them."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

from spusim.training.progress import ProgressBar

SPU = str(Path(sys.executable).with_name("spu"))


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_every_interval_and_at_the_end() -> None:
    """A fake clock of 1 s per update and 3 s between lines: lines at 3, 6 and 9 s, and the
    last one at 10/10."""
    now = [0.0]
    out = io.StringIO()
    with ProgressBar("tngd", 10, stream=out, log_every_s=3.0, clock=lambda: now[0]) as bar:
        for done in range(1, 11):
            now[0] += 1.0
            bar.update(done, loss=1.0 / done, sim_time_ns=done * 2_500_000)
    lines = out.getvalue().splitlines()
    assert [re.search(r"(\d+)/10", line).group(1) for line in lines] == ["3", "6", "9", "10"]
    assert lines[-1] == "  tngd: 10/10 (100%) [00:10<00:00,  1.00it/s, loss 0.1, sim 25 ms]"
    assert "\r" not in out.getvalue()


def test_a_run_stopped_early_prints_where_it_got_to() -> None:
    out = io.StringIO()
    try:
        with ProgressBar("adam", 100, stream=out, log_every_s=1e9) as bar:
            bar.update(42, loss=0.5)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert "  adam: 42/100 (42%)" in out.getvalue() and "loss 0.5" in out.getvalue()


def test_on_a_terminal_a_bar_with_rate_eta_loss_and_simulated_time() -> None:
    out = Terminal()
    with ProgressBar("tngd (t=5τ)", 4, stream=out) as bar:
        for done in range(1, 5):
            bar.update(done, loss=0.25, sim_time_ns=3_000)
    final = out.getvalue().split("\r")[-1]
    assert "tngd (t=5τ): 100%|" in final and "4/4 [" in final and "it/s" in final
    assert "loss 0.25, sim 3 us" in final


def test_a_piped_training_run_prints_progress_lines(tmp_path: Path) -> None:
    result = subprocess.run([SPU, "train", "--model", "softmax", "--optimizer", "sgd",
                             "--iterations", "15", "--json", str(tmp_path / "r.json")],
                            capture_output=True, text=True, timeout=120, check=True)
    progress = [line for line in result.stderr.splitlines() if "/15 (" in line]
    assert progress, result.stderr
    assert re.fullmatch(r"  sgd: 15/15 \(100%\) \[\d\d:\d\d<00:00, +[\d.]+it/s, loss [\d.]+, "
                        r"sim [\d.]+ [mun]?s\]", progress[-1]), progress[-1]
