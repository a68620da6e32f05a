"""A dependency-free progress bar for long host-side work (written to stderr)."""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressBar:
    """``with ProgressBar("sampling", total=10) as bar: ... bar.update(done, total)``.

    Redraws one line in place on a terminal; prints nothing elsewhere (pipes, CI logs).
    """

    def __init__(self, label: str, total: int, width: int = 30, stream: TextIO | None = None):
        self.label, self.total, self.width = label, total, width
        self.stream = stream or sys.stderr
        self._interactive = self.stream.isatty()

    def update(self, done: int, total: int | None = None) -> None:
        self.total = total or self.total
        if self._interactive:
            filled = round(self.width * done / max(self.total, 1))
            self.stream.write(f"\r  {self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
                              f"{done}/{self.total}")
            self.stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._interactive:
            self.stream.write("\n")
            self.stream.flush()
