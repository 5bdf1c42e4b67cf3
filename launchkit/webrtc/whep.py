"""WHEP playback over HTTP (draft-ietf-wish-whep): a viewer POSTs an SDP offer to /whep, gets the
answer and its session URL, and receives the WebRTC rendition from the shared `Fanout` through its
session (stream/webrtc/whep.py). Non-trickle: the answer carries our candidates (aiortc gathers
before answering), so PATCH answers 405 and a viewer that loses its connection POSTs again (the
landing page does, or falls back to LL-HLS).

Capacity: at most `max_viewers` sessions per process; beyond, 503 with Retry-After, which the
landing page takes as "play LL-HLS instead". A session that does not connect within
the connect timeout (stream/webrtc/session.py), or whose connection fails (ICE consent expires ~30 s after a viewer vanishes),
frees its place by itself.

Squatting: an offer costs nothing to send and would hold a place until it connects or times out
(the connect timeout, 15 s). So when every place is taken, a new offer ends the oldest session that
was answered more than STALE_PENDING ago and has still not connected (a real viewer connects within
a second or two, over TURN/TCP a few): offers that never connect keep nobody out for longer than
that, however many addresses send them. One address may have at most MAX_PENDING_PER_CLIENT
sessions connecting at once (behind `--trusted-proxies`, the real client's; beyond, 503), so it
cannot churn the places by itself. A flash crowd of real viewers is not slowed: while there are
free places, nothing is refused for connecting. Liveness and capacity are checked before the offer
is read.

TURN: with `turn` (launchkit/webrtc/turn.py), OPTIONS /whep (not a CORS preflight) and every 201
carry `Link: <turn:…>; rel="ice-server"; username=…; credential=…` with a fresh expiring
credential, so a viewer whose network drops UDP relays over TURN/TCP or TLS. The server's own
peer connections never use TURN (LAUNCHKIT_ICE_SERVERS is another matter): a viewer's relay sends
to the server's host candidates, public addresses or, in Kubernetes, pod addresses coturn reaches.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable

from aiohttp import web
from aiortc import RTCPeerConnection

from launchkit import metrics
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
from launchkit.webrtc.turn import TurnCredentials
from stream.webrtc.fanout import Fanout
from stream.webrtc.whep import WhepSession

log = logging.getLogger(__name__)

RETRY_AFTER = 10  # seconds before a refused viewer (now on LL-HLS) may try WebRTC again
# A page sends one offer, a newsroom or a rehearsal worker behind one address several at once; one
# address must not be able to churn the whole pending share by itself (the eviction below would let
# it push out other viewers still connecting).
MAX_PENDING_PER_CLIENT = 16
STALE_PENDING = 5.0  # seconds after its answer: a session not connected by then may give way


class WhepEndpoint(SessionResources[WhepSession]):
    """aiohttp handlers for POST /whep, DELETE/PATCH/OPTIONS /whep/{session} and OPTIONS /whep."""

    protocol = "WHEP"

    def __init__(self, fanout: Fanout, ice: IceSettings, max_viewers: int,
                 live: Callable[[], bool] = lambda: True, turn: TurnCredentials | None = None) -> None:
        super().__init__()
        self._fanout = fanout
        self._ice = ice
        self.max_viewers = max_viewers
        self._live = live
        self._turn = turn
        apply_host_addresses(ice)
        metrics.init_webrtc_labels()

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def headroom(self) -> int:
        return max(0, self.max_viewers - len(self._sessions))

    def status(self) -> dict:
        """For /api/status `webrtc`."""
        return {"available": self.max_viewers > 0 and bool(self._live()), "url": "/whep",
                "viewers": len(self._sessions), "max_viewers": self.max_viewers, "headroom": self.headroom()}

    async def post(self, request: web.Request) -> web.Response:
        client = request.remote or "unknown"
        try:
            await self._make_room(client)  # before reading: a refused viewer costs nothing
            offer = without_mdns_candidates(await read_offer(request))
            audio = _check_offer(offer)
            await self._make_room(client)  # again: the places may have gone while the offer arrived
        except Refusal as refusal:
            return _refuse(refusal)
        session = WhepSession(secrets.token_urlsafe(24), RTCPeerConnection(self._ice.rtc_configuration()),
                              self._fanout.join(), self.forget, client)
        self._sessions[session.id] = session
        try:
            answer = await session.negotiate(offer, audio, self._fanout)
        except Exception as error:  # aiortc raises many types on offers it cannot take
            await session.close("negotiation failed")
            log.info("WHEP offer refused: %r", error)
            return _refuse(Refusal(400, f"the SDP offer could not be applied: {one_line(error)}"))
        metrics.WHEP_SESSIONS.inc()
        log.info("WHEP session %s… started for %s", session.id[:6], request.remote)
        return web.Response(status=201, body=answer.encode(), content_type=SDP_TYPE,
                            headers={**CORS_HEADERS, "Location": f"/whep/{session.id}", "ETag": session.etag,
                                     "Cache-Control": "no-store", **self._ice_servers()})

    async def options_endpoint(self, request: web.Request) -> web.Response:
        """OPTIONS /whep: a CORS preflight, or a viewer asking for ICE servers before its offer."""
        response = await self.options(request)
        if "Access-Control-Request-Method" not in request.headers:  # the page reads this one's headers
            response.headers.update({"Cache-Control": "no-store", **self._ice_servers()})
        return response

    def _ice_servers(self) -> dict[str, str]:
        """A fresh TURN credential's Link header; nothing without TURN."""
        return {"Link": self._turn.link_header()} if self._turn is not None else {}

    async def delete(self, request: web.Request) -> web.Response:
        return await self.end(request, "viewer sent DELETE")

    async def _make_room(self, client: str) -> None:
        """Raises the 503 that says why `client` gets no place now; may end the oldest pending session."""
        retry = {"Retry-After": str(RETRY_AFTER)}
        if not self._live():
            raise Refusal(503, "the stream is not live: play HLS or retry later", "not_live", retry)
        pending = [session for session in self._sessions.values() if not session.connected]  # oldest first
        if sum(session.client == client for session in pending) >= MAX_PENDING_PER_CLIENT:
            raise Refusal(503, f"{MAX_PENDING_PER_CLIENT} WebRTC sessions from your address are still connecting: "
                               "play LL-HLS, or retry later", "pending", retry)
        if len(self._sessions) < self.max_viewers:
            return
        stale_before = time.monotonic() - STALE_PENDING
        stale = next((s for s in pending if s.answered_at is not None and s.answered_at < stale_before), None)
        if stale is None:
            raise Refusal(503, "WebRTC is at capacity on this server: play LL-HLS instead, or retry later", "capacity",
                          retry)
        metrics.WHEP_REFUSED.labels("pending").inc()
        await stale.close(f"not connected {STALE_PENDING:g} s after its answer, and a new viewer needed the place")


def _refuse(refusal: Refusal) -> web.Response:
    metrics.WHEP_REFUSED.labels(refusal.reason).inc()
    return refusal_response(refusal)


def _check_offer(offer: str) -> bool:
    """Whether the viewer takes audio; refuses offers we cannot serve with a message a client can act on."""
    description = parse_offer(offer)
    video = [m for m in description.media if m.kind == "video"]
    audio = [m for m in description.media if m.kind == "audio"]
    if len(video) != 1 or len(audio) > 1:
        raise Refusal(400, "offer one video and at most one audio section (recvonly)", "unsupported")
    if video[0].direction not in ("recvonly", "sendrecv"):
        raise Refusal(400, "the offer's video is not received (direction must be recvonly)", "bad_request")
    if not any(c.mimeType.lower() == "video/h264" and str(c.parameters.get("packetization-mode")) == "1"
               for c in video[0].rtp.codecs):
        raise Refusal(400, "the offer's video codecs do not include H.264 (packetization-mode=1)", "unsupported")
    return bool(audio) and audio[0].direction in ("recvonly", "sendrecv") and any(
        c.mimeType.lower() == "audio/opus" for c in audio[0].rtp.codecs)
