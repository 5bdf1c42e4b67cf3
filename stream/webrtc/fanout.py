"""Encode-once WebRTC fan-out: the WebRTC rendition's packets, packetized into RTP payloads once,
sent to every WHEP viewer.

The WebRTC rendition (Constrained Baseline H.264 + Opus) is encoded once on its own bus
(`Pipeline.webrtc_bus` at the origin, the upstream feed at an edge). `Fanout` subscribes to that
bus, splits each access unit into RTP payloads once (`RtpFrame`), and offers the same frame
object to every viewer's bounded queue. Each viewer's aiortc `RTCRtpSender` then only numbers,
encrypts (SRTP, per viewer by nature) and sends.

Stock aiortc would packetize per viewer, and it answers a viewer's PLI/FIR by flagging its own
per-viewer encoder. Here `attach_sender` gives each sender the shared packetizer and routes its
keyframe requests to `Fanout.request_keyframe`, which asks the one encoder at most once per
`min_keyframe_interval` (requests in between are merged into one at the end of the interval):
a thousand viewers with loss cost one extra keyframe a second, not a thousand.

A viewer starts at a keyframe. A viewer whose queue holds more than `max_queued_video` frames
(its sender cannot keep up) drops everything queued and waits for the next keyframe, so one slow
viewer neither grows memory nor delays the others.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from aiortc import RTCRtpSender
from aiortc.codecs.h264 import H264Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from stream import telemetry
from stream.bus import PacketBus, Subscription
from stream.packet import EncodedPacket

VIDEO_CLOCK = Fraction(1, 90000)  # RTP clock rates (RFC 6184, RFC 7587)
AUDIO_CLOCK = Fraction(1, 48000)
# Half a second of frames: a sender further behind than this is not going to catch up.
MAX_QUEUED_VIDEO = 15
MAX_QUEUED_AUDIO = 25
MIN_KEYFRAME_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class RtpFrame:
    """One access unit as RTP payloads (shared read-only by every viewer) and its RTP timestamp."""

    kind: str  # "video" | "audio"
    payloads: tuple[bytes, ...]
    timestamp: int  # media clock units; each sender adds its own random origin
    keyframe: bool
    size: int  # payload bytes


def packetize(packet: EncodedPacket) -> RtpFrame:
    if packet.kind == "video":
        payloads = tuple(H264Encoder._packetize(H264Encoder._split_bitstream(packet.data)))
        clock = VIDEO_CLOCK
    else:
        payloads = (packet.data,)
        clock = AUDIO_CLOCK
    timestamp = int(packet.pts * packet.time_base / clock)
    return RtpFrame(packet.kind, payloads, timestamp, packet.keyframe, sum(map(len, payloads)))


class SharedPacketizer:
    """Stands in for aiortc's per-sender encoder: the payloads are already made."""

    def pack(self, frame: RtpFrame) -> tuple[tuple[bytes, ...], int]:
        return frame.payloads, frame.timestamp


SHARED_PACKETIZER = SharedPacketizer()


class FanoutTrack(MediaStreamTrack):
    """A viewer's video or audio track: yields the shared `RtpFrame`s queued for it."""

    def __init__(self, viewer: Viewer, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._viewer = viewer

    async def recv(self) -> RtpFrame:  # type: ignore[override]  # aiortc packs non-Frame data as is
        if self.readyState != "live":
            raise MediaStreamError
        return await self._viewer.next(self.kind)

    def stop(self) -> None:
        super().stop()
        self._viewer.close()


class Viewer:
    """One WHEP viewer's queues. `offer` runs on the event loop for every frame of the rendition."""

    def __init__(self, fanout: Fanout) -> None:
        self._fanout = fanout
        self._queues: dict[str, deque[RtpFrame]] = {"video": deque(), "audio": deque()}
        self._ready = {"video": asyncio.Event(), "audio": asyncio.Event()}
        # Handle lookups are a dict search each: done once per viewer, not once per frame.
        self._frames_sent = {kind: telemetry.counter("webrtc_frames_sent", kind) for kind in self._queues}
        self._bytes_sent = telemetry.counter("webrtc_bytes_sent")
        self._frames_dropped = telemetry.counter("webrtc_frames_dropped")
        self.waiting_for_keyframe = True
        self.started = False  # had a keyframe: frames skipped from now on are losses, not a late join
        self.closed = False
        self.frames_sent = 0
        self.frames_dropped = 0
        self.bytes_sent = 0
        self.video = FanoutTrack(self, "video")
        self.audio = FanoutTrack(self, "audio")

    def offer(self, frame: RtpFrame) -> None:
        if frame.kind == "video":
            self._offer_video(frame)
        elif not self.waiting_for_keyframe:  # audio starts with the picture
            queue = self._queues["audio"]
            if len(queue) >= MAX_QUEUED_AUDIO:
                queue.popleft()
            queue.append(frame)
            self._ready["audio"].set()

    def _offer_video(self, frame: RtpFrame) -> None:
        queue = self._queues["video"]
        if self.waiting_for_keyframe and not frame.keyframe:
            if self.started:
                self._drop(1)
            return
        if len(queue) >= MAX_QUEUED_VIDEO:
            self._drop(len(queue))
            queue.clear()
            self._queues["audio"].clear()
            self.waiting_for_keyframe = True
            self._fanout.request_keyframe("slow viewer")
            if not frame.keyframe:
                self._drop(1)
                return
        self.waiting_for_keyframe = False
        self.started = True
        queue.append(frame)
        self._ready["video"].set()

    def _drop(self, frames: int) -> None:
        self.frames_dropped += frames
        self._frames_dropped.inc(frames)

    async def next(self, kind: str) -> RtpFrame:
        queue, ready = self._queues[kind], self._ready[kind]
        while not queue:
            if self.closed:
                raise MediaStreamError
            ready.clear()
            await ready.wait()
        frame = queue.popleft()
        if kind == "video":
            self.frames_sent += 1
        self.bytes_sent += frame.size
        self._frames_sent[kind].inc()
        self._bytes_sent.inc(frame.size)
        return frame

    def queued(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for event in self._ready.values():
            event.set()  # wake a pending recv() so its sender stops
        self._fanout.leave(self)


class Fanout:
    """Every WHEP viewer of one process, fed from one WebRTC rendition bus."""

    def __init__(self, bus: PacketBus, keyframe_source: Callable[[], None], *,
                 min_keyframe_interval: float = MIN_KEYFRAME_INTERVAL) -> None:
        self._bus = bus
        self._keyframe_source = keyframe_source
        self._min_interval = min_keyframe_interval
        self._viewers: set[Viewer] = set()
        self._subscription: Subscription | None = None
        self._last_keyframe_request = -float("inf")
        self._pending_request: asyncio.TimerHandle | None = None
        self.keyframes_asked = 0
        self.keyframes_requested = 0
        self._viewers_gauge = telemetry.gauge("webrtc_viewers")
        self._keyframes_requested = telemetry.counter("webrtc_keyframes_requested")

    def start(self) -> None:
        self._subscription = self._bus.subscribe(self.on_packet)

    def stop(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        if self._pending_request is not None:
            self._pending_request.cancel()
        for viewer in list(self._viewers):
            viewer.close()

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def on_packet(self, packet: EncodedPacket) -> None:
        if not self._viewers:
            return  # nobody watches: no packetizing on every frame of an idle server
        frame = packetize(packet)
        for viewer in self._viewers:
            viewer.offer(frame)

    def join(self) -> Viewer:
        viewer = Viewer(self)
        self._viewers.add(viewer)
        self._viewers_gauge.set(len(self._viewers))
        self.request_keyframe("new viewer")
        return viewer

    def leave(self, viewer: Viewer) -> None:
        self._viewers.discard(viewer)
        self._viewers_gauge.set(len(self._viewers))

    def attach_sender(self, sender: RTCRtpSender) -> None:
        """Before the sender starts: our payloads instead of its encoder, our keyframe policy for its PLIs."""
        # aiortc creates its per-sender encoder lazily, only when this private slot is empty, and
        # calls `_send_keyframe` for every PLI/FIR: the two places to hook without forking it.
        sender._RTCRtpSender__encoder = SHARED_PACKETIZER  # type: ignore[attr-defined]
        sender._send_keyframe = lambda: self.request_keyframe("picture loss")  # type: ignore[method-assign]

    def request_keyframe(self, reason: str) -> None:
        """Ask the encoder for a keyframe now, or at the end of the current interval (merged)."""
        self.keyframes_asked += 1
        telemetry.counter("webrtc_keyframe_requests", reason).inc()
        if self._pending_request is not None:
            return
        wait = self._last_keyframe_request + self._min_interval - time.monotonic()
        if wait <= 0:
            self._ask_encoder()
        else:
            self._pending_request = asyncio.get_running_loop().call_later(wait, self._ask_encoder)

    def _ask_encoder(self) -> None:
        self._pending_request = None
        self._last_keyframe_request = time.monotonic()
        self.keyframes_requested += 1
        self._keyframes_requested.inc()
        self._keyframe_source()
