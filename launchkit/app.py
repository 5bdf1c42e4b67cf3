"""App assembly per role (demo, origin). This module is the one place where the public URL
contract is routed and where every component's start and stop are ordered."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from landing.app import LandingPage
from launchkit.admission import Admission, admission_secrets
from launchkit.admission.settings import from_options as admission_settings
from launchkit.admission.tickets import wall_identity_secret
from launchkit.auth import FailedCredentials, Tokens
from launchkit.config import Config
from launchkit.event import EventStore, State
from launchkit.ops import OpsConsole
from launchkit.qoe import QoeBeacons
from launchkit.status import StatusHandlers
from launchkit.wall.service import Wall, WallSettings
from launchkit.web import middleware
from launchkit.web.clients import TrustedProxies
from launchkit.web.credentials import edge_credential
from stream.encoder import AudioSettings
from stream.ingest.rtmp import RtmpIngest
from stream.ingest.srt import SrtIngest
from stream.packager.http import HlsHandlers, ReplayHandlers
from stream.pipeline import Pipeline, PipelineSettings
from stream.recorder import Recorder
from stream.source import Source
from stream.source.file import LoopedFile
from stream.source.slate import SlateSettings
from stream.source.testcard import TestCard, TestCardSettings
from stream.webrtc.ice import IceSettings
from stream.webrtc.turn import TurnCredentials
from stream.webrtc.viewing import WebRtcViewing
from stream.webrtc.whip import WhipEndpoint

log = logging.getLogger(__name__)

# The wider of the two patterns is bounded too: names longer than this are 404 by routing alone.
RENDITION = r"{rendition:[a-z0-9_-]{1,32}}"
MEDIA_NAME = r"{name:[a-z0-9][a-z0-9.-]{0,63}}"


def pipeline_settings(config: Config) -> PipelineSettings:
    return PipelineSettings(
        renditions=config.ladder,
        fps=config.fps,
        audio=AudioSettings(bitrate=config.audio_bitrate * 1000),
        segment_duration=config.segment_duration,
        playlist_window=config.playlist_window,
        part_duration=config.part_duration,
        stall_timeout=config.stall_timeout,
        slate=SlateSettings(text=config.slate_text, image=config.slate_image),
        title=config.title,
        webrtc=config.webrtc,
    )


def local_source(name: str, config: Config) -> Source:
    if name == "testcard":
        top = config.ladder[0]
        return TestCard(TestCardSettings(top.width, top.height, config.fps, config.title))
    return LoopedFile(Path(name))


@dataclass
class Services:
    """Everything one process runs, built once per app."""

    config: Config
    tokens: Tokens
    pipeline: Pipeline
    events: EventStore
    recorder: Recorder | None
    admission: Admission
    failures: FailedCredentials
    srt: SrtIngest | None = None
    rtmp: RtmpIngest | None = None
    webrtc: WebRtcViewing | None = None
    hls: HlsHandlers = field(init=False)
    ops: OpsConsole = field(init=False)

    def replay_available(self) -> bool:
        return (self.recorder is not None and self.events.event.state is State.ENDED
                and bool(self.recorder.renditions()))

    def publish_urls(self, request: web.Request) -> dict:
        host = self.config.advertised_host
        token = self.tokens.publish
        return {
            "token": token,
            "whip": f"{request.scheme}://{request.host}/whip",
            "rtmp": f"rtmp://{host}:{self.config.rtmp_port}/live/{token}" if self.config.rtmp_port is not None else None,
            "srt": (f"srt://{host}:{self.config.srt_port}?mode=caller&passphrase={token}&pbkeylen=16"
                    if self.config.srt_port is not None else None),
        }

    async def on_event_changed(self) -> None:
        state = self.events.event.state
        if self.recorder is not None:
            self.recorder.recording = state is State.LIVE
            if state is State.ENDED:
                await asyncio.to_thread(self.recorder.flush)
        log.info("event is %s", state.value)


SERVICES = web.AppKey("services", Services)


def create_app(config: Config, tokens: Tokens, ice: IceSettings | None = None) -> web.Application:
    """Build the app for `config.role`. Call from inside the running event loop."""
    pipeline = Pipeline(pipeline_settings(config), asyncio.get_running_loop())
    if config.source:
        pipeline.add_local_source(local_source(config.source, config), "primary")
    if config.backup_source:
        pipeline.add_local_source(local_source(config.backup_source, config), "backup")
    events = EventStore.open(config.data_dir, config.start_at, live=config.role == "demo")
    failures = FailedCredentials()  # one per process: guesses at every credential add up
    recorder = Recorder(config.data_dir / "recording") if config.data_dir else None
    srt = (SrtIngest(pipeline.program, tokens.publish, config.host, config.srt_port)
           if config.srt_port is not None else None)
    rtmp = (RtmpIngest(pipeline.program, tokens, config.host, config.rtmp_port, failures)
            if config.rtmp_port is not None else None)
    top = config.ladder[0]
    admission = Admission(
        admission_settings(config, viewer_mbps=(top.bitrate + config.audio_bitrate * 1000) * 1.1 / 1e6),
        admission_secrets(os.environ, tokens.ops), bypass=lambda request: services.ops.is_operator(request),
    )
    ice = ice or IceSettings()
    webrtc = None
    if pipeline.webrtc_bus is not None and pipeline.ladder.webrtc_encoder is not None:
        webrtc = WebRtcViewing(pipeline.webrtc_bus, pipeline.ladder.webrtc_encoder.request_keyframe, ice,
                               max_viewers=config.max_webrtc_viewers,
                               live=lambda: events.event.state is State.LIVE and pipeline.hls.is_live(),
                               authorize_feed=edge_credential(tokens, failures),
                               turn=TurnCredentials.from_env(config.turn_urls, config.turn_credential_ttl))
    services = Services(config, tokens, pipeline, events, recorder, admission, failures, srt, rtmp, webrtc)
    whip = WhipEndpoint(pipeline.program, tokens, ice, failures)
    services.ops = OpsConsole(services)
    services.hls = HlsHandlers(
        pipeline.hls, lambda request: events.event.state is State.LIVE or services.ops.is_operator(request)
    )
    if recorder is not None:
        for rendition in pipeline.hls.renditions.values():
            rendition.segment_listeners.append(recorder.on_segment)
    replay = ReplayHandlers(recorder, pipeline.hls, services.replay_available) if recorder else None
    status = StatusHandlers(services)
    landing = LandingPage(config, status, wall=True)
    wall = _wall(config, tokens, services)

    trusted = TrustedProxies(config.trusted_proxies)
    app = web.Application(middlewares=[trusted.middleware, middleware.observe], client_max_size=64 * 1024)
    app[SERVICES] = services
    admission.setup(app)
    app.add_routes(admission.routes())
    landing.setup(app)
    wall.setup(app)  # before _stop: the wall's SSE streams and connectors stop before the media threads
    app.add_routes(wall.routes())
    app.on_response_prepare.append(middleware.count_response_bytes)
    app.on_startup.append(_start)
    app.on_cleanup.append(lambda app: whip.close())  # publishers first, then the threads they feed
    app.on_cleanup.append(_stop)
    hls = services.hls
    preview = services.ops.preview
    app.add_routes([
        web.get("/", landing.index),
        web.get("/embed", landing.embed),
        web.static("/static", landing.static_dir, append_version=False),
        web.get("/api/status", status.api_status),
        *QoeBeacons().routes(),
        web.post("/whip", whip.post),
        web.options("/whip", whip.options),
        web.delete("/whip/{session}", whip.delete),
        web.patch("/whip/{session}", whip.patch),
        web.options("/whip/{session}", whip.options),
        web.get("/hls/index.m3u8", hls.multivariant),
        web.get(f"/hls/{RENDITION}/index.m3u8", hls.media_playlist),
        web.get(f"/hls/{RENDITION}/{MEDIA_NAME}", hls.media),
        web.get("/ops", services.ops.console),
        web.post("/ops/login", services.ops.login),
        web.post("/ops/logout", services.ops.logout),
        web.get("/ops/publish", services.ops.publish_page),
        # The console's preview: the same HLS, for operators only, on the operator paths (before the
        # event is live, and wherever viewer paths are routed to the edges).
        web.get("/ops/hls/index.m3u8", preview(hls.multivariant)),
        web.get(f"/ops/hls/{RENDITION}/index.m3u8", preview(hls.media_playlist)),
        web.get(f"/ops/hls/{RENDITION}/{MEDIA_NAME}", preview(hls.media)),
        web.get("/api/ops/status", services.ops.api_status),
        web.post("/api/ops/event", services.ops.api_event),
        web.get("/metrics", status.metrics),
        web.get("/healthz", status.healthz),
        web.get("/readyz", status.readyz),
    ])
    if webrtc is not None:
        app.add_routes(webrtc.routes())
    if replay is not None:
        app.add_routes([
            web.get("/replay/index.m3u8", replay.multivariant),
            web.get(f"/replay/{RENDITION}/index.m3u8", replay.media_playlist),
            web.get(f"/replay/{RENDITION}/{MEDIA_NAME}", replay.media),
        ])
    return app


def _wall(config: Config, tokens: Tokens, services: Services) -> Wall:
    return Wall(
        WallSettings(
            database=config.data_dir / "wall.sqlite3" if config.data_dir else None,
            moderation=config.wall_moderation, mastodon=config.wall_mastodon, feeds=config.wall_feeds,
            allow=config.wall_allow, block_accounts=config.wall_block_accounts, block_words=config.wall_block_words,
            posts_per_minute=config.wall_posts_per_minute, burst=config.wall_burst,
            webhook_secret=os.environ.get("LAUNCHKIT_WALL_WEBHOOK_SECRET", ""),
            redis_url=config.redis or None, identity_secret=wall_identity_secret(os.environ, tokens.ops),
        ),
        is_operator=lambda request: services.ops.is_operator(request),
        require_operator=lambda request: services.ops.require(request),
        page_context=lambda: {"title": config.title, "description": config.description},
    )


async def _start(app: web.Application) -> None:
    services = app[SERVICES]
    if services.recorder is not None:
        services.recorder.start()
    services.pipeline.start()
    if services.webrtc is not None:
        services.webrtc.start()
    if services.rtmp is not None:
        await services.rtmp.start()
    if services.srt is not None:
        services.srt.start()
    await services.on_event_changed()


async def _stop(app: web.Application) -> None:
    services = app[SERVICES]
    if services.webrtc is not None:
        await services.webrtc.stop()  # viewers first: their senders read the buses the pipeline feeds
    if services.rtmp is not None:
        await services.rtmp.stop()  # publishers are released before the threads they feed stop
    if services.srt is not None:
        services.srt.request_stop()
    # Joining threads blocks: do it off the event loop so in-flight responses can finish.
    await asyncio.to_thread(services.pipeline.stop, 1.0)
    if services.srt is not None:
        await asyncio.to_thread(services.srt.stop, 1.0)
    if services.recorder is not None:
        await asyncio.to_thread(services.recorder.stop, 1.0)
