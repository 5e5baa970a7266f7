"""The restore's write rate: a shared token bucket whose rate adapts to the target's push-back.

Without push-back there is no limit but ``--max-rate`` (the ceiling). When DynamoDB pushes back
(throttling errors, UnprocessedItems, or calls the SDK had to retry) the rate is cut to a fraction of
what was actually written over the last window: multiplicative decrease, at most once per window,
because one overload comes back on every call then in flight and cutting for each would drive the
rate to the floor. Every second without push-back the rate climbs by a fixed step plus a fraction
of itself: quickly back to the capacity after a cut, and on up if capacity grew (on-demand tables
double theirs). So a restore runs just under what the table absorbs instead of failing on it.

Push-back before anything was written gives no rate to cut from; each call's own exponential
backoff handles it (replayer.restoring.writer). Time comes from a clock passed in, so tests need no sleeping.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateSettings:
    """How the rate reacts: the cut on push-back, the climb without it, and the measuring window."""

    decrease: float = 0.7
    climb_fraction: float = 0.1
    climb_step: float = 25.0
    window: float = 1.0
    floor: float = 1.0


class AdaptiveRate:
    """Items per second allowed now, shared by every worker (thread-safe)."""

    def __init__(self, ceiling: float | None = None, *, settings: RateSettings | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or RateSettings()
        self.ceiling = ceiling
        self.clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._rate = ceiling
        self._tokens = ceiling or 0.0  # start with one second's worth, as a fresh bucket should
        self._filled = now
        self._started = now
        self._climbed = now
        self._calm_from = now  # push-back before this moment belongs to an overload already answered
        self._written: deque[tuple[float, int]] = deque()
        self.cuts = 0

    @property
    def rate(self) -> float | None:
        """The current limit in items/s, or None while nothing limits the writer."""
        return self._rate

    def reserve(self, items: int) -> float:
        """Take ``items`` from the bucket; returns how many seconds to wait before sending them."""
        with self._lock:
            if self._rate is None:
                return 0.0
            now = self.clock()
            self._refill(now)
            self._tokens -= items
            return -self._tokens / self._rate if self._tokens < 0 else 0.0

    def record(self, written: int, pushed_back: bool) -> None:
        """Account for a call's outcome: ``written`` items landed; ``pushed_back`` if the target resisted."""
        with self._lock:
            now = self.clock()
            if written:
                self._written.append((now, written))
            self._forget(now)
            if pushed_back:
                self._cut(now)
            else:
                self._climb(now)

    def observed(self) -> float:
        """Items/s actually written over the last window (0 before anything was written)."""
        with self._lock:
            now = self.clock()
            self._forget(now)
            return self._observed(now)

    def _observed(self, now: float) -> float:
        # A writer younger than the window is measured over its age (never under a tenth of the window,
        # so the first calls of a run do not look like an enormous rate).
        span = min(self.settings.window, max(now - self._started, self.settings.window / 10))
        return sum(count for _, count in self._written) / span

    def _forget(self, now: float) -> None:
        while self._written and self._written[0][0] <= now - self.settings.window:
            self._written.popleft()

    def _refill(self, now: float) -> None:
        assert self._rate is not None
        burst = max(self._rate * self.settings.window, 1.0)
        self._tokens = min(burst, self._tokens + (now - self._filled) * self._rate)
        self._filled = now

    def _cut(self, now: float) -> None:
        if now < self._calm_from:
            return
        observed = self._observed(now)
        if self._rate is None and not observed:
            return
        base = observed if self._rate is None else min(self._rate, observed or self._rate)
        if self._rate is not None:
            self._refill(now)
        else:
            self._tokens, self._filled = 0.0, now
        self._rate = max(self.settings.floor, base * self.settings.decrease)
        self._calm_from = now + self.settings.window
        self._climbed = now
        self.cuts += 1

    def _climb(self, now: float) -> None:
        if self._rate is None:
            return
        self._refill(now)
        elapsed = max(0.0, now - self._climbed)
        self._climbed = now
        rate = self._rate + elapsed * (self.settings.climb_step + self._rate * self.settings.climb_fraction)
        self._rate = min(rate, self.ceiling) if self.ceiling else rate
