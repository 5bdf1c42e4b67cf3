"""A WHIP publisher's peer connection (RFC 9725): its decoded media becomes a `ProgramInput`.
The HTTP side (offers, tokens, refusals) is the server's WHIP endpoint.

Interop measured with real publishers (DESIGN.md): an `actpass` offer is answered
`setup:passive` (GStreamer's WHIP client fails DTLS otherwise); a `passive` offer (FFmpeg's WHIP
muxer) makes us active.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCPeerConnection, RTCRtpCodecCapability, RTCRtpReceiver, RTCRtpTransceiver, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from stream.program import ProgramInput
from stream.webrtc.session import PeerSession

PROTOCOL = "whip"  # the program input's protocol and the INGEST_REJECTED label
MONITOR_INTERVAL = 1.0
VIDEO_CODECS = ("video/h264", "video/vp8")  # decoded by aiortc; H.264 is preferred (see _video_preferences)
AUDIO_CODEC = "audio/opus"


@dataclass(frozen=True, slots=True)
class OfferSummary:
    """What must be known of an offer before negotiating: whether it sends audio, and its DTLS
    setup in aiortc's terms ("auto" = actpass, "server" = passive, "client" = active)."""

    audio: bool
    setup: str


class WhipSession(PeerSession):
    """One publisher: its peer connection, the tasks that move its frames, and its slot."""

    protocol = "WHIP"

    def __init__(self, session_id: str, pc: RTCPeerConnection, program_input: ProgramInput,
                 on_closed: Callable[[WhipSession], None]) -> None:
        super().__init__(session_id, pc, on_closed)
        self.program_input = program_input
        self._loop = asyncio.get_running_loop()
        self._video: RTCRtpReceiver | None = None
        self._keyframe_pending = False

    async def negotiate(self, offer: str, summary: OfferSummary) -> str:
        """Apply the offer and return the non-trickle answer (our candidates included)."""
        video = self.pc.addTransceiver("video", direction="recvonly")
        video.setCodecPreferences(_video_preferences())
        self._video = video.receiver
        audio = None
        if summary.audio:
            audio = self.pc.addTransceiver("audio", direction="recvonly")
            audio.setCodecPreferences(_audio_preferences())
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(_with_dtls_role(answer, summary.setup))
        local = self.pc.localDescription.sdp
        self.program_input.set_codecs(**_negotiated_codecs(local))
        self._start(video, audio)
        return local

    def _start(self, video: RTCRtpTransceiver, audio: RTCRtpTransceiver | None) -> None:
        self._watch()
        self.program_input.request_keyframe = self.request_keyframe
        self._spawn(self._read_video(video.receiver.track))
        if audio is not None:
            self._spawn(self._read_audio(audio.receiver.track))
        self._spawn(self._monitor())
        self.request_keyframe()

    async def _read_video(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            self.program_input.push_video(frame)
        # The publisher hung up without a DELETE (RTCP BYE, DTLS close) or the connection died.
        await self.close("video ended")

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.program_input.push_audio(frame)

    async def _monitor(self) -> None:
        counted = 0
        while True:
            await asyncio.sleep(MONITOR_INTERVAL)
            received = await self._bytes_received()
            self.program_input.count_bytes(received - counted)
            counted = received
            if self._keyframe_pending:
                self._ask_for_keyframe()

    async def _bytes_received(self) -> int:
        # Transport totals include RTCP and DTLS: close enough for an ingest bitrate, and public.
        report = await self.pc.getStats()
        return sum(stats.bytesReceived for stats in report.values() if stats.type == "transport")

    def request_keyframe(self) -> None:
        """`ProgramInput.request_keyframe`: may be called from any thread."""
        try:
            self._loop.call_soon_threadsafe(self._ask_for_keyframe)
        except RuntimeError:
            pass  # the loop is closed: the session is over anyway

    def _ask_for_keyframe(self) -> None:
        if self._closed or self._video is None:
            return
        # The sender's SSRC is known once its first RTP packet arrived; until then, retry.
        sources = [source.source for source in self._video.getSynchronizationSources()]
        self._keyframe_pending = not sources
        for ssrc in sources:
            self._spawn(self._send_pli(self._video, ssrc))

    @staticmethod
    async def _send_pli(receiver: RTCRtpReceiver, ssrc: int) -> None:
        # aiortc sends a PLI (RFC 4585 §6.3.1) on its own only after loss or a decoder error and
        # has no public way to ask for one; its receiver's private sender is the one place to.
        try:
            await receiver._send_rtcp_pli(ssrc)
        except ConnectionError:
            pass  # the transport closed meanwhile

    def _release(self) -> None:
        self.program_input.request_keyframe = None
        self.program_input.release()


def _video_preferences() -> list[RTCRtpCodecCapability]:
    """H.264 first whenever the publisher offers it, VP8 otherwise.

    aiortc answers with the first codec of the offer that it supports, and browsers list VP8
    first. H.264 is what publishers' hardware encodes and what our ladder outputs."""
    codecs = RTCRtpReceiver.getCapabilities("video").codecs
    order = ("video/h264", "video/vp8", "video/rtx")
    return sorted((c for c in codecs if c.mimeType.lower() in order), key=lambda c: order.index(c.mimeType.lower()))


def _audio_preferences() -> list[RTCRtpCodecCapability]:
    return [c for c in RTCRtpReceiver.getCapabilities("audio").codecs if c.mimeType.lower() == AUDIO_CODEC]


def _with_dtls_role(answer: RTCSessionDescription, offered_setup: str) -> RTCSessionDescription:
    """Answer `actpass` with `passive` (RFC 8842 lets us choose; GStreamer's WHIP client needs it).

    aiortc answers `actpass` with `active`, and `passive` with `active` too, which is what
    FFmpeg's WHIP muxer needs: only the first case is rewritten. aiortc takes its DTLS role from
    the local description it is given, so the rewrite is all it takes."""
    if offered_setup != "auto":  # aiortc's name for actpass
        return answer
    return RTCSessionDescription(sdp=answer.sdp.replace("a=setup:active", "a=setup:passive"), type=answer.type)


def _negotiated_codecs(answer: str) -> dict[str, str]:
    """{"video": "h264", "audio": "opus"}: the first codec of each answered section, the one a
    publisher sends."""
    return {
        media.kind: media.rtp.codecs[0].mimeType.split("/")[1].lower()
        for media in aiortc_sdp.SessionDescription.parse(answer).media
        if media.kind in ("video", "audio") and media.rtp.codecs
    }
