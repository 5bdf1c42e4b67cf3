"""Operational endpoints: /api/status for players and pages, /healthz, /readyz, /metrics."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from launchkit import metrics
from launchkit.event import State
from launchkit.web.credentials import require_bearer

if TYPE_CHECKING:
    from launchkit.app import Services

LIVE_URL = "/hls/index.m3u8"
REPLAY_URL = "/replay/index.m3u8"


class StatusHandlers:
    def __init__(self, services: Services) -> None:
        self._services = services

    def media_flowing(self) -> bool:
        live = self._services.pipeline.hls.is_live()
        metrics.STREAM_LIVE.set(1 if live else 0)
        return live

    def status(self) -> dict:
        services = self._services
        event = services.events.event
        flowing = self.media_flowing()
        live = event.state is State.LIVE and flowing
        replay = event.state is State.ENDED and services.replay_available()
        starts_in = event.start_at.timestamp() - time.time() if event.start_at else None
        return {
            "event": {
                "title": services.config.title,
                # What edges need to render the same landing page (launchkit/edge.py _PageText).
                "description": services.config.description,
                "agenda": services.config.agenda.as_dict(),
                "image": services.config.og_image or None,
                "captions": {"url": services.config.captions, "lang": services.config.captions_lang}
                if services.config.captions else None,
                "state": event.state.value,
                "start_at": event.start_at.isoformat() if event.start_at else None,
                "starts_in": round(starts_in, 1) if starts_in is not None else None,
                "live_at": event.live_at,
                "ended_at": event.ended_at,
            },
            "stream": {
                "live": live,
                "on_air": services.pipeline.program.on_air,
                "hls": LIVE_URL,
                "segment_duration": services.config.segment_duration,
                "renditions": [
                    {"name": r.info.name, "width": r.info.width, "height": r.info.height, "bandwidth": r.info.bandwidth}
                    for r in services.pipeline.hls.renditions.values()
                ],
            },
            "webrtc": services.webrtc.status() if services.webrtc else {"available": False, "url": None},
            "replay": {"available": replay, "url": REPLAY_URL if replay else None},
            # HLS viewers (estimated from segment requests) plus WebRTC viewers (sessions).
            "viewers": services.hls.viewers() + (services.webrtc.whep.sessions if services.webrtc else 0),
            "capacity": services.admission.status(),
            "recommended": {**_recommended(live, replay), **_edges(services.admission.edges())},
        }

    async def api_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status(), headers={"Cache-Control": "no-cache"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True}, headers={"Cache-Control": "no-store"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready once the program publishes segments (slate included): a pod without media gets no viewers."""
        flowing = self.media_flowing()
        return web.json_response(
            {"ready": flowing, "stream_live": flowing}, status=200 if flowing else 503,
            headers={"Cache-Control": "no-store"},
        )

    async def metrics(self, request: web.Request) -> web.Response:
        services = self._services
        await require_bearer(request, services.failures, "metrics", services.tokens.is_metrics, "launchkit-metrics",
                             "the metrics token (LAUNCHKIT_METRICS_TOKEN) or the ops token")
        self.media_flowing()
        return web.Response(body=generate_latest(REGISTRY),
                            headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


def _recommended(live: bool, replay: bool) -> dict:
    if live:
        return {"protocol": "hls", "url": LIVE_URL}
    if replay:
        return {"protocol": "hls", "url": REPLAY_URL}
    return {"protocol": None, "url": None}


def _edges(edges: list[str]) -> dict:
    """`edge`: where new viewers should go; `edges`: where a player moves when its edge drains or dies."""
    return {"edge": edges[0] if edges else None, "edges": edges}
