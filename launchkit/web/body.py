"""Request bodies within limits: the size is enforced while reading (a 4 MB body is refused after
`limit` bytes, never read whole, with or without Content-Length), and JSON is parsed strictly
(UTF-8 only: `json.loads` would otherwise guess UTF-16/32 from the bytes)."""

from __future__ import annotations

import json

from aiohttp import web

from launchkit.web.refusal import Refusal

JSON = "application/json"


def too_large(limit: int) -> Refusal:
    return Refusal(413, f"request body over {limit} bytes", "too_large")


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, at most `limit` bytes; raises Refusal(413) as soon as it is known to be larger."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large(limit)
    data = bytearray()
    while len(data) <= limit:
        chunk = await request.content.read(limit + 1 - len(data))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise too_large(limit)
    return bytes(data)


def parse_json(body: bytes) -> object:
    """The JSON value of `body`; raises Refusal(400) saying what is wrong."""
    if not body.strip():
        raise Refusal(400, "empty body: send a JSON object", "malformed")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal(400, "the body is not valid UTF-8", "malformed") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise Refusal(400, f"malformed JSON: {error}", "malformed") from None
    except RecursionError:  # `[[[[…` of a few kB: deeper than the parser recurses
        raise Refusal(400, "malformed JSON: nested too deeply", "malformed") from None


def require_content_type(request: web.Request, *types: str) -> None:
    if request.content_type not in types:
        raise Refusal(415, f"send Content-Type: {' or '.join(types)}", "unsupported")


async def read_json(request: web.Request, limit: int, *, types: tuple[str, ...] = (JSON,)) -> object:
    """Content type checked first (a cross-site form cannot send JSON: no CSRF), then the body."""
    require_content_type(request, *types)
    return parse_json(await read_body(request, limit))
