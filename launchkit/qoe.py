"""QoE beacons: what viewers' players report (landing/static/qoe.js), turned into Prometheus metrics.

`POST /api/qoe` takes one small JSON object per player every 30 s (and when the page hides):

    {"protocol": "llhls", "startup": 1.2, "played": 29.8, "stalls": 1, "rebuffer": 0.6,
     "errors": {"network": 0, "media": 1, "player": 0, "other": 0}}

every field but `protocol` optional; counts and seconds are since the player's previous beacon, so
the server keeps no per-viewer state and any edge (or worker) can take any beacon. Answers: 204;
400 for anything malformed or out of range, 413 over 1 KB, 415 for another content type, 429 +
`Retry-After` beyond the per-client rate. Labels are the bounded sets below, never a viewer's.
`sum by (protocol) (rate(launchkit_qoe_playing_seconds_total[1m]))` is the number of viewers
playing right now (seconds played per second).
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from launchkit import metrics
from launchkit.wall.ratelimit import Limit, RateLimiter

MAX_BODY = 1024
# A player sends one beacon per 30 s: this leaves room for a newsroom of viewers behind one address.
RATE = Limit(per_minute=60, burst=30)
MAX_SECONDS = 600.0  # per beacon: a page hidden for long sends what it had, capped by the player too
MAX_COUNT = 1000
CONTENT_TYPES = ("text/plain", "application/json")  # sendBeacon sends a string as text/plain
NO_STORE = {"Cache-Control": "no-store"}


class BeaconError(ValueError):
    def __init__(self, status: int, reason: str, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.headers = status, reason, headers or {}


class QoeBeacons:
    def __init__(self, limit: Limit = RATE) -> None:
        # Keyed by the connecting address, held in memory only (bounded LRU), never exported.
        self._limiter = RateLimiter(limit)
        metrics.init_qoe_labels()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/qoe", self.post)]

    async def post(self, request: web.Request) -> web.Response:
        try:
            wait = self._limiter.take(request.remote or "unknown")
            if wait:
                raise BeaconError(429, "rate_limited", f"too many beacons: retry in {wait} s", {"Retry-After": str(wait)})
            beacon = parse_beacon(request.content_type, await _read(request))
        except BeaconError as error:
            metrics.QOE_BEACONS.labels(error.reason).inc()
            return web.json_response({"error": str(error)}, status=error.status, headers={**NO_STORE, **error.headers})
        record(beacon)
        metrics.QOE_BEACONS.labels("accepted").inc()
        return web.Response(status=204, headers=NO_STORE)


async def _read(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise BeaconError(413, "too_large", f"a beacon is at most {MAX_BODY} bytes")
    body = await request.content.read(MAX_BODY + 1)
    if len(body) > MAX_BODY:
        raise BeaconError(413, "too_large", f"a beacon is at most {MAX_BODY} bytes")
    return body


def parse_beacon(content_type: str, body: bytes) -> dict[str, Any]:
    """The validated beacon; raises BeaconError (and nothing is counted) on any bad field."""
    if content_type not in CONTENT_TYPES:
        raise BeaconError(415, "unsupported", f"send JSON as {' or '.join(CONTENT_TYPES)}")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BeaconError(400, "malformed", "the body is not JSON") from None
    if not isinstance(data, dict) or set(data) - {"protocol", "startup", "played", "stalls", "rebuffer", "errors"}:
        raise BeaconError(400, "malformed", "expected an object with protocol, startup, played, stalls, "
                                            "rebuffer and errors")
    if data.get("protocol") not in metrics.QOE_PROTOCOLS:
        raise BeaconError(400, "malformed", f"protocol must be one of {', '.join(metrics.QOE_PROTOCOLS)}")
    errors = data.get("errors", {})
    if not isinstance(errors, dict) or set(errors) - set(metrics.QOE_ERROR_TYPES):
        raise BeaconError(400, "malformed", f"errors must count {', '.join(metrics.QOE_ERROR_TYPES)}")
    return {
        "protocol": data["protocol"],
        "startup": _number(data, "startup", MAX_SECONDS, optional=True),
        "played": _number(data, "played", MAX_SECONDS),
        "rebuffer": _number(data, "rebuffer", MAX_SECONDS),
        "stalls": int(_number(data, "stalls", MAX_COUNT, whole=True)),
        "errors": {kind: int(_number(errors, kind, MAX_COUNT, whole=True)) for kind in errors},
    }


def _number(data: dict, name: str, high: float, *, optional: bool = False, whole: bool = False) -> float:
    value = data.get(name)
    if value is None and optional:
        return math.nan
    value = 0 if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high \
            or (whole and value != int(value)):
        raise BeaconError(400, "malformed", f"{name} must be a {'whole ' if whole else ''}number within 0–{high:g}")
    return float(value)


def record(beacon: dict[str, Any]) -> None:
    protocol = beacon["protocol"]
    if not math.isnan(beacon["startup"]):
        metrics.QOE_STARTUP.labels(protocol).observe(beacon["startup"])
    metrics.QOE_PLAYING.labels(protocol).inc(beacon["played"])
    metrics.QOE_STALLS.labels(protocol).inc(beacon["stalls"])
    metrics.QOE_REBUFFER.labels(protocol).inc(beacon["rebuffer"])
    for kind, count in beacon["errors"].items():
        metrics.QOE_ERRORS.labels(protocol, kind).inc(count)
