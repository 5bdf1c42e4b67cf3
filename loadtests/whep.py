"""Simulated WHEP viewers: real WebRTC sessions (aiortc: ICE, DTLS-SRTP, RTP, RTCP, NACK, PLI)
that receive the stream and count what arrives, without decoding it.

Decoding 30 H.264 streams would measure this machine's decoder, not the server. So in the load
generator's process only, `install_counting_decoders()` replaces aiortc's decoder factory with
one that turns each complete frame the jitter buffer assembles into a `CountedFrame` (RTP
timestamp, size, keyframe or not, arrival time). Everything up to the decoder is stock aiortc,
so lost packets, late frames and keyframe waits show up exactly as a browser would see them.

Each viewer offers VP8 before H.264 (aiortc's default order, like browsers) and must be answered
with H.264. Network: pass the ICE settings the test uses (loopback only, no STUN server).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin

import aiohttp
import aiortc.rtcrtpreceiver
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from launchkit.webrtc.ice import IceSettings, apply_host_addresses

VIDEO_CLOCK = 90000


@dataclass(frozen=True, slots=True)
class CountedFrame:
    timestamp: int  # RTP timestamp (sender's random origin + media time)
    size: int
    keyframe: bool
    arrived: float  # time.monotonic()


class CountingDecoder:
    """Stands in for aiortc's decoder: one CountedFrame per assembled frame, nothing decoded."""

    def __init__(self, mime_type: str) -> None:
        self._video = mime_type.lower().startswith("video/")

    def decode(self, encoded_frame) -> list[CountedFrame]:  # aiortc's JitterFrame: data, timestamp
        data = encoded_frame.data
        keyframe = self._video and _has_idr(data)
        return [CountedFrame(encoded_frame.timestamp, len(data), keyframe, time.monotonic())]


def _has_idr(annexb: bytes) -> bool:
    """aiortc's H.264 depayloader emits Annex B: look for an IDR NAL unit (type 5) after a start code."""
    index = annexb.find(b"\x00\x00\x01")
    while index != -1:
        if index + 3 < len(annexb) and annexb[index + 3] & 0x1F == 5:
            return True
        index = annexb.find(b"\x00\x00\x01", index + 3)
    return False


def install_counting_decoders() -> None:
    """Process-wide (aiortc looks the factory up per receiver): call once in a load generator."""
    aiortc.rtcrtpreceiver.get_decoder = lambda codec: CountingDecoder(codec.mimeType)


@dataclass
class WhepResult:
    status: int | None = None  # the POST's answer
    retry_after: str | None = None
    error: str | None = None
    video_codec: str | None = None
    connected_after: float | None = None  # seconds from POST to ICE+DTLS connected
    first_frame_after: float | None = None  # seconds from POST to the first video frame
    frames: int = 0
    keyframes: int = 0
    audio_packets: int = 0
    bytes: int = 0
    first_timestamp: int | None = None
    last_timestamp: int | None = None
    gaps: list[float] = field(default_factory=list)  # inter-frame arrival gaps > 0.25 s

    def expected_frames(self, fps: int) -> int:
        """Frames the sender produced between the first and the last frame this viewer got."""
        if self.first_timestamp is None or self.last_timestamp is None:
            return 0
        span = (self.last_timestamp - self.first_timestamp) % 2**32
        return round(span / VIDEO_CLOCK * fps) + 1

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def loopback_viewer(index: int) -> aiohttp.ClientSession:
    """Viewer `index`'s own HTTP session, from its own loopback address (127.0.0.2, 127.0.0.3, …):
    on a machine of their own, viewers are many clients, as servers count them (per-address limits)."""
    address = f"127.0.{index // 250}.{2 + index % 250}"
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def watch(session: aiohttp.ClientSession, whep_url: str, seconds: float, ice: IceSettings,
                stop: asyncio.Event | None = None) -> WhepResult:
    """One viewer for `seconds` (or until `stop`); never raises for network or HTTP trouble."""
    apply_host_addresses(ice)
    result = WhepResult()
    pc = RTCPeerConnection(ice.rtc_configuration())
    location = None
    started = time.monotonic()
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        tracks: list[MediaStreamTrack] = []
        pc.on("track", tracks.append)
        connected = asyncio.Event()
        pc.on("connectionstatechange", lambda: pc.connectionState == "connected" and connected.set())
        await pc.setLocalDescription(await pc.createOffer())
        async with session.post(whep_url, data=pc.localDescription.sdp,
                                headers={"Content-Type": "application/sdp"}) as response:
            result.status = response.status
            result.retry_after = response.headers.get("Retry-After")
            body = await response.text()
            location = response.headers.get("Location")
        if result.status != 201:
            result.error = body.strip()[:200]
            return result
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        result.video_codec = _answered_video_codec(body)
        deadline = started + seconds
        await asyncio.wait_for(connected.wait(), timeout=max(0.1, min(15.0, deadline - time.monotonic())))
        result.connected_after = time.monotonic() - started
        readers = [asyncio.create_task(_count(track, result, started)) for track in tracks]
        waits = [asyncio.create_task(asyncio.sleep(max(0.0, deadline - time.monotonic())))]
        if stop is not None:
            waits.append(asyncio.create_task(stop.wait()))
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in [*readers, *waits]:
            task.cancel()
        await asyncio.gather(*readers, *waits, return_exceptions=True)
    except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as error:
        result.error = f"{type(error).__name__}: {error}"[:200]
    finally:
        if location:
            try:
                async with session.delete(urljoin(whep_url, location)) as response:
                    await response.read()
            except aiohttp.ClientError:
                pass
        await pc.close()
    return result


def _answered_video_codec(answer: str) -> str | None:
    """The codecs the answer's video section accepts (RTX aside), e.g. `video/H264`."""
    for media in aiortc_sdp.SessionDescription.parse(answer).media:
        if media.kind == "video":
            names = {c.mimeType for c in media.rtp.codecs if not c.mimeType.lower().endswith("/rtx")}
            return ",".join(sorted(names)) or None
    return None


async def _count(track: MediaStreamTrack, result: WhepResult, started: float) -> None:
    previous = None
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not isinstance(frame, CountedFrame):
            continue  # install_counting_decoders() was not called: decoded frames are not counted
        if track.kind == "audio":
            result.audio_packets += 1
            continue
        if result.first_frame_after is None:
            result.first_frame_after = frame.arrived - started
            result.first_timestamp = frame.timestamp
        result.last_timestamp = frame.timestamp
        result.frames += 1
        result.keyframes += frame.keyframe
        result.bytes += frame.size
        if previous is not None and frame.arrived - previous > 0.25:
            result.gaps.append(round(frame.arrived - previous, 3))
        previous = frame.arrived
