"""HTTP pieces WHIP (ingest) and WHEP (viewing) share: reading an SDP offer within limits, CORS,
and one-line plain-text refusals (RFC 9725 and the WHEP draft use the same resource model)."""

from __future__ import annotations

import asyncio
from typing import Generic, Protocol, TypeVar

from aiohttp import web

SDP_TYPE = "application/sdp"
# Real offers are a few kB; anything near the limit is not a WebRTC client.
MAX_OFFER_BYTES = 64 * 1024
READ_CHUNK = 16 * 1024

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Location, ETag",
}
PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
    "Accept-Post": SDP_TYPE,
}


class Refusal(Exception):
    """A request refused before any media flows: its HTTP status, metric reason and message."""

    def __init__(self, status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.headers = headers or {}


def text_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers={**CORS_HEADERS, **(headers or {})})


async def read_offer(request: web.Request) -> str:
    if request.content_type != SDP_TYPE:
        raise Refusal(415, "bad_request", f"the offer must be sent as Content-Type: {SDP_TYPE}")
    too_large = Refusal(413, "bad_request", f"the offer is larger than {MAX_OFFER_BYTES // 1024} KiB")
    if (request.content_length or 0) > MAX_OFFER_BYTES:
        raise too_large
    # Read the stream ourselves: the app-wide client_max_size may be set for other routes.
    body = bytearray()
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        body += chunk
        if len(body) > MAX_OFFER_BYTES:
            raise too_large
    try:
        offer = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "bad_request", "the offer is not UTF-8 text") from None
    if not offer.strip():
        raise Refusal(400, "bad_request", "the request body is empty: send an SDP offer")
    return offer


class Session(Protocol):
    id: str

    async def close(self, why: str) -> None: ...


S = TypeVar("S", bound=Session)


class SessionResources(Generic[S]):
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
