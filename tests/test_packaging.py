"""The installed import root: one package, ``spusim``, that a user's own modules cannot shadow,
and import arrows that run one way (cli -> training -> driver -> protocol; device and host apart)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Which host subpackages each may import (besides itself, protocol and timing).
ALLOWED = {
    "driver": set(),
    "linalg": {"driver"},
    "hil": {"driver"},
    "training": {"driver", "linalg"},
    "cli": {"driver", "linalg", "training"},
}


def test_stray_modules_in_the_working_directory_do_not_shadow_spusim(tmp_path: Path) -> None:
    for name in ("timing", "device", "protocol", "host", "driver"):
        (tmp_path / f"{name}.py").write_text("raise SystemExit('shadowed by a stray module')\n")
    code = ("from spusim import Device, linalg, DeviceError; import spusim.timing, spusim.protocol;"
            " import spusim.device.config; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_importing_the_device_loads_nothing_of_the_host() -> None:
    code = ("import sys, spusim.device.server; "
            "print(sorted(m for m in sys.modules if m.startswith('spusim.') and m.split('.')[1]"
            " not in ('device', 'protocol', 'timing')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_import_arrows_run_one_way() -> None:
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / "host" / package).rglob("*.py")):
            for module in _imported_modules(path):
                parts = module.split(".")
                if parts[0] != "spusim" or len(parts) < 2:
                    continue
                target = parts[1]
                if target in ("protocol", "timing", package) or target in allowed:
                    continue
                if target in ALLOWED or target == "device":
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    for folder in ("device", "protocol", "timing"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for module in _imported_modules(path):
                parts = module.split(".")
                if parts[0] == "spusim" and len(parts) > 1 and parts[1] in ALLOWED:
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
                if folder != "device" and parts[0] == "spusim" and parts[1:2] == ["device"]:
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not wrong, "\n".join(wrong)
