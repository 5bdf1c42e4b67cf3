"""A WHEP viewer's peer connection (draft-ietf-wish-whep): the shared fan-out's frames sent to one
viewer, and its RTT and loss reported. The HTTP side (offers, capacity, TURN) is the server's
WHEP endpoint.

The answer always picks H.264 (the rendition is encoded once, in H.264 Constrained Baseline)
even when the browser lists VP8 first, and Opus for audio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiortc import RTCPeerConnection, RTCRtpCodecCapability, RTCRtpSender, RTCSessionDescription

from stream import telemetry
from stream.webrtc.fanout import Fanout, Viewer
from stream.webrtc.session import PeerSession

STATS_INTERVAL = 5.0


def _h264_preferences() -> list[RTCRtpCodecCapability]:
    """H.264 with packetization-mode 1 (what the fan-out packetizes), then RTX for NACK repairs."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    h264 = [c for c in codecs if c.mimeType.lower() == "video/h264" and c.parameters.get("packetization-mode") == "1"]
    return h264 + [c for c in codecs if c.mimeType.lower() == "video/rtx"]


def _opus_preferences() -> list[RTCRtpCodecCapability]:
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]


class WhepSession(PeerSession):
    """One viewer: its peer connection and its place in the fan-out."""

    protocol = "WHEP"

    def __init__(self, session_id: str, pc: RTCPeerConnection, viewer: Viewer,
                 on_closed: Callable[[WhepSession], None], client: str) -> None:
        super().__init__(session_id, pc, on_closed)
        self.viewer = viewer
        self.client = client
        self.answered_at: float | None = None  # monotonic time of the answer

    async def negotiate(self, offer: str, audio: bool, fanout: Fanout) -> str:
        # Transceivers and their codec preferences come before the offer: aiortc settles each
        # section's codecs when it applies the remote description.
        tracks = [(self.viewer.video, _h264_preferences())]
        if audio:
            tracks.append((self.viewer.audio, _opus_preferences()))
        for track, preferences in tracks:
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(preferences)
            fanout.attach_sender(transceiver.sender)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        self._watch()
        self._spawn(self._report_stats())
        self.answered_at = time.monotonic()
        return self.pc.localDescription.sdp

    async def _report_stats(self) -> None:
        """RTT and loss from the viewer's RTCP receiver reports, one sample per sender per interval."""
        round_trip, fraction_lost = telemetry.histogram("webrtc_round_trip"), telemetry.histogram("webrtc_fraction_lost")
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            for sender in self.pc.getSenders():
                for stats in (await sender.getStats()).values():
                    if stats.type != "remote-inbound-rtp":
                        continue
                    if stats.roundTripTime is not None:
                        round_trip.observe(stats.roundTripTime)
                    if stats.fractionLost is not None:  # aiortc passes the report's 8-bit fixed-point value
                        fraction_lost.observe(stats.fractionLost / 256)

    def _release(self) -> None:
        self.viewer.close()
