"""Request bodies and error answers shared by every wall endpoint: size limits enforced while
reading (a 4 MB body is refused after max_bytes, never read whole), JSON errors as 400 with a
message, and nothing else (no traceback) ever reaching the client."""

from __future__ import annotations

import json

from aiohttp import web

from launchkit import metrics

NO_STORE = {"Cache-Control": "no-store"}


class RequestError(Exception):
    def __init__(self, status: int, message: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.reason, self.headers = status, message, reason, headers or {}

    def response(self) -> web.Response:
        metrics.WALL_REQUESTS_REFUSED.labels(self.reason).inc()
        return error_response(self.status, self.message, self.headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers={**NO_STORE, **(headers or {})})


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The body, read up to `max_bytes`; 413 as soon as it is known to be larger."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise RequestError(413, f"request body over {max_bytes} bytes", "too_large")
    data = bytearray()
    while len(data) <= max_bytes:
        chunk = await request.content.read(max_bytes + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > max_bytes:
        raise RequestError(413, f"request body over {max_bytes} bytes", "too_large")
    return bytes(data)


def parse_json(body: bytes) -> object:
    if not body.strip():
        raise RequestError(400, "empty body: send a JSON object", "malformed")
    try:
        text = body.decode("utf-8")  # strictly: json.loads would guess UTF-16/32 from the bytes
    except UnicodeDecodeError:
        raise RequestError(400, "the body is not valid UTF-8", "malformed") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise RequestError(400, f"malformed JSON: {error}", "malformed") from None


def require_json(request: web.Request) -> None:
    """State changes take JSON only: a cross-site HTML form cannot send it (CSRF on the ops cookie)."""
    if request.content_type != "application/json":
        raise RequestError(415, "send Content-Type: application/json", "malformed")
