"""WHIP ingest (RFC 9725): a publisher POSTs an SDP offer to /whip, gets the SDP answer and the
URL of its session resource, and its decoded media becomes a `ProgramInput`.

Non-trickle only: the offer must carry the publisher's candidates and the answer carries ours
(aiortc gathers before answering), so PATCH (trickle ICE, ICE restart) answers 405 as RFC 9725
§4.3.1 asks of servers without them. A publisher that loses its connection POSTs again.

Interop measured with real publishers (DESIGN.md): an `actpass` offer is answered
`setup:passive` (GStreamer's WHIP client fails DTLS otherwise); a `passive` offer (FFmpeg's WHIP
muxer) makes us active; the 201 carries a Content-Length (FFmpeg fails on a chunked 201); CORS
lets browser publishers on other origins send the Authorization header and read Location.

Every refusal is a one-line plain-text 4xx counted in INGEST_REJECTED, and leaves no session,
peer connection or claimed slot behind.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from aiortc import RTCPeerConnection, RTCRtpCodecCapability, RTCRtpReceiver, RTCRtpTransceiver, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import OperationError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from launchkit import metrics
from launchkit.auth import FailedCredentials, Tokens, bearer_token
from launchkit.web.refusal import Refusal
from stream.program import Program, ProgramInput, Role, SlotBusy
from stream.webrtc.http import CORS_HEADERS, SDP_TYPE, SessionResources, read_offer, refusal_response
from stream.webrtc.ice import IceSettings, apply_host_addresses, without_mdns_candidates
from stream.webrtc.session import PeerSession

log = logging.getLogger(__name__)

PROTOCOL = "whip"
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


class WhipEndpoint(SessionResources[WhipSession]):
    """aiohttp handlers for POST /whip, DELETE/PATCH/OPTIONS /whip/{session} and OPTIONS /whip."""

    protocol = "WHIP"

    def __init__(self, program: Program, tokens: Tokens, ice: IceSettings, failures: FailedCredentials) -> None:
        super().__init__()
        self._program = program
        self._tokens = tokens
        self._failures = failures
        self._ice = ice
        apply_host_addresses(ice)

    def sessions(self) -> int:
        return len(self._sessions)

    async def post(self, request: web.Request) -> web.Response:
        try:
            await self._authorize(request)
            role = _role(request)
            offer = without_mdns_candidates(await read_offer(request))
            summary = _check_offer(offer)
            program_input = self._claim(role, request)
        except Refusal as refusal:
            return _refuse(refusal)
        session = WhipSession(secrets.token_urlsafe(24), RTCPeerConnection(self._ice.rtc_configuration()),
                              program_input, self.forget)
        try:
            answer = await session.negotiate(offer, summary)
        except Exception as error:  # aiortc raises many types on offers it cannot take
            await session.close("negotiation failed")
            return _refuse(_negotiation_refusal(error))
        self._sessions[session.id] = session
        log.info("WHIP session %s… started: %s publisher from %s", session.id[:6], role, request.remote)
        # A bytes body gets a Content-Length: FFmpeg's WHIP muxer rejects a chunked 201.
        return web.Response(
            status=201, body=answer.encode(), content_type=SDP_TYPE,
            headers={**CORS_HEADERS, "Location": f"/whip/{session.id}", "ETag": session.etag},
        )

    async def delete(self, request: web.Request) -> web.Response:
        try:
            await self._authorize(request)
        except Refusal as refusal:
            return _refuse(refusal)
        return await self.end(request, "publisher sent DELETE")

    async def _authorize(self, request: web.Request) -> None:
        """The publish token, with failed attempts slowed and repeated ones locked out (launchkit.auth)."""
        wait = self._failures.locked_out(request.remote, "publish")
        if wait:
            raise Refusal(429, f"too many failed publish tokens from your address: retry in {wait} s", "locked_out",
                          {"Retry-After": str(wait)})
        if not self._tokens.is_publish(bearer_token(request.headers.get("Authorization"))):
            await self._failures.failed(request.remote, "publish")
            raise Refusal(401, "a valid publish token is required: Authorization: Bearer <publish token>", "bad_key",
                          {"WWW-Authenticate": 'Bearer realm="whip"'})

    def _claim(self, role: Role, request: web.Request) -> ProgramInput:
        try:
            return self._program.claim(role, PROTOCOL, request.remote or "unknown")
        except SlotBusy as busy:
            raise Refusal(409, str(busy), "busy") from None


def _refuse(refusal: Refusal) -> web.Response:
    metrics.INGEST_REJECTED.labels(PROTOCOL, refusal.reason).inc()
    return refusal_response(refusal)


def _role(request: web.Request) -> Role:
    role = request.query.get("role", "primary")
    if role not in ("primary", "backup"):
        raise Refusal(400, f"role must be primary or backup, got {role[:32]!r}")
    return cast(Role, role)


def _check_offer(offer: str) -> OfferSummary:
    """Refuse before claiming a slot what aiortc would refuse, with a message a publisher can act on."""
    try:
        description = aiortc_sdp.SessionDescription.parse(offer)
    except Exception:  # the parser asserts, indexes and converts without a single error type
        raise Refusal(400, "the body is not a valid SDP offer", "bad_request") from None
    video = [m for m in description.media if m.kind == "video"]
    audio = [m for m in description.media if m.kind == "audio"]
    if not video:
        raise Refusal(400, "the offer has no video: publish a camera or screen track", "unsupported")
    if len(video) > 1 or len(audio) > 1:
        raise Refusal(400, "publish one video and at most one audio track", "unsupported")
    if any(line.startswith("a=simulcast:") for line in offer.splitlines()):
        # aiortc would feed every layer into one decoder: refuse rather than show garbage.
        raise Refusal(400, "simulcast is not supported: publish a single video encoding", "unsupported")
    if video[0].direction not in ("sendonly", "sendrecv"):
        raise Refusal(400, "the offer's video is not sent (direction must be sendonly)", "bad_request")
    if not any(codec.mimeType.lower() in VIDEO_CODECS for codec in video[0].rtp.codecs):
        raise Refusal(400, "the offer's video codecs include neither H.264 nor VP8", "unsupported")
    if audio and not any(codec.mimeType.lower() == AUDIO_CODEC for codec in audio[0].rtp.codecs):
        raise Refusal(400, "the offer's audio is not Opus", "unsupported")
    dtls = [m.dtls for m in description.media]
    if any(d is None or not d.fingerprints for d in dtls):
        raise Refusal(400, "the offer lacks a=setup or a=fingerprint (DTLS-SRTP is required)", "bad_request")
    return OfferSummary(audio=bool(audio), setup=video[0].dtls.role)


def _negotiation_refusal(error: Exception) -> Refusal:
    if isinstance(error, OperationError):  # no codec in common, e.g. H.264 in a profile aiortc lacks
        return Refusal(400, f"no common codec: {_one_line(error)}", "unsupported")
    log.info("WHIP offer refused: %r", error)
    return Refusal(400, f"the SDP offer could not be applied: {_one_line(error)}")


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


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
