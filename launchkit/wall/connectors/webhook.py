"""Webhook intake for other tools (a CMS, a chat bot, a press-room form): HMAC-SHA256 signed JSON.

The sender signs `<timestamp>.<raw body>` with the shared secret and sends
`X-Launchkit-Timestamp: <unix seconds>` and `X-Launchkit-Signature: sha256=<hex>`. We refuse a
timestamp more than `max_skew` seconds away (a captured request cannot be replayed later) and a
signature already seen within that window (nor replayed now). The payload's `id` (the sender's
delivery id) makes a retried delivery idempotent: stored once, answered 200 the second time.

Both headers are matched against ASCII patterns before anything else looks at them: `str.isdigit`
and `int` disagree on digits such as "²", and `hmac.compare_digest` raises on non-ASCII text, so a
header that is not exactly `<digits>` / `sha256=<64 lowercase hex>` is a 401, never a 500.

    {"id": "delivery-1", "text": "...", "name"?: "...", "outlet"?: "...", "kind"?: "comment"|"question",
     "url"?: "https://...", "author"?: "...", "html"?: false}
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict

from aiohttp import web

from launchkit.wall.connectors import Take
from launchkit.wall.posts import Candidate, Kind, ValidationError, clean_line, html_to_text, parse_submission, safe_link
from launchkit.wall.store import Duplicate
from launchkit.web.body import parse_json, read_body
from launchkit.web.refusal import Refusal

MAX_BODY = 64 * 1024
SIGNATURE_HEADER = "X-Launchkit-Signature"
TIMESTAMP_HEADER = "X-Launchkit-Timestamp"
_EXTRA = {"id": str, "url": str, "author": str, "html": bool}
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # [0-9], not \d: only what int() reads as the same number
_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value a sender computes (used by tests and example senders)."""
    return "sha256=" + hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookIntake:
    def __init__(self, secret: bytes, take: Take, *, max_skew: float = 300.0) -> None:
        self._secret, self._take, self._max_skew = secret, take, max_skew
        self._seen: OrderedDict[str, float] = OrderedDict()  # signature -> when it stops mattering

    async def handle(self, request: web.Request) -> web.Response:
        """POST /api/wall/webhook; refusals are raised (launchkit.wall.http.counted answers them)."""
        body = await read_body(request, MAX_BODY)
        signature = self._verify(request, body)
        try:
            fields = parse_submission(parse_json(body), extra=_EXTRA)
        except ValidationError as error:
            raise Refusal(400, str(error), "invalid") from None
        delivery = fields.get("id")
        if not delivery or len(delivery) > 200:
            raise Refusal(400, "id (the delivery id, at most 200 characters) is required", "invalid")
        text = html_to_text(fields["text"]) if fields.get("html") else fields["text"]
        if not text:
            raise Refusal(400, "text is empty", "invalid")
        author = clean_line(fields.get("author") or fields["name"] or "webhook", 200)
        candidate = Candidate(
            source="webhook", kind=Kind(fields["kind"]), text=text, author=f"webhook:{author.casefold()}",
            name=fields["name"], outlet=fields["outlet"], url=safe_link(fields.get("url")),
            source_key=f"webhook:{delivery}",
        )
        self._remember(signature)
        try:
            await self._take(candidate)
        except Duplicate:
            return web.json_response({"duplicate": True}, status=200)
        return web.json_response({"accepted": True}, status=202)

    def _verify(self, request: web.Request, body: bytes) -> str:
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not _TIMESTAMP.fullmatch(stamp) or not _SIGNATURE.fullmatch(signature):
            raise Refusal(401, f"sign the request: {TIMESTAMP_HEADER}: <unix seconds> and "
                               f"{SIGNATURE_HEADER}: sha256=<lowercase hex>", "bad_signature")
        if abs(time.time() - int(stamp)) > self._max_skew:
            raise Refusal(401, f"timestamp outside ±{self._max_skew:g} s of our clock", "stale")
        if not hmac.compare_digest(sign(self._secret, int(stamp), body).encode(), signature.encode()):
            raise Refusal(401, "signature does not match", "bad_signature")
        self._forget_expired()
        if signature in self._seen:
            raise Refusal(409, "this signed request was already received (replay)", "replay")
        return signature

    def _remember(self, signature: str) -> None:
        self._seen[signature] = time.monotonic() + 2 * self._max_skew

    def _forget_expired(self) -> None:
        now = time.monotonic()
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)
