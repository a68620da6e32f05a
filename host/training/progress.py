"""Progress of long host-side work on stderr, readable anywhere (tqdm does the formatting).

On a terminal a bar redraws in place, with rate, ETA and the latest values (loss, simulated
time); elsewhere (pipes, CI logs) a plain line is printed every ``log_every_s`` seconds of wall
time, and a last one when the work ends. Wall time here only paces and estimates the display;
the simulated time shown is the run's own clock.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm import tqdm

from spusim.timing.report import format_ns

LINE_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) [{elapsed}<{remaining}, " \
              "{rate_fmt}{postfix}]"


class ProgressBar:
    """``with ProgressBar("sampling", total=10) as bar: ... bar.update(done, total, **values)``.

    ``values`` are shown beside the count: ``loss=0.52`` as a number, ``sim_time_ns`` as a time
    (``sim 1.2 ms``). ``clock`` (s) paces the plain lines; tests may pass their own.
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None,
                 log_every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.log_every_s = log_every_s
        self._clock = clock
        self._started = self._last_line = clock()
        self._done, self._postfix, self._printed = 0, "", 0
        self._bar = (tqdm(total=total, desc=f"  {label}", file=self.stream, unit="it",
                          dynamic_ncols=True, leave=True) if self.stream.isatty() else None)

    def update(self, done: int, total: int | None = None, **values: float) -> None:
        """``done`` of ``total`` (the total given at start if None), with the latest
        ``values``."""
        self.total = total or self.total
        self._done = done
        self._postfix = ", ".join(_shown(name, value) for name, value in values.items())
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.set_postfix_str(self._postfix, refresh=False)
            self._bar.update(done - self._bar.n)
        elif done >= self.total or self._clock() - self._last_line >= self.log_every_s:
            self._line()

    def _line(self) -> None:
        """One plain progress line."""
        self._last_line = self._clock()
        self._printed = self._done
        text = tqdm.format_meter(self._done, self.total, self._last_line - self._started,
                                 prefix=f"  {self.label}", postfix=self._postfix or None,
                                 unit="it", bar_format=LINE_FORMAT)
        self.stream.write(text + "\n")
        self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._printed != self._done:  # stopped early (an error, Ctrl-C): where it got to
            self._line()


def _shown(name: str, value: float) -> str:
    if name == "sim_time_ns":
        return f"sim {format_ns(value)}"
    return f"{name} {value:.4g}"
