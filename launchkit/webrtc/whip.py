"""WHIP ingest over HTTP (RFC 9725): a publisher POSTs an SDP offer to /whip with its publish
token, gets the SDP answer and the URL of its session resource; the session itself (its media into
the program) is stream/webrtc/whip.py.

Non-trickle only: the offer must carry the publisher's candidates and the answer carries ours
(aiortc gathers before answering), so PATCH (trickle ICE, ICE restart) answers 405 as RFC 9725
§4.3.1 asks of servers without them. A publisher that loses its connection POSTs again.

The 201 carries a Content-Length (FFmpeg fails on a chunked 201); CORS lets browser publishers on
other origins send the Authorization header and read Location.

Every refusal is a one-line plain-text 4xx counted in INGEST_REJECTED, and leaves no session,
peer connection or claimed slot behind.
"""

from __future__ import annotations

import logging
import secrets
from typing import cast

from aiohttp import web
from aiortc import RTCPeerConnection
from aiortc.exceptions import OperationError

from launchkit import metrics
from launchkit.auth import FailedCredentials, Tokens, bearer_token
from launchkit.web.refusal import Refusal
from launchkit.webrtc.ice import IceSettings, apply_host_addresses, without_mdns_candidates
from launchkit.webrtc.resources import (
    CORS_HEADERS,
    SDP_TYPE,
    SessionResources,
    one_line,
    parse_offer,
    read_offer,
    refusal_response,
)
from stream.program import Program, ProgramInput, Role, SlotBusy
from stream.webrtc.whip import AUDIO_CODEC, PROTOCOL, VIDEO_CODECS, OfferSummary, WhipSession

log = logging.getLogger(__name__)


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
    description = parse_offer(offer)
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
    return OfferSummary(audio=bool(audio), setup=video[0].dtls.role)


def _negotiation_refusal(error: Exception) -> Refusal:
    if isinstance(error, OperationError):  # no codec in common, e.g. H.264 in a profile aiortc lacks
        return Refusal(400, f"no common codec: {one_line(error)}", "unsupported")
    log.info("WHIP offer refused: %r", error)
    return Refusal(400, f"the SDP offer could not be applied: {one_line(error)}")
