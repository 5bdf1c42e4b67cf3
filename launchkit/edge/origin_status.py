"""The origin's /api/status as an edge sees it: polled in the background, with what to say before
the origin has ever answered."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from launchkit.edge.relay.relay import Relay
from launchkit.edge.relay.upstream import Upstream, UpstreamError

log = logging.getLogger("launchkit.edge")

STATUS_INTERVAL = 1.0  # the origin's /api/status is fetched once per second per process, for everyone
MAX_STATUS_BYTES = 256 * 1024


def fallback_status() -> dict:
    """What the page and /api/status say before the origin has ever answered: starting, not live."""
    return {
        "event": {"title": "Live stream", "state": "live", "start_at": None, "starts_in": None, "live_at": None,
                  "ended_at": None},
        "stream": {"live": False, "on_air": None, "hls": "/hls/index.m3u8", "segment_duration": None, "renditions": []},
        "replay": {"available": False, "url": None},
        "viewers": 0,
        "capacity": {"max_viewers": None, "headroom": None},
        "recommended": {"protocol": None, "url": None, "edge": None, "edges": []},
    }



class OriginStatus:
    """The origin's /api/status, polled once per STATUS_INTERVAL in the background (it doubles as
    the reachability probe while no viewer asks for anything)."""

    def __init__(self, upstream: Upstream, relay: Relay) -> None:
        self._upstream, self._relay = upstream, relay
        self.data: dict | None = None
        self.fetched_at: float | None = None
        self.first_attempt = asyncio.Event()

    async def run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(STATUS_INTERVAL)

    async def refresh(self) -> None:
        try:
            fetched = await self._upstream.fetch("/api/status", "status", min(2.0, self._upstream.timeout))
            if fetched.status == 200 and len(fetched.body) <= MAX_STATUS_BYTES:
                data = json.loads(fetched.body)
                if not isinstance(data, dict) or not isinstance(data.get("event"), dict) \
                        or not isinstance(data.get("stream"), dict) or not isinstance(data.get("replay"), dict):
                    raise ValueError("unexpected /api/status shape")
                self.data, self.fetched_at = data, time.monotonic()
                duration = data["stream"].get("segment_duration")
                if isinstance(duration, (int, float)) and 1 <= duration <= 30 and self._relay.target_duration == 2.0:
                    self._relay.target_duration = float(duration)
        except UpstreamError as error:
            log.debug("status poll failed: %s", error)
        except ValueError as error:
            log.warning("the origin's /api/status is not usable: %s", error)
        finally:
            self.first_attempt.set()

    async def wait_first(self, timeout: float = 1.0) -> None:
        if not self.first_attempt.is_set():
            try:
                await asyncio.wait_for(self.first_attempt.wait(), timeout)
            except TimeoutError:
                pass

