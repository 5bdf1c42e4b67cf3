"""Requests per second over a sliding window: how both roles estimate their HLS viewers from
segment fetches."""

from __future__ import annotations

import time


class RequestRate:
    """Events per second over a sliding window, in one-second buckets (memory bounded by the window)."""

    def __init__(self, window_seconds: int) -> None:
        self._window = window_seconds
        self._buckets = [0.0] * window_seconds
        self._stamps = [0] * window_seconds

    def add(self, weight: float = 1.0, now: float | None = None) -> None:
        second = int(now if now is not None else time.monotonic())
        slot = second % self._window
        if self._stamps[slot] != second:
            self._stamps[slot], self._buckets[slot] = second, 0.0
        self._buckets[slot] += weight

    def per_second(self, now: float | None = None) -> float:
        second = int(now if now is not None else time.monotonic())
        # The current second is still filling: count the previous `window` full seconds.
        recent = sum(b for b, s in zip(self._buckets, self._stamps) if second - self._window <= s < second)
        return recent / self._window
