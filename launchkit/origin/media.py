"""The origin's media: ingest (WHIP, RTMP, SRT) into the pipeline, the recorder, and the WebRTC
viewers; started and stopped as one component, in the order the threads and sockets need."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import AsyncIterator

from aiohttp import web

from launchkit.auth import FailedCredentials, Tokens
from launchkit.config import Config
from launchkit.event import EventStore, State
from launchkit.origin.rtmp_access import RtmpPublishers
from launchkit.web.credentials import edge_credential
from launchkit.webrtc.ice import IceSettings
from launchkit.webrtc.turn import TurnCredentials
from launchkit.webrtc.viewing import WebRtcViewing
from launchkit.webrtc.whip import WhipEndpoint
from stream.encoder import AudioSettings
from stream.ingest.rtmp.server import RtmpIngest
from stream.ingest.srt import SrtIngest
from stream.pipeline import Pipeline, PipelineSettings
from stream.recorder import Recorder
from stream.source import Source
from stream.source.file import LoopedFile
from stream.source.slate import SlateSettings
from stream.source.testcard import TestCard, TestCardSettings

log = logging.getLogger(__name__)


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


class Media:
    """Built from inside the running event loop (the pipeline hands packets to it)."""

    def __init__(self, config: Config, tokens: Tokens, failures: FailedCredentials, events: EventStore,
                 ice: IceSettings) -> None:
        self.events = events
        self.pipeline = pipeline = Pipeline(pipeline_settings(config), asyncio.get_running_loop())
        if config.source:
            pipeline.add_local_source(local_source(config.source, config), "primary")
        if config.backup_source:
            pipeline.add_local_source(local_source(config.backup_source, config), "backup")
        self.recorder = Recorder(config.data_dir / "recording") if config.data_dir else None
        if self.recorder is not None:
            for rendition in pipeline.hls.renditions.values():
                rendition.segment_listeners.append(self.recorder.on_segment)
        self.whip = WhipEndpoint(pipeline.program, tokens, ice, failures)
        self.srt = (SrtIngest(pipeline.program, tokens.publish, config.host, config.srt_port)
                    if config.srt_port is not None else None)
        self.rtmp = (RtmpIngest(pipeline.program, RtmpPublishers(tokens, failures), config.host, config.rtmp_port)
                     if config.rtmp_port is not None else None)
        self.webrtc: WebRtcViewing | None = None
        if pipeline.webrtc_bus is not None and pipeline.ladder.webrtc_encoder is not None:
            self.webrtc = WebRtcViewing(pipeline.webrtc_bus, pipeline.ladder.webrtc_encoder.request_keyframe, ice,
                                        max_viewers=config.max_webrtc_viewers, live=self.live,
                                        authorize_feed=edge_credential(tokens, failures),
                                        turn=TurnCredentials.from_env(config.turn_urls, config.turn_credential_ttl))

    def live(self) -> bool:
        """The event is live and the program publishes segments."""
        return self.events.event.state is State.LIVE and self.pipeline.hls.is_live()

    def replay_available(self) -> bool:
        return (self.recorder is not None and self.events.event.state is State.ENDED
                and bool(self.recorder.renditions()))

    async def on_event_changed(self) -> None:
        state = self.events.event.state
        if self.recorder is not None:
            self.recorder.recording = state is State.LIVE
            if state is State.ENDED:
                await asyncio.to_thread(self.recorder.flush)
        log.info("event is %s", state.value)

    def whip_routes(self) -> list[web.RouteDef]:
        return self.whip.routes("/whip")

    def viewer_routes(self) -> list[web.RouteDef]:
        return self.webrtc.routes() if self.webrtc is not None else []

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        try:  # a start that fails (a busy ingest port) stops what it started
            self._start()
            if self.rtmp is not None:
                await self.rtmp.start()
            if self.srt is not None:
                self.srt.start()
            await self.on_event_changed()
            yield
        finally:
            await self._stop()

    def _start(self) -> None:
        if self.recorder is not None:
            self.recorder.start()
        self.pipeline.start()
        if self.webrtc is not None:
            self.webrtc.start()

    async def _stop(self) -> None:
        await self.whip.close()  # publishers first, then the threads they feed
        if self.webrtc is not None:
            await self.webrtc.stop()  # viewers first: their senders read the buses the pipeline feeds
        if self.rtmp is not None:
            await self.rtmp.stop()  # publishers are released before the threads they feed stop
        if self.srt is not None:
            self.srt.request_stop()
        # Joining threads blocks: do it off the event loop so in-flight responses can finish.
        await asyncio.to_thread(self.pipeline.stop, 1.0)
        if self.srt is not None:
            await asyncio.to_thread(self.srt.stop, 1.0)
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.stop, 1.0)
