"""Pull-through relay: cache, then single-flight, then upstream — the heart of an edge.

For one object (path + canonical query):
1. fresh in the cache → served (`hit`);
2. the upstream failed for it less than `negative_ttl` ago → the stale copy if there is one, else
   `Unavailable` (the handler answers 503 + Retry-After): a failing origin sees at most one request
   per object per `negative_ttl` per edge process, however many viewers retry;
3. the origin is known unreachable (timeouts, refused connections) → the stale copy or
   `Unavailable` at once, without waiting for another timeout; one request per PROBE_INTERVAL
   still goes upstream as a probe (the edge's status poll probes too), so recovery is noticed
   within about a second;
4. otherwise one upstream fetch per object however many viewers ask at once (`miss` for the
   request that started it, `coalesced` for the others). When a stale copy exists, viewers wait
   at most STALE_PATIENCE for the refresh, then get the stale copy (`stale`) while the fetch goes on.

What is stored: 200s for the origin's lifetime (see cache.py), with a stale-if-error window of two
target durations for playlists; 404/410 and other 4xx for at most `negative_ttl` (shields the
origin from a storm of requests for an expired or mistyped name); 5xx and failures never.

`no-cache` responses (the origin's plain LL-HLS live playlist, which gains a part every 0.4 s) are
held for REVALIDATE_HOLD only, and passed on with their `no-cache` so every cache below revalidates
too. Without that hold, "revalidate every use" would mean one upstream request per viewer poll
(the origin sends no validators), bounded only by the round trip: O(viewers) again. With it, a
playlist costs the origin at most 1/REVALIDATE_HOLD requests per second per edge process, and a
viewer sees it at most REVALIDATE_HOLD older than the origin's (half a part at 0.4 s parts).

LL-HLS: a blocking playlist reload (`?_HLS_msn=`) or a part the origin holds until it exists may
legitimately take up to three target durations, so those get `timeout + 3 × target duration`.
Their query is part of the key, so each one is still fetched once per edge process.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict

from launchkit import metrics
from launchkit.edge.relay.cache import CachedObject, ObjectCache, cache_control, freshness
from launchkit.edge.relay.coalescing import SingleFlight
from launchkit.edge.relay.upstream import Upstream, UpstreamError

log = logging.getLogger(__name__)

PLAYLIST_STALE_TARGETS = 2  # a playlist may be served this many target durations past its freshness if upstream fails
STALE_PATIENCE = 1.0  # seconds a viewer waits for a slow refresh before getting the stale copy
BLOCKING_TARGETS = 3  # an LL-HLS blocking request may take this many target durations at the origin
REVALIDATE_HOLD = 0.2  # seconds a `no-cache` response serves everyone who asks (see above)
# LL-HLS parts are immutable but listed for three target durations only: keeping them longer would
# crowd segments (which replays and late joiners still use) out of the byte budget.
PART_TTL_TARGETS = 6
PROBE_INTERVAL = 1.0  # while the origin is unreachable, one viewer request per interval may try it
MAX_FAILURE_MEMO = 10_000
_SEGMENT_NAME = re.compile(r"^(\d{1,20}\.m4s|init-[0-9a-f]{6,64}\.mp4)$")
_TARGET_DURATION = re.compile(rb"#EXT-X-TARGETDURATION:(\d{1,3})")
_PART_TARGET = re.compile(rb"#EXT-X-PART-INF:PART-TARGET=(\d{1,2}(?:\.\d{1,6})?)")


def classify(path: str) -> str:
    """playlist, segment, part (any other media name under /hls/: LL-HLS parts) or other."""
    name = path.rsplit("/", 1)[-1]
    if name.endswith(".m3u8"):
        return "playlist"
    if _SEGMENT_NAME.match(name):
        return "segment"
    if path.startswith("/hls/"):
        return "part"
    return "other"


class Unavailable(Exception):
    """Nothing to serve: the upstream failed and no usable copy is cached."""

    def __init__(self, retry_after: int, reason: str) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class TooLarge(Exception):
    """Over the per-object limit: not cached, the handler streams it through."""


class Relay:
    def __init__(self, upstream: Upstream, cache: ObjectCache, *, negative_ttl: float = 0.5, retry_after: int = 2,
                 target_duration: float = 2.0) -> None:
        self.upstream, self.cache = upstream, cache
        self.negative_ttl, self.retry_after = negative_ttl, retry_after
        self.target_duration = target_duration  # learned from media playlists (#EXT-X-TARGETDURATION)
        self.part_target: float | None = None  # learned from LL-HLS media playlists (#EXT-X-PART-INF)
        self._flights: SingleFlight[str, CachedObject] = SingleFlight()
        self._failed: OrderedDict[str, tuple[float, int]] = OrderedDict()  # target -> (until, retry after)
        self._oversized: OrderedDict[str, None] = OrderedDict()  # streamed through from now on
        self._next_probe = 0.0

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    def blocking(self, target: str, kind: str) -> bool:
        return kind == "part" or (kind == "playlist" and "_HLS_msn=" in target)

    async def get(self, target: str, kind: str, via: str | None = None) -> tuple[CachedObject, str]:
        """The object for `target` and how it was obtained (hit, miss, coalesced, stale).
        Raises Unavailable (answer 503) or TooLarge (stream it through)."""
        now = time.monotonic()
        entry = self.cache.get(target, now)
        if entry is not None and entry.is_fresh(now):
            return entry, "hit"
        if target in self._oversized:
            raise TooLarge(target)
        stale = entry if entry is not None and entry.can_serve_stale(now) else None
        failed = self._failed.get(target)
        if failed is not None and now < failed[0]:
            if stale is not None:
                return stale, "stale"
            raise Unavailable(failed[1], "the origin failed moments ago")
        if self.upstream.health.up is False and target not in self._flights:
            if now < self._next_probe:
                if stale is not None:
                    return stale, "stale"
                raise Unavailable(self.retry_after, "the origin is unreachable")
            self._next_probe = now + PROBE_INTERVAL  # this request probes
        task, leader = self._flights.start(target, lambda: self._fetch(target, kind, via))
        try:
            if stale is not None:
                result = await asyncio.wait_for(asyncio.shield(task), STALE_PATIENCE)
            else:
                result = await asyncio.shield(task)
        except TimeoutError:  # only STALE_PATIENCE: upstream timeouts arrive as UpstreamError
            return stale, "stale"
        except UpstreamError as error:
            if stale is not None:
                return stale, "stale"
            raise Unavailable(self._retry_after(error), str(error)) from None
        return result, "miss" if leader else "coalesced"

    async def _fetch(self, target: str, kind: str, via: str | None) -> CachedObject:
        timeout = self.upstream.timeout
        if self.blocking(target, kind):
            timeout += BLOCKING_TARGETS * self.target_duration
        try:
            fetched = await self.upstream.fetch(target, kind, timeout, via)
        except UpstreamError as error:
            if error.outcome == "too_large":  # known from its headers: later requests skip this attempt
                self._oversized[target] = None
                while len(self._oversized) > MAX_FAILURE_MEMO:
                    self._oversized.popitem(last=False)
                raise TooLarge(str(error)) from None
            self._remember_failure(target, self._retry_after(error))
            if error.outcome in ("timeout", "unreachable"):
                self._next_probe = time.monotonic() + PROBE_INTERVAL
            raise
        self._failed.pop(target, None)
        headers = dict(fetched.headers)
        if fetched.status == 200:
            if kind == "playlist":
                self._learn_target_duration(fetched.body)
            default_stale = PLAYLIST_STALE_TARGETS * self.target_duration if kind == "playlist" else 0.0
            lifetime = freshness(headers, default_stale)
            ttl, stale = (REVALIDATE_HOLD if lifetime.revalidate else lifetime.ttl), lifetime.stale_if_error
            if kind == "part":
                ttl = min(ttl, PART_TTL_TARGETS * self.target_duration)
        else:
            ttl, stale = self._negative_ttl(headers), 0.0
        entry = CachedObject.build(fetched.status, fetched.headers, fetched.body, ttl, stale)
        if ttl > 0 and self.cache.put(target, entry):
            self.update_gauges()
        return entry

    def _negative_ttl(self, headers: dict[str, str]) -> float:
        directives = cache_control(headers.get("Cache-Control"))
        if {"no-store", "private"} & directives.keys():
            return 0.0
        if "no-cache" in directives:
            return min(self.negative_ttl, REVALIDATE_HOLD)
        lifetime = freshness(headers).ttl if "max-age" in directives or "s-maxage" in directives else None
        return self.negative_ttl if lifetime is None else min(self.negative_ttl, lifetime)

    def _remember_failure(self, target: str, retry_after: int) -> None:
        if self.negative_ttl <= 0:
            return
        self._failed[target] = (time.monotonic() + self.negative_ttl, retry_after)
        self._failed.move_to_end(target)
        while len(self._failed) > MAX_FAILURE_MEMO:
            self._failed.popitem(last=False)

    def _retry_after(self, error: UpstreamError) -> int:
        if error.retry_after and error.retry_after.strip().isdigit():
            return max(1, min(60, int(error.retry_after)))
        return self.retry_after

    def _learn_target_duration(self, body: bytes) -> None:
        match = _TARGET_DURATION.search(body, 0, 4096)
        if match:
            self.target_duration = float(max(1, min(30, int(match.group(1)))))
            part = _PART_TARGET.search(body, 0, 4096)
            if part:
                self.part_target = max(0.05, min(self.target_duration, float(part.group(1))))

    def has_servable_playlist(self, now: float | None = None) -> bool:
        """A playlist is cached that can still be served (fresh, or stale within its error window)."""
        now = time.monotonic() if now is None else now
        return self.cache.count(lambda key, entry: ".m3u8" in key and entry.can_serve_stale(now)) > 0

    def maintain(self) -> None:
        """Periodic: drop dead objects and failure memos, refresh the gauges."""
        now = time.monotonic()
        self.cache.sweep(now)
        for target in [t for t, (until, _) in self._failed.items() if until <= now]:
            del self._failed[target]
        self.update_gauges()

    def update_gauges(self) -> None:
        metrics.EDGE_CACHE_BYTES.set(self.cache.bytes)
        metrics.EDGE_CACHE_OBJECTS.set(len(self.cache))
