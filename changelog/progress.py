"""Progress lines for long work: records, rate and ETA on a terminal; silent in Lambda and in pipes."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


def _interactive(stream: TextIO) -> bool:
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """A one-line, self-overwriting progress display (state: counts and the last redraw time)."""

    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None,
                 unit: str = "items") -> None:
        self.label = label
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = _interactive(self.stream)
        self.done = 0
        self.started = time.monotonic()
        self._last_draw = 0.0

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more units done; redraws at most ten times a second."""
        self.done += count
        if self.enabled and time.monotonic() - self._last_draw >= 0.1:
            self._draw()

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        elapsed = max(self._last_draw - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"\r{self.label}: {self.done:,}"
        if self.total:
            share = min(self.done / self.total, 1.0)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            text += f"/{self.total:,} {self.unit} ({share:6.1%}) {rate:,.0f} {self.unit}/s ETA {eta:5.0f}s"
        else:
            text += f" {self.unit} {rate:,.0f} {self.unit}/s"
        self.stream.write(text + "\033[K")
        self.stream.flush()

    def close(self) -> None:
        """Draw the final figures and end the line (nothing when not on a terminal)."""
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    @property
    def rate(self) -> float:
        """Units per second so far."""
        return self.done / max(time.monotonic() - self.started, 1e-9)
