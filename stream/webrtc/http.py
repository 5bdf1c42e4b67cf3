"""HTTP pieces WHIP (ingest) and WHEP (viewing) share: reading an SDP offer within limits, CORS,
and one-line plain-text refusals (RFC 9725 and the WHEP draft use the same resource model)."""

from __future__ import annotations

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
