"""One live stream from ingest to packager:

    ingests / local sources → Program (frame sync, switcher, slate) → Ladder (encode once per
    rendition) → PacketBus → HlsPackager

Start/stop are explicit so the app's startup/cleanup hooks own every thread's whole life.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from stream.bus import PacketBus, Subscription
from stream.encoder import AudioSettings, VideoSettings
from stream.ladder import DEFAULT_LADDER, Ladder, Rendition
from stream.packager import cmaf
from stream.packager.hls import AUDIO_TRACK_ID, VIDEO_TRACK_ID, HlsPackager, RenditionInfo, RenditionPackager
from stream.program import Program, ProgramInput, Role
from stream.source import CapturedFrame, Source
from stream.source.slate import Slate, SlateSettings
from stream.worker import Worker

log = logging.getLogger(__name__)

# fMP4 headers add well under 5 % to the elementary streams (measured in tests/stream/packager).
CONTAINER_OVERHEAD = 1.05


def declared_bandwidth(video: VideoSettings, audio: AudioSettings, segment_duration: float) -> tuple[int, int]:
    """(BANDWIDTH, AVERAGE-BANDWIDTH): the guaranteed per-segment peak and the nominal rate."""
    peak = (video.peak_bitrate(segment_duration) + audio.bitrate) * CONTAINER_OVERHEAD
    average = (video.bitrate + audio.bitrate) * CONTAINER_OVERHEAD
    return round(peak), round(average)


# WebRTC viewers join at a keyframe and recover from loss with one: a short safety-net interval
# (keyframes on request come on top, rate-limited by the fan-out).
WEBRTC_KEYFRAME_INTERVAL = 2.0


def webrtc_video_settings(rendition: Rendition | None, fps: int) -> VideoSettings | None:
    if rendition is None:
        return None
    return VideoSettings(rendition.name, rendition.width, rendition.height, fps, rendition.bitrate,
                         WEBRTC_KEYFRAME_INTERVAL, profile="baseline")


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    renditions: tuple[Rendition, ...] = DEFAULT_LADDER
    fps: int = 30
    audio: AudioSettings = field(default_factory=AudioSettings)
    segment_duration: float = 2.0
    # LL-HLS part duration; None picks the longest of at most 0.5 s that tiles the segment.
    part_duration: float | None = None
    playlist_window: int = 6
    stall_timeout: float = 0.5
    slate: SlateSettings = field(default_factory=SlateSettings)
    title: str = ""
    # The WebRTC rendition (WHEP viewers), None: no WebRTC output.
    webrtc: Rendition | None = None


class LocalSource(Worker):
    """Runs a `Source` (test card, looped file) on its own thread as a publisher of the program."""

    def __init__(self, source: Source, target: ProgramInput) -> None:
        super().__init__(f"source-{source.name}")
        self.source, self.target = source, target

    def _emit(self, captured: CapturedFrame) -> None:
        if captured.is_video:
            self.target.push_video(captured.frame)
        else:
            self.target.push_audio(captured.frame)

    def run(self) -> None:
        try:
            self.source.run(self._emit, self.stopping)
        finally:
            self.target.release()


class Pipeline:
    def __init__(self, settings: PipelineSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.bus = PacketBus(loop)
        self.webrtc_bus = PacketBus(loop) if settings.webrtc is not None else None
        self.ladder = Ladder(settings.renditions, settings.fps, settings.segment_duration, settings.audio, self.bus,
                             webrtc=webrtc_video_settings(settings.webrtc, settings.fps), webrtc_bus=self.webrtc_bus)
        self.hls = HlsPackager([self._rendition_packager(e.settings) for e in self.ladder.video_encoders])
        top = settings.renditions[0]
        self.slate = Slate(top.width, top.height, settings.slate, settings.title)
        self.program = Program(top.width, top.height, settings.fps, self.ladder.submit, self.slate.frame,
                               settings.stall_timeout)
        self._local_sources: list[LocalSource] = []
        self._subscription: Subscription | None = None

    def _rendition_packager(self, video: VideoSettings) -> RenditionPackager:
        audio = self.ladder.audio_encoder
        peak, average = declared_bandwidth(video, self.settings.audio, self.settings.segment_duration)
        info = RenditionInfo(
            name=video.rendition, width=video.width, height=video.height, fps=video.fps,
            bandwidth=peak, average_bandwidth=average,
        )
        encoder = next(e for e in self.ladder.video_encoders if e.settings is video)
        video_track = cmaf.VideoTrack(VIDEO_TRACK_ID, 90000, video.width, video.height, encoder.parameter_sets)
        audio_track = cmaf.AudioTrack(AUDIO_TRACK_ID, audio.config)
        return RenditionPackager(info, video_track, audio_track, self.settings.segment_duration,
                                 self.settings.playlist_window, self.settings.part_duration)

    def add_local_source(self, source: Source, role: Role = "primary") -> LocalSource:
        local = LocalSource(source, self.program.claim(role, source.name, "local"))
        self._local_sources.append(local)
        return local

    def _workers(self) -> list[Worker]:
        return [*self.ladder.all_workers, self.program, *self._local_sources]

    def start(self) -> None:
        self._subscription = self.bus.subscribe(self.hls.on_packet)
        for worker in self._workers():
            worker.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop every thread at once, then wait: shutdown takes the slowest thread's time, not the sum."""
        workers = self._workers()
        for worker in reversed(workers):
            worker.request_stop()
        for worker in reversed(workers):
            worker.join(timeout)
        if self._subscription:
            self._subscription.close()
