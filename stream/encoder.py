"""Encoders: H.264 (libx264) for a video rendition, AAC for the program audio, Opus for WebRTC.

They run on the ladder's worker threads (PyAV releases the GIL while encoding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import av
import av.video.reformatter
from av.codec.context import Flags
from av.video.frame import PictureType

from stream.codecs.aac import AudioSpecificConfig
from stream.codecs.h264 import ParameterSets
from stream.packet import EncodedPacket
from stream.source import CapturedFrame

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
    profile: str | None = None  # e.g. "baseline" for WebRTC (Constrained Baseline: no B-frames, no CABAC)

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
    options = {
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
    if settings.profile:
        options["profile"] = settings.profile
    return options


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
        # Renditions scale the same program frame on their own threads: each needs its own
        # scaler (PyAV caches one per frame, which must not be shared across threads), and one
        # thread per scaler is enough since the renditions already run in parallel.
        self._scaler = av.video.reformatter.VideoReformatter()
        self._last_boundary = -1
        self._frame_duration = round(1 / (settings.fps * VIDEO_TIME_BASE))
        self._keyframe_requested = False
        self.keyframes_forced = 0  # on request, besides the boundaries

    def request_keyframe(self) -> None:
        """Make the next frame an IDR (any thread: a plain flag, read once per frame)."""
        self._keyframe_requested = True

    def encode(self, captured: CapturedFrame, frame_seconds: float) -> list[EncodedPacket]:
        frame = captured.frame
        if frame.width != self.settings.width or frame.height != self.settings.height or frame.format.name != "yuv420p":
            frame = self._scaler.reformat(frame, self.settings.width, self.settings.height, "yuv420p",
                                          interpolation="BICUBIC", threads=1)
        boundary = math.floor(frame_seconds / self.settings.keyframe_interval + 1e-6)
        # Sources may tag every frame as I (lavfi, decoders): only boundaries become keyframes.
        keyframe = boundary != self._last_boundary
        if self._keyframe_requested:
            self._keyframe_requested = False
            self.keyframes_forced += not keyframe
            keyframe = True
        frame.pict_type = PictureType.I if keyframe else PictureType.NONE
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


class OpusEncoder:
    """The program audio as Opus for WebRTC: 20 ms packets at 48 kHz, timestamps on the program clock."""

    FRAME_SAMPLES = 960  # 20 ms at 48 kHz: what browsers send and expect

    def __init__(self, settings: AudioSettings, bitrate: int = 64_000) -> None:
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate, ctx.layout, ctx.format = 48000, "stereo", "s16"
        ctx.bit_rate = bitrate
        ctx.time_base = Fraction(1, 48000)
        ctx.options = {"application": "lowdelay", "frame_duration": "20"}
        ctx.open()
        self._ctx = ctx
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000, frame_size=self.FRAME_SAMPLES)
        self._next_pts: int | None = None

    def encode(self, captured: CapturedFrame, frame_seconds: float) -> list[EncodedPacket]:
        packets = []
        if self._next_pts is None:
            self._next_pts = round(frame_seconds * 48000)
        for frame in self._resampler.resample(captured.frame):
            frame.pts = self._next_pts
            frame.time_base = self._ctx.time_base
            self._next_pts += frame.samples
            packets.extend(self._ctx.encode(frame))
        return [
            EncodedPacket(kind="audio", rendition="opus", data=bytes(p), pts=p.pts, dts=p.dts,
                          duration=p.duration or self.FRAME_SAMPLES, time_base=self._ctx.time_base,
                          keyframe=True, wallclock=captured.wallclock)
            for p in packets
        ]
