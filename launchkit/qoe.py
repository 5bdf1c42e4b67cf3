"""QoE beacons: what viewers' players report (landing/static/qoe.js), turned into Prometheus metrics.

`POST /api/qoe` takes one small JSON object per player every 30 s (and when the page hides):

    {"protocol": "llhls", "startup": 1.2, "played": 29.8, "stalls": 1, "rebuffer": 0.6,
     "errors": {"network": 0, "media": 1, "player": 0, "other": 0}, "webrtc": {"won": 1}}

(`webrtc`: how the page's WebRTC attempts beside LL-HLS ended: won, refused, failed, timeout, lost)

every field but `protocol` optional; counts and seconds are since the player's previous beacon, so
the server keeps no per-viewer state and any edge (or worker) can take any beacon. Answers: 204;
400 for anything malformed or out of range, 413 over 1 KB, 415 for another content type, 429 +
`Retry-After` beyond the per-client rate. Labels are the bounded sets below, never a viewer's.
Refusals are the kit's (`launchkit.web`: Refusal, bounded body reads that read the whole body,
however many TCP segments it comes in); each is counted under its reason in
`launchkit_qoe_beacons_total{result}`. The rate limit is per client: `request.remote`, which is the
viewer's address behind `--trusted-proxies` (never the ingress's, shared by the whole audience).
`sum by (protocol) (rate(launchkit_qoe_playing_seconds_total[1m]))` is the number of viewers
playing right now (seconds played per second).
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from launchkit import metrics
from launchkit.web.body import parse_json, read_body, require_content_type
from launchkit.web.ratelimit import Limit, RateLimiter
from launchkit.web.refusal import NO_STORE, Refusal

MAX_BODY = 1024
# A player sends one beacon per 30 s: this leaves room for a newsroom of viewers behind one address.
RATE = Limit(per_minute=60, burst=30)
MAX_SECONDS = 600.0  # per beacon: a page hidden for long sends what it had, capped by the player too
MAX_COUNT = 1000
CONTENT_TYPES = ("text/plain", "application/json")  # sendBeacon sends a string as text/plain


class QoeBeacons:
    def __init__(self, limit: Limit = RATE) -> None:
        # Keyed by the client's address, held in memory only (bounded LRU), never exported.
        self._limiter = RateLimiter(limit)
        metrics.init_qoe_labels()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/qoe", self.post)]

    async def post(self, request: web.Request) -> web.Response:
        try:
            beacon = await self._beacon(request)
        except Refusal as refusal:  # reasons are the kit's and ours, all within QOE_RESULTS
            metrics.QOE_BEACONS.labels(refusal.reason).inc()
            return refusal.response()
        record(beacon)
        metrics.QOE_BEACONS.labels("accepted").inc()
        return web.Response(status=204, headers=NO_STORE)

    async def _beacon(self, request: web.Request) -> dict[str, Any]:
        wait = self._limiter.take(request.remote or "unknown")
        if wait:
            raise Refusal(429, f"too many beacons: retry in {wait} s", "rate_limited", {"Retry-After": str(wait)})
        require_content_type(request, *CONTENT_TYPES)
        body = await read_body(request, MAX_BODY)
        return parse_beacon(parse_json(body))


def parse_beacon(data: object) -> dict[str, Any]:
    """The validated beacon; raises Refusal (and nothing is counted) on any bad field."""
    if not isinstance(data, dict) or set(data) - {"protocol", "startup", "played", "stalls", "rebuffer", "errors",
                                                  "webrtc"}:
        raise Refusal(400, "expected an object with protocol, startup, played, stalls, rebuffer, errors and webrtc",
                      "malformed")
    if data.get("protocol") not in metrics.QOE_PROTOCOLS:
        raise Refusal(400, f"protocol must be one of {', '.join(metrics.QOE_PROTOCOLS)}", "malformed")
    errors = data.get("errors", {})
    if not isinstance(errors, dict) or set(errors) - set(metrics.QOE_ERROR_TYPES):
        raise Refusal(400, f"errors must count {', '.join(metrics.QOE_ERROR_TYPES)}", "malformed")
    webrtc = data.get("webrtc", {})
    if not isinstance(webrtc, dict) or set(webrtc) - set(metrics.QOE_WEBRTC_OUTCOMES):
        raise Refusal(400, f"webrtc must count {', '.join(metrics.QOE_WEBRTC_OUTCOMES)}", "malformed")
    return {
        "protocol": data["protocol"],
        "startup": _number(data, "startup", MAX_SECONDS, optional=True),
        "played": _number(data, "played", MAX_SECONDS),
        "rebuffer": _number(data, "rebuffer", MAX_SECONDS),
        "stalls": int(_number(data, "stalls", MAX_COUNT, whole=True)),
        "errors": {kind: int(_number(errors, kind, MAX_COUNT, whole=True)) for kind in errors},
        "webrtc": {outcome: int(_number(webrtc, outcome, MAX_COUNT, whole=True)) for outcome in webrtc},
    }


def _number(data: dict, name: str, high: float, *, optional: bool = False, whole: bool = False) -> float:
    value = data.get(name)
    if value is None and optional:
        return math.nan
    value = 0 if value is None else value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high \
            or (whole and value != int(value)):
        raise Refusal(400, f"{name} must be a {'whole ' if whole else ''}number within 0–{high:g}", "malformed")
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
    for outcome, count in beacon["webrtc"].items():
        metrics.QOE_WEBRTC_ATTEMPTS.labels(outcome).inc(count)
