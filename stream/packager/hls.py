"""HLS packager: cuts one rendition's bus packets into CMAF segments at keyframes and keeps a
sliding window of them in memory, with playlists rendered once per new segment (not per request).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

from launchkit import metrics
from stream.codecs.h264 import to_length_prefixed
from stream.packager import cmaf, playlist
from stream.packet import EncodedPacket

log = logging.getLogger(__name__)

VIDEO_TRACK_ID, AUDIO_TRACK_ID = 1, 2
# Segments stay fetchable this many segments after leaving the playlist, for players that
# loaded the previous playlist version just before the window slid.
RETAINED_AFTER_WINDOW = 3


@dataclass(frozen=True, slots=True)
class Segment:
    sequence: int
    duration: float
    program_date_time: float
    data: bytes

    @property
    def uri(self) -> str:
        return f"{self.sequence}.m4s"


@dataclass(frozen=True, slots=True)
class RenditionInfo:
    name: str
    width: int
    height: int
    fps: int
    bandwidth: int
    average_bandwidth: int


class RenditionPackager:
    def __init__(self, info: RenditionInfo, video: cmaf.VideoTrack, audio: cmaf.AudioTrack,
                 segment_duration: float, window: int) -> None:
        self.info = info
        self._video_track, self._audio_track = video, audio
        self.init = cmaf.init_segment([video, audio])
        self.init_uri = f"init-{_short_hash(self.init)}.mp4"
        self.codecs = f"{video.codec_string},{audio.codec_string}"
        self.segment_duration = segment_duration
        self._window = window
        self._segments: deque[Segment] = deque(maxlen=window + RETAINED_AFTER_WINDOW)
        self._by_uri: dict[str, Segment] = {}
        self._pending_video: list[EncodedPacket] = []
        self._pending_audio: list[EncodedPacket] = []
        self._started_at: Fraction | None = None
        # Media sequence numbers follow the wall clock, so a restarted origin never reuses a
        # number (and a URI) that a CDN may still cache from the previous run.
        self._next_sequence: int | None = None
        self.playlist: bytes | None = None
        self.last_segment_at: float | None = None
        # Called on the event loop for every new segment (the recorder listens here).
        self.segment_listeners: list[Callable[[RenditionPackager, Segment], None]] = []
        self._segments_counter = metrics.HLS_SEGMENTS.labels(info.name)

    @property
    def segments(self) -> list[Segment]:
        return list(self._segments)[-self._window :]

    def segment(self, uri: str) -> Segment | None:
        return self._by_uri.get(uri)

    def on_packet(self, packet: EncodedPacket) -> None:
        if packet.kind == "video":
            if packet.rendition != self.info.name:
                return
            if packet.keyframe and self._pending_video:
                self._cut(packet)
            if self._pending_video or packet.keyframe:
                self._pending_video.append(packet)
                if self._started_at is None:
                    self._started_at = packet.dts * packet.time_base
        elif self._started_at is not None and packet.dts * packet.time_base >= self._started_at:
            # Audio older than the first keyframe (e.g. AAC priming) belongs to no segment.
            self._pending_audio.append(packet)

    def _cut(self, next_keyframe: EncodedPacket) -> None:
        video, self._pending_video = self._pending_video, []
        boundary = next_keyframe.dts * next_keyframe.time_base
        audio = [p for p in self._pending_audio if p.dts * p.time_base < boundary]
        self._pending_audio = self._pending_audio[len(audio):]
        first = video[0]
        if self._next_sequence is None:
            self._next_sequence = math.floor(first.wallclock / self.segment_duration)
        runs = [
            cmaf.TrackRun(VIDEO_TRACK_ID, first.dts, _samples(video, next_keyframe.dts, video_payload=True)),
            cmaf.TrackRun(AUDIO_TRACK_ID, audio[0].dts if audio else 0, _samples(audio, None, video_payload=False)),
        ]
        segment = Segment(
            sequence=self._next_sequence,
            duration=float((next_keyframe.dts - first.dts) * first.time_base),
            program_date_time=first.wallclock,
            data=cmaf.fragment(self._next_sequence, runs),
        )
        self._next_sequence += 1
        self._append(segment)

    def _append(self, segment: Segment) -> None:
        if len(self._segments) == self._segments.maxlen:
            self._by_uri.pop(self._segments[0].uri, None)
        if not self._segments:
            log.info("%s: first segment published, the stream is live", self.info.name)
        self._segments.append(segment)
        self._by_uri[segment.uri] = segment
        self.playlist = playlist.media_playlist(self.init_uri, self.segments, self.segment_duration).encode()
        self.last_segment_at = time.monotonic()
        self._segments_counter.inc()
        for listener in self.segment_listeners:
            listener(self, segment)


def _samples(packets: list[EncodedPacket], end_dts: int | None, *, video_payload: bool) -> list[cmaf.Sample]:
    samples = []
    for index, packet in enumerate(packets):
        following = packets[index + 1].dts if index + 1 < len(packets) else end_dts
        duration = following - packet.dts if following is not None else packet.duration
        data = to_length_prefixed(packet.data) if video_payload else packet.data
        samples.append(cmaf.Sample(data, duration, packet.keyframe, packet.pts - packet.dts))
    return samples


def _short_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


class HlsPackager:
    """All renditions of one stream, plus liveness and the multivariant playlist."""

    def __init__(self, renditions: list[RenditionPackager]) -> None:
        self.renditions = {r.info.name: r for r in renditions}
        self.multivariant = playlist.multivariant_playlist(renditions).encode()

    def on_packet(self, packet: EncodedPacket) -> None:
        for rendition in self.renditions.values():
            rendition.on_packet(packet)

    def is_live(self) -> bool:
        """Fresh segments within three segment durations on every rendition."""
        now = time.monotonic()
        return all(
            r.last_segment_at is not None and now - r.last_segment_at < 3 * r.segment_duration
            for r in self.renditions.values()
        )
