"""Real encoded media for the stream tests: the product's encoders fed by FFmpeg's lavfi."""

from __future__ import annotations

from fractions import Fraction

import av

from stream.encoder import AudioEncoder, AudioSettings, VideoEncoder, VideoSettings
from stream.packet import EncodedPacket
from stream.source import CapturedFrame

WIDTH, HEIGHT, FPS = 320, 180, 30


def encode_lavfi(seconds: float, skip_frames: frozenset[int] = frozenset()) -> tuple[VideoEncoder, AudioEncoder, list[EncodedPacket]]:
    """Encode `seconds` of test pattern + tone unpaced; `skip_frames` simulates dropped frames."""
    video = VideoEncoder(VideoSettings("180p", WIDTH, HEIGHT, FPS, 500_000, keyframe_interval=1.0))
    audio = AudioEncoder(AudioSettings())
    graph = f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS},format=yuv420p[out0];sine=frequency=1000:sample_rate=48000[out1]"
    packets: list[EncodedPacket] = []
    video_index = 0
    with av.open(graph, format="lavfi") as container:
        for frame in container.decode(*container.streams):
            at = float(frame.pts * frame.time_base)
            if at >= seconds:
                break
            captured = CapturedFrame(frame, 1_700_000_000 + at)
            if isinstance(frame, av.VideoFrame):
                video_index += 1
                if video_index - 1 in skip_frames:
                    continue
                packets += video.encode(captured, at)
            else:
                packets += audio.encode(captured, at)
    return video, audio, packets


def seconds(packet: EncodedPacket) -> Fraction:
    return packet.pts * packet.time_base
