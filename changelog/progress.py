"""Progress lines for long work: records, rate and ETA on a terminal; silent in Lambda and in pipes."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    import duckdb


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


def track_progress(con: duckdb.DuckDBPyConnection) -> None:
    """Let ``query_progress`` follow ``con``'s queries (before its configuration is locked).

    DuckDB estimates a running query's progress only with its progress bar on; its own drawing (on
    stdout, where results go, when that is a terminal) stays off: ``query_progress`` draws on stderr.
    """
    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")


@contextmanager
def query_progress(con: duckdb.DuckDBPyConnection, label: str, stream: TextIO | None = None,
                   delay: float = 1.0) -> Iterator[None]:
    """While the block runs a query on ``con`` (see ``track_progress``), show DuckDB's estimate in percent.

    Drawn from a thread, as DuckDB releases the GIL while it works, and only after ``delay`` seconds,
    so a quick query shows nothing; the line is cleared at the end, before any result is printed.
    Silent in Lambda and in pipes.
    """
    out = stream or sys.stderr
    if not _interactive(out):
        yield
        return
    stop = threading.Event()
    drawn = threading.Event()

    def draw() -> None:
        if stop.wait(delay):
            return
        while not stop.is_set():
            share = con.query_progress()
            if share >= 0:
                out.write(f"\r{label}: {share:5.1f}%\033[K")
                out.flush()
                drawn.set()
            stop.wait(0.2)

    thread = threading.Thread(target=draw, name="query-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if drawn.is_set():
            out.write("\r\033[K")
            out.flush()
