"""Operational endpoints: /api/status for players and pages, /healthz, /readyz, /metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from launchkit import metrics
from launchkit.config import DemoConfig
from stream.packager.http import HlsHandlers
from stream.pipeline import Pipeline

MULTIVARIANT_URL = "/hls/index.m3u8"


class StatusHandlers:
    def __init__(self, config: DemoConfig, pipeline: Pipeline, hls: HlsHandlers) -> None:
        self._config, self._pipeline, self._hls = config, pipeline, hls

    def is_live(self) -> bool:
        live = self._pipeline.hls.is_live()
        metrics.STREAM_LIVE.set(1 if live else 0)
        return live

    def status(self) -> dict:
        live = self.is_live()
        return {
            "event": {"title": self._config.title, "state": "live" if live else "starting"},
            "stream": {
                "live": live,
                "hls": MULTIVARIANT_URL,
                "segment_duration": self._config.segment_duration,
                "renditions": [
                    {"name": r.info.name, "width": r.info.width, "height": r.info.height, "bandwidth": r.info.bandwidth}
                    for r in self._pipeline.hls.renditions.values()
                ],
            },
            "viewers": self._hls.viewers(),
            # One process serves everyone in the demo: no admission limit, no other edge.
            "capacity": {"max_viewers": None, "headroom": None},
            "recommended": {"protocol": "hls", "url": MULTIVARIANT_URL, "edge": None},
        }

    async def api_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.status(), headers={"Cache-Control": "no-cache"})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True}, headers={"Cache-Control": "no-store"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready once the stream publishes: a pod without media should not get viewers."""
        live = self.is_live()
        return web.json_response(
            {"ready": live, "stream_live": live}, status=200 if live else 503, headers={"Cache-Control": "no-store"}
        )

    async def metrics(self, request: web.Request) -> web.Response:
        self.is_live()
        return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})
