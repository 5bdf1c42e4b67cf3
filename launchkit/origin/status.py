"""/api/status for players and pages, and what the origin's probes report (launchkit/web/probes.py)."""

from __future__ import annotations

import time
from typing import Callable

from aiohttp import web

from launchkit import metrics
from launchkit.config import Config
from launchkit.event import State
from launchkit.origin.media import Media

LIVE_URL = "/hls/index.m3u8"
REPLAY_URL = "/replay/index.m3u8"


class StatusHandlers:
    """`hls_viewers()` counts HLS viewers; `capacity()` and `edges()` are the admission's (its
    `status` and `edges`)."""

    def __init__(self, config: Config, media: Media, hls_viewers: Callable[[], int],
                 capacity: Callable[[], dict], edges: Callable[[], list[str]]) -> None:
        self._config, self._media = config, media
        self._hls_viewers, self._capacity, self._edges = hls_viewers, capacity, edges

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/status", self.api_status)]

    def media_flowing(self) -> bool:
        live = self._media.pipeline.hls.is_live()
        metrics.STREAM_LIVE.set(1 if live else 0)
        return live

    def status(self) -> dict:
        config, media = self._config, self._media
        event = media.events.event
        flowing = self.media_flowing()
        live = event.state is State.LIVE and flowing
        replay = event.state is State.ENDED and media.replay_available()
        starts_in = event.start_at.timestamp() - time.time() if event.start_at else None
        return {
            "event": {
                "title": config.title,
                # What edges need to render the same landing page (launchkit/edge/page.py PageText).
                "description": config.description,
                "agenda": config.agenda.as_dict(),
                "image": config.og_image or None,
                "captions": {"url": config.captions, "lang": config.captions_lang} if config.captions else None,
                "state": event.state.value,
                "start_at": event.start_at.isoformat() if event.start_at else None,
                "starts_in": round(starts_in, 1) if starts_in is not None else None,
                "live_at": event.live_at,
                "ended_at": event.ended_at,
            },
            "stream": {
                "live": live,
                "on_air": media.pipeline.program.on_air,
                "hls": LIVE_URL,
                "segment_duration": config.segment_duration,
                "renditions": [
                    {"name": r.info.name, "width": r.info.width, "height": r.info.height, "bandwidth": r.info.bandwidth}
                    for r in media.pipeline.hls.renditions.values()
                ],
            },
            "webrtc": media.webrtc.status() if media.webrtc else {"available": False, "url": None},
            "replay": {"available": replay, "url": REPLAY_URL if replay else None},
            # HLS viewers (estimated from segment requests) plus WebRTC viewers (sessions).
            "viewers": self._hls_viewers() + (media.webrtc.whep.sessions if media.webrtc else 0),
            "capacity": self._capacity(),
            "recommended": {**_recommended(live, replay), **_edges(self._edges())},
        }

    async def api_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status(), headers={"Cache-Control": "no-cache"})

    def readiness(self) -> dict:
        """/readyz: ready once the program publishes segments (slate included): a pod without media
        gets no viewers."""
        flowing = self.media_flowing()
        return {"ready": flowing, "stream_live": flowing}


def _recommended(live: bool, replay: bool) -> dict:
    if live:
        return {"protocol": "hls", "url": LIVE_URL}
    if replay:
        return {"protocol": "hls", "url": REPLAY_URL}
    return {"protocol": None, "url": None}


def _edges(edges: list[str]) -> dict:
    """`edge`: where new viewers should go; `edges`: where a player moves when its edge drains or dies."""
    return {"edge": edges[0] if edges else None, "edges": edges}
