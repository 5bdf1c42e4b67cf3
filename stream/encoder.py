"""Encode once: one H.264 encoder per rendition and one AAC encoder, shared by every consumer.

Everything here runs on worker threads (PyAV releases the GIL while encoding); packets reach
the event loop through the packet bus.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction

import av
from av.codec.context import Flags
from av.video.frame import PictureType

from launchkit import metrics
from stream.bus import PacketBus
from stream.codecs.aac import AudioSpecificConfig
from stream.codecs.h264 import ParameterSets
from stream.packet import EncodedPacket
from stream.source import CapturedFrame

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = Fraction(1, 90000)


@dataclass(frozen=True, slots=True)
class VideoSettings:
    rendition: str
    width: int
    height: int
    fps: int
    bitrate: int
    keyframe_interval: float
    preset: str = "veryfast"

    @property
    def gop(self) -> int:
        return round(self.fps * self.keyframe_interval)

    @property
    def vbv_buffer_bits(self) -> int:
        # Half a segment: keyframes get room to breathe while a segment's size stays bounded.
        return round(self.bitrate * self.keyframe_interval / 2)

    def peak_bitrate(self, segment_duration: float) -> int:
        """Upper bound on any segment's bitrate: the VBV model allows rate·T + buffer bits per T."""
        return round(self.bitrate + self.vbv_buffer_bits / segment_duration)


@dataclass(frozen=True, slots=True)
class AudioSettings:
    sample_rate: int = 48000
    channels: int = 2
    bitrate: int = 128_000


def x264_options(settings: VideoSettings) -> dict[str, str]:
    """The libx264 settings, shared with the side-by-side benchmark so both encode alike."""
    return {
        "preset": settings.preset,
        "tune": "zerolatency",
        "forced-idr": "1",
        # Keyframes are forced at segment boundaries by timestamp (so renditions and segments
        # stay aligned even if a frame is dropped); x264's own cadence is only a safety net.
        # repeat-headers puts SPS/PPS before every IDR for late joiners (WebRTC, MPEG-TS).
        "x264-params": (
            f"keyint={2 * settings.gop}:min-keyint={settings.gop}:scenecut=0:bframes=0:"
            f"repeat-headers=1:vbv-maxrate={settings.bitrate // 1000}:vbv-bufsize={settings.vbv_buffer_bits // 1000}"
        ),
    }


class VideoEncoder:
    def __init__(self, settings: VideoSettings) -> None:
        self.settings = settings
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height, ctx.pix_fmt = settings.width, settings.height, "yuv420p"
        ctx.time_base = VIDEO_TIME_BASE
        ctx.framerate = Fraction(settings.fps)
        ctx.gop_size = settings.gop
        ctx.max_b_frames = 0
        ctx.bit_rate = settings.bitrate
        ctx.options = x264_options(settings)
        ctx.flags |= Flags.global_header
        ctx.open()
        self._ctx = ctx
        self.parameter_sets = ParameterSets.from_annexb(ctx.extradata or b"")
        self._last_boundary = -1
        self._frame_duration = round(1 / (settings.fps * VIDEO_TIME_BASE))

    def encode(self, captured: CapturedFrame, frame_seconds: float) -> list[EncodedPacket]:
        frame = captured.frame
        if frame.width != self.settings.width or frame.height != self.settings.height or frame.format.name != "yuv420p":
            frame = frame.reformat(self.settings.width, self.settings.height, "yuv420p")
        boundary = math.floor(frame_seconds / self.settings.keyframe_interval + 1e-6)
        # Sources may tag every frame as I (lavfi, decoders): only boundaries become keyframes.
        frame.pict_type = PictureType.I if boundary != self._last_boundary else PictureType.NONE
        self._last_boundary = boundary
        frame.pts = round(frame_seconds / VIDEO_TIME_BASE)
        frame.time_base = VIDEO_TIME_BASE
        return [self._packet(p, captured.wallclock) for p in self._ctx.encode(frame)]

    def _packet(self, packet: av.Packet, wallclock: float) -> EncodedPacket:
        return EncodedPacket(
            kind="video", rendition=self.settings.rendition, data=bytes(packet),
            pts=packet.pts, dts=packet.dts, duration=packet.duration or self._frame_duration,
            time_base=VIDEO_TIME_BASE, keyframe=packet.is_keyframe, wallclock=wallclock,
        )


class AudioEncoder:
    def __init__(self, settings: AudioSettings) -> None:
        self.settings = settings
        ctx = av.CodecContext.create("aac", "w")
        ctx.sample_rate, ctx.layout, ctx.format = settings.sample_rate, "stereo" if settings.channels == 2 else "mono", "fltp"
        ctx.bit_rate = settings.bitrate
        ctx.time_base = Fraction(1, settings.sample_rate)
        ctx.flags |= Flags.global_header
        ctx.open()
        self._ctx = ctx
        self.config = AudioSpecificConfig.parse(ctx.extradata or b"")
        self._resampler = av.AudioResampler(format="fltp", layout=ctx.layout, rate=settings.sample_rate, frame_size=ctx.frame_size)
        self._next_pts: int | None = None

    def encode(self, captured: CapturedFrame, frame_seconds: float) -> list[EncodedPacket]:
        packets = []
        if self._next_pts is None:
            self._next_pts = round(frame_seconds * self.settings.sample_rate)
        for frame in self._resampler.resample(captured.frame):
            frame.pts = self._next_pts
            frame.time_base = self._ctx.time_base
            self._next_pts += frame.samples
            packets.extend(self._ctx.encode(frame))
        return [self._packet(p, captured.wallclock) for p in packets]

    def _packet(self, packet: av.Packet, wallclock: float) -> EncodedPacket:
        return EncodedPacket(
            kind="audio", rendition="audio", data=bytes(packet),
            pts=packet.pts, dts=packet.dts, duration=packet.duration or 1024,
            time_base=self._ctx.time_base, keyframe=True, wallclock=wallclock,
        )


class EncoderWorker:
    """Runs the encoders of one pipeline on a thread, fed by a bounded frame queue.

    When encoding falls behind, the queue drops the oldest video frame (audio only if no video is
    queued) so lag stays bounded: viewers see a skipped frame rather than a growing delay.
    """

    def __init__(self, video: VideoEncoder, audio: AudioEncoder, bus: PacketBus, max_queued_frames: int) -> None:
        self.video, self.audio, self._bus = video, audio, bus
        self._queue: queue.Queue[CapturedFrame] = queue.Queue(maxsize=max_queued_frames)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"encoder-{video.settings.rendition}")
        self._origin: float | None = None
        self.frames_encoded = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, captured: CapturedFrame) -> None:
        """Called on the source thread."""
        while True:
            try:
                self._queue.put_nowait(captured)
                return
            except queue.Full:
                self._drop_oldest_video()

    def _drop_oldest_video(self) -> None:
        kept = []
        dropped = False
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if not dropped and item.is_video:
                dropped = True
                metrics.ENCODER_FRAMES_DROPPED.labels(self.video.settings.rendition).inc()
                continue
            kept.append(item)
        if not dropped and kept:
            kept.pop(0)
        for item in kept:
            self._queue.put_nowait(item)

    def _run(self) -> None:
        rendition = self.video.settings.rendition
        frames_counter = metrics.ENCODER_FRAMES.labels(rendition)
        encode_seconds = metrics.ENCODE_SECONDS.labels(rendition)
        lag = metrics.ENCODER_LAG.labels(rendition)
        while not self._stop.is_set():
            try:
                captured = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if self._origin is None:
                self._origin = captured.wallclock
            # Media time is derived from the capture clock, so every encoder of the pipeline
            # (and every rendition later) agrees on timestamps without sharing state.
            seconds = captured.wallclock - self._origin
            if captured.is_video:
                started = time.perf_counter()
                packets = self.video.encode(captured, seconds)
                encode_seconds.observe(time.perf_counter() - started)
                frames_counter.inc()
                self.frames_encoded += 1
                lag.set(max(0.0, time.time() - captured.wallclock))
            else:
                packets = self.audio.encode(captured, seconds)
            self._bus.publish_threadsafe(packets)
