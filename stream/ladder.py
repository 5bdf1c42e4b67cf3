"""The ABR ladder: the program is encoded once per rendition (and its audio once), each on its
own thread, and every packet goes to the bus.

Media time comes from the program clock (`CapturedFrame.wallclock`), computed once per frame
here, so renditions agree on timestamps and their keyframes (forced on segment boundaries by
timestamp) line up exactly.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass
from typing import Protocol

from stream import telemetry
from stream.bus import PacketBus
from stream.encoder import AudioEncoder, AudioSettings, OpusEncoder, VideoEncoder, VideoSettings
from stream.packet import EncodedPacket
from stream.source import CapturedFrame
from stream.worker import Worker


@dataclass(frozen=True, slots=True)
class Rendition:
    name: str
    width: int
    height: int
    bitrate: int


DEFAULT_LADDER = (
    Rendition("720p", 1280, 720, 3_000_000),
    Rendition("480p", 854, 480, 1_200_000),
    Rendition("360p", 640, 360, 600_000),
)


# A worker this far behind drops its oldest frame (counted) rather than letting lag grow.
MAX_BACKLOG_SECONDS = 0.1


class _Encoder(Protocol):
    def encode(self, captured: CapturedFrame, frame_seconds: float) -> list[EncodedPacket]: ...


class EncoderWorker(Worker):
    """One encoder on one thread behind a bounded queue.

    A video worker that falls behind drops its oldest queued frame (counted), so lag stays
    bounded: viewers see a skipped frame rather than a growing delay. Audio is never dropped.
    """

    def __init__(self, name: str, encoder: _Encoder, bus: PacketBus, max_queued: int, *, video: bool) -> None:
        super().__init__(f"encoder-{name}")
        self.rendition, self.encoder, self._bus, self._video = name, encoder, bus, video
        self._queue: queue.Queue[tuple[CapturedFrame, float]] = queue.Queue(maxsize=max_queued)
        self.frames_encoded = 0
        self.lag = 0.0

    def submit(self, captured: CapturedFrame, seconds: float) -> None:
        while True:
            try:
                self._queue.put_nowait((captured, seconds))
                return
            except queue.Full:
                if not self._video:
                    self._queue.get()  # audio queue full means the process is stalling: keep the newest
                    continue
                try:
                    self._queue.get_nowait()
                    telemetry.counter("encoder_frames_dropped", self.rendition).inc()
                except queue.Empty:
                    pass

    def run(self) -> None:
        frames = telemetry.counter("encoder_frames", self.rendition) if self._video else None
        encode_seconds = telemetry.histogram("encode_seconds", self.rendition) if self._video else None
        lag = telemetry.gauge("encoder_lag", self.rendition) if self._video else None
        while not self.stopping.is_set():
            try:
                captured, seconds = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            started = time.perf_counter()
            packets = self.encoder.encode(captured, seconds)
            if self._video:
                encode_seconds.observe(time.perf_counter() - started)
                frames.inc()
                self.lag = max(0.0, time.time() - captured.wallclock)
                lag.set(self.lag)
                self.frames_encoded += 1
            self._bus.publish_threadsafe(packets)


class Ladder:
    """The HLS renditions and AAC audio on `bus`; with `webrtc` settings, one more rendition
    (Constrained Baseline H.264) and Opus audio for WebRTC viewers, on their own `webrtc_bus`."""

    def __init__(self, renditions: tuple[Rendition, ...], fps: int, keyframe_interval: float,
                 audio: AudioSettings, bus: PacketBus, *, webrtc: VideoSettings | None = None,
                 webrtc_bus: PacketBus | None = None) -> None:
        self.video_encoders = [
            VideoEncoder(VideoSettings(r.name, r.width, r.height, fps, r.bitrate, keyframe_interval))
            for r in renditions
        ]
        self.audio_encoder = AudioEncoder(audio)
        self.workers = [
            EncoderWorker(e.settings.rendition, e, bus, max_queued=max(2, round(MAX_BACKLOG_SECONDS * fps)), video=True)
            for e in self.video_encoders
        ]
        self._audio_worker = EncoderWorker("audio", self.audio_encoder, bus, max_queued=4 * fps, video=False)
        self.webrtc_encoder: VideoEncoder | None = None
        self._webrtc_workers: list[EncoderWorker] = []
        if webrtc is not None:
            assert webrtc_bus is not None, "the WebRTC rendition publishes on its own bus"
            self.webrtc_encoder = VideoEncoder(webrtc)
            self._webrtc_workers = [
                EncoderWorker(webrtc.rendition, self.webrtc_encoder, webrtc_bus,
                              max_queued=max(2, round(MAX_BACKLOG_SECONDS * fps)), video=True),
                EncoderWorker("opus", OpusEncoder(audio), webrtc_bus, max_queued=4 * fps, video=False),
            ]
        self._origin: float | None = None

    @property
    def all_workers(self) -> list[EncoderWorker]:
        return [*self.workers, self._audio_worker, *self._webrtc_workers]

    def submit(self, captured: CapturedFrame) -> None:
        """Called on the program thread for every frame of the program output."""
        if self._origin is None:
            self._origin = captured.wallclock
        seconds = captured.wallclock - self._origin
        if captured.is_video:
            for worker in self.workers:
                worker.submit(captured, seconds)
            if self._webrtc_workers:
                self._webrtc_workers[0].submit(captured, seconds)
        else:
            self._audio_worker.submit(captured, seconds)
            if self._webrtc_workers:
                self._webrtc_workers[1].submit(captured, seconds)
