"""HLS / LL-HLS packager: cuts one rendition's bus packets into CMAF chunks ("parts") every part
duration and at every keyframe, joins each keyframe-to-keyframe run of parts into a segment, and
keeps a sliding window of both in memory. The media playlist is rendered once per new part (not
per request), so serving it, blocked or not, is a dictionary lookup.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Callable

from stream import telemetry
from stream.codecs.h264 import to_length_prefixed
from stream.packager import cmaf, playlist
from stream.packet import EncodedPacket

log = logging.getLogger(__name__)

VIDEO_TRACK_ID, AUDIO_TRACK_ID = 1, 2
# Segments stay fetchable this many segments after leaving the playlist, for players that
# loaded the previous playlist version just before the window slid.
RETAINED_AFTER_WINDOW = 3
# Parts of this long or less make the default: short enough for ~2 s glass-to-glass with a
# PART-HOLD-BACK of three parts, long enough that part overhead (moof, requests) stays small.
DEFAULT_PART_DURATION = 0.5
# §6.2.2: a part must stay downloadable for 3 target durations after its EXT-X-PART tag leaves the
# playlist, which happens once it is 3 target durations from the end: 6 in all.
PART_AVAILABILITY_TARGET_DURATIONS = 6


def part_uri(sequence: int, index: int) -> str:
    return f"{sequence}.{index}.m4s"


@dataclass(frozen=True, slots=True)
class Part:
    """A Partial Segment: one CMAF chunk (`moof`+`mdat`) of its parent segment."""

    sequence: int  # Media Sequence Number of the parent segment
    index: int  # Part Index within the parent segment, from 0
    duration: float
    independent: bool  # starts with a keyframe
    data: bytes | memoryview

    @property
    def uri(self) -> str:
        return part_uri(self.sequence, self.index)

    @property
    def position(self) -> tuple[int, int]:
        """Orders parts across segments: (Media Sequence Number, Part Index)."""
        return self.sequence, self.index


@dataclass(frozen=True, slots=True)
class Segment:
    sequence: int
    duration: float
    program_date_time: float
    data: bytes
    parts: tuple[Part, ...] = ()

    @property
    def uri(self) -> str:
        return f"{self.sequence}.m4s"


@dataclass(slots=True)
class OpenSegment:
    """The segment in progress: its parts are published, the segment itself is not yet."""

    sequence: int
    program_date_time: float
    first_dts: int
    parts: list[Part] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RenditionInfo:
    name: str
    width: int
    height: int
    fps: int
    bandwidth: int
    average_bandwidth: int


def part_frames(part_duration: float, fps: int, segment_duration: float) -> int:
    """Frames per part; ValueError unless parts hold whole frames and tile the segment exactly."""
    frames = part_duration * fps
    if not math.isfinite(frames) or frames < 1 - 1e-6 or abs(frames - round(frames)) > 1e-6:
        raise ValueError(f"part duration {part_duration:g} s × {fps} fps = {frames:g} frames: "
                         "a part must hold a whole number of frames")
    segment_frames = round(segment_duration * fps)
    if segment_frames % round(frames):
        raise ValueError(f"segment duration {segment_duration:g} s is not a whole multiple of the "
                         f"part duration {part_duration:g} s")
    return round(frames)


def default_part_duration(fps: int, segment_duration: float) -> float:
    """The longest part of at most DEFAULT_PART_DURATION (one frame at least) that tiles the segment."""
    segment_frames = round(segment_duration * fps)
    limit = max(1.0, DEFAULT_PART_DURATION * fps + 1e-6)
    return max(f for f in range(1, segment_frames + 1) if segment_frames % f == 0 and f <= limit) / fps


class RenditionPackager:
    def __init__(self, info: RenditionInfo, video: cmaf.VideoTrack, audio: cmaf.AudioTrack,
                 segment_duration: float, window: int, part_duration: float | None = None) -> None:
        self.info = info
        self._video_track, self._audio_track = video, audio
        self.init = cmaf.init_segment([video, audio])
        self.init_uri = f"init-{_short_hash(self.init)}.mp4"
        self.codecs = f"{video.codec_string},{audio.codec_string}"
        self.segment_duration = segment_duration
        if part_duration is None:
            part_duration = default_part_duration(info.fps, segment_duration)
        self._part_frames = part_frames(part_duration, info.fps, segment_duration)
        self.part_duration = self._part_frames / info.fps
        self.parts_per_segment = round(segment_duration * info.fps) // self._part_frames
        self._window = window
        self._segments: deque[Segment] = deque(maxlen=window + RETAINED_AFTER_WINDOW)
        self._by_uri: dict[str, Segment] = {}
        self._parts: dict[str, Part] = {}
        # The parts of the last complete segments, fetchable for PART_AVAILABILITY_TARGET_DURATIONS
        # (a segment leaves this window the moment a later one completes, hence the ceil).
        self._parted: deque[tuple[Part, ...]] = deque(maxlen=math.ceil(
            PART_AVAILABILITY_TARGET_DURATIONS * math.ceil(segment_duration) / segment_duration))
        self._open: OpenSegment | None = None
        self._pending_video: list[EncodedPacket] = []
        self._pending_audio: list[EncodedPacket] = []
        self._pending_slot = 0
        self._started_at: Fraction | None = None
        # Media sequence numbers follow the wall clock, so a restarted origin never reuses a
        # number (and a URI) that a CDN may still cache from the previous run.
        self._next_sequence: int | None = None
        self._fragments = 0
        self.playlist: bytes | None = None
        self.last_segment_at: float | None = None
        self.last_part: Part | None = None
        # Every other rendition of the stream, for EXT-X-RENDITION-REPORT (set by HlsPackager).
        self.peers: tuple[RenditionPackager, ...] = ()
        # Called on the event loop for every new segment (the recorder listens here) and for
        # every new part, once the playlist lists it (blocked requests wake up here).
        self.segment_listeners: list[Callable[[RenditionPackager, Segment], None]] = []
        self.part_listeners: list[Callable[[RenditionPackager, Part], None]] = []
        self._segments_counter = telemetry.counter("hls_segments", info.name)

    @property
    def segments(self) -> list[Segment]:
        return list(self._segments)[-self._window :]

    @property
    def target_duration(self) -> int:
        return playlist.target_duration(self._segments, self.segment_duration)

    @property
    def last_sequence(self) -> int | None:
        """Media Sequence Number of the last complete segment."""
        return self._segments[-1].sequence if self._segments else None

    def segment(self, uri: str) -> Segment | None:
        return self._by_uri.get(uri)

    def part(self, uri: str) -> Part | None:
        return self._parts.get(uri)

    def has_segment(self, sequence: int) -> bool:
        """A complete segment numbered `sequence` or later is published."""
        last = self.last_sequence
        return last is not None and last >= sequence

    def has_part(self, sequence: int, index: int) -> bool:
        """Part `index` of segment `sequence`, or a later part, is published.

        Comparing positions also applies §6.2.5.2's rule that an index past a segment's final part
        means part 0 of the next segment: that is the first part positioned after it.
        """
        return self.last_part is not None and self.last_part.position >= (sequence, index)

    def parts_ahead(self, sequence: int, index: int) -> int:
        """How many parts after the last published one `(sequence, index)` comes, counting
        nominal parts per segment (≤ 0: it is published, expired, or never will be)."""
        last_sequence, last_index = self.last_part.position if self.last_part else (sequence, -1)
        return (sequence - last_sequence) * self.parts_per_segment + index - last_index

    def on_packet(self, packet: EncodedPacket) -> None:
        if packet.kind == "video":
            if packet.rendition != self.info.name:
                return
            if self._started_at is None:
                if not packet.keyframe:
                    return  # the stream starts at a keyframe
                self._started_at = packet.dts * packet.time_base
            # A part ends at the first frame at or past its boundary. Only when the encoder dropped
            # the frame on the boundary does that make it one frame longer than PART-TARGET.
            if self._pending_video and (packet.keyframe or self._slot(packet) > self._pending_slot):
                self._cut(packet)
            if not self._pending_video:
                self._pending_slot = self._slot(packet)
            self._pending_video.append(packet)
        elif self._started_at is not None and packet.dts * packet.time_base >= self._started_at:
            # Audio older than the first keyframe (e.g. AAC priming) belongs to no segment.
            self._pending_audio.append(packet)

    def _slot(self, packet: EncodedPacket) -> int:
        """Which part of the timeline grid the packet falls in (frames are on the 1/fps grid)."""
        return round(packet.dts * packet.time_base * self.info.fps) // self._part_frames

    def _cut(self, next_video: EncodedPacket) -> None:
        """Close the pending part at `next_video`, which starts the next part (and, if it is a
        keyframe, the next segment)."""
        video, self._pending_video = self._pending_video, []
        boundary = next_video.dts * next_video.time_base
        audio = [p for p in self._pending_audio if p.dts * p.time_base < boundary]
        self._pending_audio = self._pending_audio[len(audio):]
        first = video[0]
        if self._open is None:
            if self._next_sequence is None:
                self._next_sequence = math.floor(first.wallclock / self.segment_duration)
            self._open = OpenSegment(self._next_sequence, first.wallclock, first.dts)
            self._next_sequence += 1
        runs = [
            cmaf.TrackRun(VIDEO_TRACK_ID, first.dts, _samples(video, next_video.dts, video_payload=True)),
            cmaf.TrackRun(AUDIO_TRACK_ID, audio[0].dts if audio else 0, _samples(audio, None, video_payload=False)),
        ]
        self._fragments += 1
        part = Part(
            sequence=self._open.sequence, index=len(self._open.parts),
            duration=float((next_video.dts - first.dts) * first.time_base), independent=first.keyframe,
            data=cmaf.fragment(self._fragments, runs),
        )
        self._open.parts.append(part)
        self._parts[part.uri] = part
        self.last_part = part
        if next_video.keyframe:
            self._close_segment(next_video)
        self._render()
        for listener in self.part_listeners:
            listener(self, part)

    def _close_segment(self, next_keyframe: EncodedPacket) -> None:
        opened, self._open = self._open, None
        data = b"".join(part.data for part in opened.parts)
        # The parts become views of the segment's bytes: one copy of the media in memory.
        view, offset, parts = memoryview(data), 0, []
        for part in opened.parts:
            parts.append(replace(part, data=view[offset : offset + len(part.data)]))
            offset += len(part.data)
        self._parts.update((part.uri, part) for part in parts)
        if len(self._parted) == self._parted.maxlen:
            for expired in self._parted[0]:
                self._parts.pop(expired.uri, None)
        self._parted.append(tuple(parts))
        self.last_part = parts[-1]
        self._append(Segment(
            sequence=opened.sequence, duration=float((next_keyframe.dts - opened.first_dts) * next_keyframe.time_base),
            program_date_time=opened.program_date_time, data=data, parts=tuple(parts),
        ))

    def _append(self, segment: Segment) -> None:
        if len(self._segments) == self._segments.maxlen:
            self._by_uri.pop(self._segments[0].uri, None)
        if not self._segments:
            log.info("%s: first segment published, the stream is live", self.info.name)
        self._segments.append(segment)
        self._by_uri[segment.uri] = segment
        self.last_segment_at = time.monotonic()
        self._segments_counter.inc()
        for listener in self.segment_listeners:
            listener(self, segment)

    def preload_hint(self) -> str:
        """URI of the next part: clients request it ahead and the origin answers once it exists."""
        if self._open is not None:
            return part_uri(self._open.sequence, len(self._open.parts))
        return part_uri(self._next_sequence or 0, 0)

    def _render(self) -> None:
        if not self._segments:
            return  # a playlist always starts with a complete segment
        reports = [
            playlist.RenditionReport(f"../{peer.info.name}/index.m3u8", *peer.last_part.position)
            for peer in self.peers if peer.last_part is not None
        ]
        self.playlist = playlist.media_playlist(
            self.init_uri, self.segments, self.segment_duration, part_target=self.part_duration,
            open_segment=self._open, preload_hint=self.preload_hint(), reports=reports,
        ).encode()


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
        for rendition in renditions:
            rendition.peers = tuple(r for r in renditions if r is not rendition)

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
