"""Run records on disk: a fresh run directory for every run, and records read back to plot,
compare or replay.

A record is the JSON that spusim.training.runs.record builds: ``{"config": {...}, "runs": [{"label",
"spec", "device", "rows", "final_test_loss", ...}]}``. ``device`` is the daemon's ``hello``
configuration of the run (for ``spu train`` it sits in ``config.device``), so that
``spu train --replay RECORD`` can start the same device with the same spec.

    directory = run_directory("mlp-tngd")          # runs/20261201-051033-mlp-tngd/
    spec, device = replay_inputs(load(path))
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spusim.timing.digital import DEFAULT_DIGITAL, parse_digital

if TYPE_CHECKING:
    from spusim.training.runs import RunSpec

RUNS_ROOT = Path("runs")


class RecordError(ValueError):
    """A file that is not a run record, or a run that cannot be replayed."""


def run_directory(name: str, root: str | Path = RUNS_ROOT) -> Path:
    """A new, empty directory ``root/<UTC timestamp>-<name>/`` (``-2``, ``-3``, ... appended if
    that second's name is taken); its parents are created."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = Path(root) / f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-')}"
    Path(root).mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        path = base if attempt == 1 else base.with_name(f"{base.name}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free run directory name for {base}")


def load(path: str | Path) -> dict[str, Any]:
    """The record in ``path``, with each run's ``device`` config filled in from the record's
    ``config.device`` where the run has none. RecordError if it is not a run record."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RecordError(f"cannot read the record {str(path)!r}: {error}") from None
    runs = record.get("runs") if isinstance(record, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) and "rows" in r for r in runs):
        raise RecordError(f"{path} is not a run record (spu train --json, or an example's "
                         "PREFIX.json): it has no list of runs with rows")
    shared = record.get("config", {}).get("device")
    for run in runs:
        run.setdefault("device", shared)
    return record


def attach_devices(record: dict[str, Any], devices: list[Mapping[str, Any] | None]) -> None:
    """Store each run's device configuration (``hello``'s config, None for host-only runs) in
    the run, in order."""
    if len(devices) != len(record["runs"]):
        raise ValueError(f"{len(devices)} device configurations for {len(record['runs'])} runs")
    for run, device in zip(record["runs"], devices, strict=True):
        run["device"] = None if device is None else dict(device)


def replay_inputs(record: Mapping[str, Any],
                  index: int = 0) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The spec (RunSpec fields) and device configuration (None: host only) of run ``index``."""
    runs = record["runs"]
    if not -len(runs) <= index < len(runs):
        raise RecordError(f"the record has {len(runs)} run(s); run {index} does not exist")
    run = runs[index]
    if not run.get("spec"):
        raise RecordError(f"run {index} ({run.get('label')}) has no spec to replay")
    return dict(run["spec"]), run.get("device")


def replay(path: str | Path, index: int = 0) -> tuple[dict[str, Any], RunSpec,
                                                     dict[str, Any] | None]:
    """Run ``index`` of the record at ``path`` (as recorded), its RunSpec and its device
    configuration (None: host only); RecordError if the record cannot be replayed."""
    from spusim.training.spec import RunSpec

    run = load(path)["runs"]
    spec, device = replay_inputs({"runs": run}, index)
    try:
        return run[index], RunSpec(**spec), device
    except TypeError as error:  # a record of another version: fields renamed or removed
        raise RecordError(f"cannot replay run {index} of {path}: its spec does not fit this "
                         f"version's RunSpec ({error})") from None


def replay_report(original: Mapping[str, Any], replayed: Mapping[str, Any]) -> str:
    """How a replayed run's final numbers compare with the recorded ones. The losses and
    accuracy are deterministic given the seeds, and so is the simulated time on a roofline
    digital clock (priced from the work counted): each is "same" or "DIFFERS". On a measured
    clock the simulated time holds the host's wall time, so it differs from run to run and
    is not flagged; a replay on another clock than the recording's (when it names one) says
    so."""
    lines = ["  replay: recorded -> now"]
    for key in ("final_train_loss", "final_test_loss", "final_test_accuracy"):
        a, b = original.get(key), replayed.get(key)
        lines.append(_replay_line(key, a, b, "same" if a == b else "DIFFERS"))
    a, b = original.get("sim_time_ns"), replayed.get("sim_time_ns")
    clocks = original.get("clock"), replayed.get("clock")
    if clocks[0] is not None and clocks[0] != clocks[1]:
        verdict = f"DIFFERS: recorded on {clocks[0]}, replayed on {clocks[1]}"
    elif _measured(replayed):
        verdict = f"{'differs' if a != b else 'same'} (measured clock: the host's wall time)"
    else:
        verdict = "same" if a == b else "DIFFERS"
    lines.append(_replay_line("sim_time_ns", a, b, verdict))
    return "\n".join(lines)


def _replay_line(key: str, recorded: Any, now: Any, verdict: str) -> str:
    return f"    {key:<20} {recorded!s:>22} -> {now!s:<22} {verdict}"


def _measured(run: Mapping[str, Any]) -> bool:
    """Whether ``run`` priced its digital steps by the host's wall time (its spec's clock)."""
    return parse_digital((run.get("spec") or {}).get("digital", DEFAULT_DIGITAL)).measured
