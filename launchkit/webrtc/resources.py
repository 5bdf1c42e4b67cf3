"""HTTP pieces WHIP (ingest) and WHEP (viewing) share: reading an SDP offer within limits, CORS,
and one-line plain-text refusals (RFC 9725 and the WHEP draft use the same resource model; their
clients, OBS and FFmpeg among them, print a refusal's body as it is, so it is text, not JSON)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Generic, Protocol, TypeVar

from aiohttp import web
from aiortc import sdp as aiortc_sdp

from launchkit.web.body import read_body, require_content_type
from launchkit.web.cors import cors, preflight
from launchkit.web.refusal import Refusal

SDP_TYPE = "application/sdp"
# Real offers are a few kB; anything near the limit is not a WebRTC client.
MAX_OFFER_BYTES = 64 * 1024

# Link: ICE servers (TURN credentials) a page on another origin must read (launchkit/webrtc/turn.py).
EXPOSED = ("Location", "ETag", "Link")
CORS_HEADERS = cors(expose=EXPOSED)
# Launchkit-Key: the viewer's admission key (launchkit/admission/tickets.py) rides along WHEP offers.
PREFLIGHT_HEADERS = {
    **preflight(("POST", "DELETE", "PATCH", "OPTIONS"), headers=("Authorization", "Content-Type", "Launchkit-Key"),
                expose=EXPOSED),
    "Accept-Post": SDP_TYPE,
}


def text_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers={**CORS_HEADERS, **(headers or {})})


def refusal_response(refusal: Refusal) -> web.Response:
    return text_response(refusal.status, refusal.message, {"Cache-Control": "no-store", **refusal.headers})


async def read_offer(request: web.Request) -> str:
    require_content_type(request, SDP_TYPE)
    try:
        body = await read_body(request, MAX_OFFER_BYTES)
    except Refusal as refusal:
        if refusal.status == 413:
            raise Refusal(413, f"the offer is larger than {MAX_OFFER_BYTES // 1024} KiB") from None
        raise
    try:
        offer = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "the offer is not UTF-8 text") from None
    if not offer.strip():
        raise Refusal(400, "the request body is empty: send an SDP offer")
    return offer


def parse_offer(offer: str) -> aiortc_sdp.SessionDescription:
    """The offer as aiortc reads it, refused (400) unless every section carries DTLS-SRTP keys."""
    try:
        description = aiortc_sdp.SessionDescription.parse(offer)
    except Exception:  # the parser asserts, indexes and converts without a single error type
        raise Refusal(400, "the body is not a valid SDP offer", "bad_request") from None
    if any(m.dtls is None or not m.dtls.fingerprints for m in description.media):
        raise Refusal(400, "the offer lacks a=setup or a=fingerprint (DTLS-SRTP is required)", "bad_request")
    return description


def one_line(error: Exception) -> str:
    """An exception as one short line of a refusal's text."""
    return " ".join(str(error).split())[:200] or type(error).__name__


class Session(Protocol):
    id: str

    async def close(self, why: str) -> None: ...


S = TypeVar("S", bound=Session)


class SessionResources(ABC, Generic[S]):
    """The session resources both protocols create on POST: DELETE ends one, PATCH is 405 (no trickle
    ICE or ICE restart: a client POSTs a new offer), OPTIONS answers CORS preflights."""

    protocol = "WebRTC"  # in messages

    def __init__(self) -> None:
        self._sessions: dict[str, S] = {}

    async def end(self, request: web.Request, why: str) -> web.Response:
        session = self._sessions.get(request.match_info.get("session", ""))
        if session is None:
            return text_response(404, f"no such {self.protocol} session (it ended or never existed)")
        await session.close(why)
        return text_response(200, f"{self.protocol} session ended")

    def routes(self, path: str) -> list[web.RouteDef]:
        """POST `path` creates a session; `path/{session}` is its resource."""
        return [
            web.post(path, self.post),
            web.options(path, self.options_endpoint),
            web.delete(f"{path}/{{session}}", self.delete),
            web.patch(f"{path}/{{session}}", self.patch),
            web.options(f"{path}/{{session}}", self.options),
        ]

    @abstractmethod
    async def post(self, request: web.Request) -> web.Response:
        """Take an offer: 201 with the answer and the session's Location, or a refusal."""

    @abstractmethod
    async def delete(self, request: web.Request) -> web.Response:
        """End the session (its client is leaving)."""

    async def options_endpoint(self, request: web.Request) -> web.Response:
        """OPTIONS on the endpoint itself: a CORS preflight."""
        return await self.options(request)

    async def patch(self, request: web.Request) -> web.Response:
        return text_response(405, "trickle ICE and ICE restarts are not supported: send every candidate in the offer "
                                  "(non-trickle) and POST a new offer to reconnect", {"Allow": "DELETE, OPTIONS"})

    async def options(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers=PREFLIGHT_HEADERS)

    async def close(self) -> None:
        """End every session (app cleanup)."""
        await asyncio.gather(*(session.close("server shutting down") for session in list(self._sessions.values())))

    def forget(self, session: S) -> None:
        self._sessions.pop(session.id, None)
