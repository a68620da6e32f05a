"""Reports of simulated time: a per-phase breakdown table and Chrome Trace Event JSON.

The trace opens in Perfetto (ui.perfetto.dev) or chrome://tracing: one row per lane (host,
device), one box per phase, times in simulated microseconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spusim.timing.pipeline import Schedule


@dataclass(frozen=True)
class Span:
    """A named interval of simulated time on a lane, [start_ns, end_ns), with free-form args."""

    lane: str
    name: str
    start_ns: int
    end_ns: int
    args: dict[str, Any] = field(default_factory=dict)


def schedule_spans(schedule: Schedule) -> list[Span]:
    """The spans of a hybrid-loop schedule (empty phases left out)."""
    return [Span(e.lane, e.phase.value, e.start_ns, e.end_ns, {"iteration": e.iteration})
            for e in schedule.events if e.end_ns > e.start_ns]


def chrome_trace(spans: Iterable[Span]) -> dict[str, Any]:
    """The spans as a Chrome Trace Event document (complete events, one thread per lane)."""
    events: list[dict[str, Any]] = []
    lanes: dict[str, int] = {}
    for span in spans:
        tid = lanes.setdefault(span.lane, len(lanes))
        events.append({"name": span.name, "cat": span.lane, "ph": "X", "pid": 0, "tid": tid,
                       "ts": span.start_ns / 1e3, "dur": (span.end_ns - span.start_ns) / 1e3,
                       "args": span.args})
    names = [{"name": "thread_name", "ph": "M", "pid": 0, "tid": tid, "args": {"name": lane}}
             for lane, tid in lanes.items()]
    process = {"name": "process_name", "ph": "M", "pid": 0, "args": {"name": "spusim"}}
    return {"traceEvents": [process, *names, *events], "displayTimeUnit": "ns"}


def write_chrome_trace(spans: Iterable[Span], path: str | Path) -> Path:
    """Write :func:`chrome_trace` as JSON to ``path``; returns the path."""
    path = Path(path)
    path.write_text(json.dumps(chrome_trace(spans)))
    return path


def breakdown_table(phase_ns: Mapping[str, int], total_ns: int | None = None) -> str:
    """A text table of time per phase, with each phase's share of ``total_ns`` (default: sum)."""
    total = total_ns if total_ns is not None else sum(phase_ns.values())
    rows = [f"  {'phase':<14}{'time':>14}{'share':>8}"]
    for phase, ns in sorted(phase_ns.items(), key=lambda item: -item[1]):
        share = f"{100 * ns / total:.1f}%" if total else "-"
        rows.append(f"  {phase:<14}{format_ns(ns):>14}{share:>8}")
    rows.append(f"  {'total':<14}{format_ns(total):>14}")
    return "\n".join(rows)


def format_ns(ns: float) -> str:
    """``ns`` in the largest unit that keeps it >= 1: ns, us, ms or s."""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"
