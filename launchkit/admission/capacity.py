"""What this server can take right now: configured limits, measured egress, and the event-loop lag guard."""

from __future__ import annotations

import asyncio
import math
import time

from launchkit import metrics

# Per-viewer egress is measured only once this many viewers are seen (fewer is noise: a joining
# viewer fetches several segments at once).
MIN_VIEWERS_FOR_MEASURED_EGRESS = 10


class EgressMeter:
    """Bytes sent per second over a sliding window, in one-second buckets (memory bounded by the window)."""

    def __init__(self, window_seconds: int = 5) -> None:
        self._window = window_seconds
        self._bytes = [0] * window_seconds
        self._stamps = [0] * window_seconds

    def add(self, size: int, now: float | None = None) -> None:
        second = int(time.monotonic() if now is None else now)
        slot = second % self._window
        if self._stamps[slot] != second:
            self._stamps[slot], self._bytes[slot] = second, 0
        self._bytes[slot] += size

    def mbps(self, now: float | None = None) -> float:
        second = int(time.monotonic() if now is None else now)
        recent = sum(b for b, s in zip(self._bytes, self._stamps) if second - self._window <= s < second)
        return recent * 8 / self._window / 1e6


class LoopLagMonitor:
    """Measures event-loop lag with a periodic timer (how late its wake-ups are) and decides, with
    hysteresis, whether the server is too busy to admit anyone new.

    The guard closes on *sustained* lag only: the loop has been later than `threshold` for `sustain`
    seconds in a row (a timer late by L says the loop was stuck for L, so one long stall counts as
    L seconds of lag). One spike, a GC pause or a burst of connections, shorter than `sustain`,
    changes nothing: closing the door on it would turn away viewers the server can take. Once
    closed, it reopens after `cooldown` seconds without lag. `lagging()` also looks at the timer
    that is overdue right now, so requests handled at the end of a long stall already see it.
    The decision is the gauge `launchkit_admission_lag_guard` (1: closed) and each closing is counted.
    """

    def __init__(self, threshold: float, cooldown: float, sustain: float = 1.0, interval: float = 0.05) -> None:
        self.threshold, self.cooldown, self.sustain, self.interval = threshold, cooldown, sustain, interval
        self._due: float | None = None
        self._lagging_since: float | None = None  # start of the current run of lag
        self._calm_since: float | None = None  # start of the current run without lag
        self._closed = False
        self._peak = 0.0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="admission-loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            self._due = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            self._record(max(0.0, loop.time() - self._due), loop.time())

    def _record(self, lag: float, now: float) -> None:
        self._peak = max(self._peak, lag)
        if self.threshold <= 0:
            return
        if lag > self.threshold:
            self._calm_since = None
            if self._lagging_since is None:
                self._lagging_since = now - lag
            if not self._closed and now - self._lagging_since >= self.sustain:
                self._set_closed(True)
        else:
            self._lagging_since = None
            if self._calm_since is None:
                self._calm_since = now
            if self._closed and now - self._calm_since >= self.cooldown:
                self._set_closed(False)

    def _set_closed(self, closed: bool) -> None:
        self._closed = closed
        metrics.ADMISSION_LAG_GUARD.set(1 if closed else 0)
        if closed:
            metrics.ADMISSION_LAG_GUARD_CLOSED.inc()

    def lag(self) -> float:
        """The lateness of the timer right now (0 when it is not running)."""
        if self._due is None:
            return 0.0
        return max(0.0, asyncio.get_running_loop().time() - self._due)

    def lagging(self) -> bool:
        if self.threshold <= 0 or self._due is None:
            return False
        lag = self.lag()
        if lag > self.threshold:  # the timer is overdue: the loop is stuck right now
            self._record(lag, asyncio.get_running_loop().time())
        return self._closed

    def take_peak(self) -> float:
        """Largest lag since the last call (the gauge is set from this once per tick)."""
        peak, self._peak = max(self._peak, self.lag()), 0.0
        metrics.EVENT_LOOP_LAG.set(peak)
        return peak


def capacity(max_viewers: int, max_egress_mbps: float, viewer_mbps: float, viewers: int, egress_mbps: float) -> int | None:
    """Viewers this server can serve (None: unlimited): the tighter of the configured viewer limit and
    the egress limit divided by one viewer's egress (measured once enough viewers are seen)."""
    limits = []
    if max_viewers > 0:
        limits.append(max_viewers)
    if max_egress_mbps > 0:
        per_viewer = viewer_mbps
        if viewers >= MIN_VIEWERS_FOR_MEASURED_EGRESS and egress_mbps > 0:
            per_viewer = max(egress_mbps / viewers, 0.05)
        limits.append(math.floor(max_egress_mbps / per_viewer))
    return min(limits) if limits else None
