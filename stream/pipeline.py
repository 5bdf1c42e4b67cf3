"""One live stream from source to packager: source thread → encoder thread → packet bus → HLS.

Start/stop are explicit so the app's startup/cleanup hooks own the threads' whole life.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass

from stream.bus import PacketBus, Subscription
from stream.encoder import AudioEncoder, AudioSettings, EncoderWorker, VideoEncoder, VideoSettings
from stream.packager import cmaf
from stream.packager.hls import AUDIO_TRACK_ID, VIDEO_TRACK_ID, HlsPackager, RenditionInfo, RenditionPackager
from stream.source import Source

log = logging.getLogger(__name__)

# fMP4 headers add well under 5 % to the elementary streams (measured in tests/stream/packager).
CONTAINER_OVERHEAD = 1.05


def declared_bandwidth(video: VideoSettings, audio: AudioSettings, segment_duration: float) -> tuple[int, int]:
    """(BANDWIDTH, AVERAGE-BANDWIDTH): the guaranteed per-segment peak and the nominal rate."""
    peak = (video.peak_bitrate(segment_duration) + audio.bitrate) * CONTAINER_OVERHEAD
    average = (video.bitrate + audio.bitrate) * CONTAINER_OVERHEAD
    return round(peak), round(average)


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    video: VideoSettings
    audio: AudioSettings
    segment_duration: float
    playlist_window: int


class Pipeline:
    def __init__(self, source: Source, settings: PipelineSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.source = source
        self.settings = settings
        self.bus = PacketBus(loop)
        video, audio = VideoEncoder(settings.video), AudioEncoder(settings.audio)
        self.encoder = EncoderWorker(video, audio, self.bus, max_queued_frames=2 * settings.video.fps)
        self.hls = HlsPackager([self._rendition_packager(video, audio)])
        self._subscription: Subscription | None = None
        self._stop = threading.Event()
        self._source_thread = threading.Thread(target=self._run_source, name=f"source-{source.name}")

    def _rendition_packager(self, video: VideoEncoder, audio: AudioEncoder) -> RenditionPackager:
        v, a = self.settings.video, self.settings.audio
        peak, average = declared_bandwidth(v, a, self.settings.segment_duration)
        info = RenditionInfo(
            name=v.rendition, width=v.width, height=v.height, fps=v.fps, bandwidth=peak, average_bandwidth=average,
        )
        video_track = cmaf.VideoTrack(VIDEO_TRACK_ID, 90000, v.width, v.height, video.parameter_sets)
        audio_track = cmaf.AudioTrack(AUDIO_TRACK_ID, audio.config)
        return RenditionPackager(info, video_track, audio_track, self.settings.segment_duration, self.settings.playlist_window)

    def start(self) -> None:
        self._subscription = self.bus.subscribe(self.hls.on_packet)
        self.encoder.start()
        self._source_thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._source_thread.is_alive():
            self._source_thread.join(timeout)
        self.encoder.stop(timeout)
        if self._subscription:
            self._subscription.close()

    def _run_source(self) -> None:
        try:
            self.source.run(self.encoder.submit, self._stop)
        except Exception:
            log.exception("source %s failed", self.source.name)
