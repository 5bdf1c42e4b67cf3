"""App assembly per role. This module is the one place where the public URL contract is routed."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from landing.app import LandingPage
from launchkit import middleware
from launchkit.config import DemoConfig
from launchkit.status import StatusHandlers
from stream.encoder import AudioSettings
from stream.packager.http import HlsHandlers
from stream.pipeline import Pipeline, PipelineSettings
from stream.source.slate import SlateSettings
from stream.source.testcard import TestCard, TestCardSettings

log = logging.getLogger(__name__)

PIPELINE = web.AppKey("pipeline", Pipeline)
# The wider of the two patterns is bounded too: names longer than this are 404 by routing alone.
RENDITION = r"{rendition:[a-z0-9_-]{1,32}}"
MEDIA_NAME = r"{name:[a-z0-9][a-z0-9.-]{0,63}}"


def pipeline_settings(config: DemoConfig) -> PipelineSettings:
    return PipelineSettings(
        renditions=config.ladder,
        fps=config.fps,
        audio=AudioSettings(bitrate=config.audio_bitrate * 1000),
        segment_duration=config.segment_duration,
        playlist_window=config.playlist_window,
        stall_timeout=config.stall_timeout,
        slate=SlateSettings(text=config.slate_text, image=config.slate_image),
        title=config.title,
    )


def create_demo_app(config: DemoConfig) -> web.Application:
    """Everything in one process, fed by the test card. Call from inside the running event loop."""
    pipeline = Pipeline(pipeline_settings(config), asyncio.get_running_loop())
    top = config.ladder[0]
    pipeline.add_local_source(TestCard(TestCardSettings(top.width, top.height, config.fps, config.title)))
    hls = HlsHandlers(pipeline.hls)
    status = StatusHandlers(config, pipeline, hls)
    landing = LandingPage(config, status)

    app = web.Application(middlewares=[middleware.observe], client_max_size=64 * 1024)
    app[PIPELINE] = pipeline
    landing.setup(app)
    app.on_response_prepare.append(middleware.count_response_bytes)
    app.on_startup.append(_start_pipeline)
    app.on_cleanup.append(_stop_pipeline)
    app.add_routes([
        web.get("/", landing.index),
        web.get("/embed", landing.embed),
        web.static("/static", landing.static_dir, append_version=False),
        web.get("/api/status", status.api_status),
        web.get("/hls/index.m3u8", hls.multivariant),
        web.get(f"/hls/{RENDITION}/index.m3u8", hls.media_playlist),
        web.get(f"/hls/{RENDITION}/{MEDIA_NAME}", hls.media),
        web.get("/metrics", status.metrics),
        web.get("/healthz", status.healthz),
        web.get("/readyz", status.readyz),
    ])
    return app


async def _start_pipeline(app: web.Application) -> None:
    app[PIPELINE].start()


async def _stop_pipeline(app: web.Application) -> None:
    # Joining threads blocks: do it off the event loop so in-flight responses can finish.
    await asyncio.to_thread(app[PIPELINE].stop, 1.0)
