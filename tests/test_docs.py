"""Docs that match behaviour: public sources only, the daemon's default profile as documented,
and docs/hil.md's example test run as written."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from spusim.device.config import DeviceConfig

ROOT = Path(__file__).resolve().parents[1]


def test_nothing_cites_research_notes_outside_the_repository() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    # The pattern is assembled so that this file does not match itself.
    notes = re.compile("shared/" + "research|papers" + r"\.md|peers" + r"\.md|limits" + r"\.md")
    cited = [f"{name}:{number}" for name in tracked if Path(ROOT / name).suffix in
             (".py", ".md", ".toml", ".txt", ".cfg") for number, line in
             enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1)
             if notes.search(line)]
    assert not cited, cited


def test_protocol_md_states_the_default_profile() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    defaults = text[text.index("Defaults of the daemon's command line"):]
    named = re.search(r"profile `([\w-]+)`", defaults).group(1)
    assert named == DeviceConfig().profile == "ideal"


def _example(path: Path, name: str) -> str:
    """The fenced Python block of ``path`` that defines ``name``."""
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL)
    (block,) = (b for b in blocks if f"def {name}(" in b)
    return block


@pytest.mark.daemon
def test_the_8_cell_board_example_of_hil_md_passes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_board=_example(ROOT / "docs" / "hil.md",
                                            "test_fits_the_8_cell_board"))
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "test_fits_the_8_cell_board")
    result.assert_outcomes(passed=1, deselected=2)  # the block's class: its tests are "..."
