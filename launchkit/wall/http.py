"""The wall's side of the HTTP kit (launchkit.web): wall handlers refuse with `Refusal` and read
bodies with `launchkit.web.body` like every other endpoint. What is the wall's own is the count:
`counted` wraps each wall handler so that a refusal is counted in
`launchkit_wall_requests_refused{reason}` (the wall's abuse dashboard) and then answered. It answers
itself rather than leaving it to the app's `observe` middleware, so the count is the same wherever
the wall is mounted (origin, edge, a test's app)."""

from __future__ import annotations

import functools
from typing import Awaitable, Callable

from aiohttp import web

from launchkit import metrics
from launchkit.web.refusal import Refusal

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def count(refusal: Refusal) -> None:
    """Counts a refusal under its bounded reason. Operators' own mistakes (401, 404, 409 on the
    moderation API) are not abuse of the wall and have no reason in the metric: not counted."""
    if refusal.reason in metrics.WALL_REFUSALS:
        metrics.WALL_REQUESTS_REFUSED.labels(refusal.reason).inc()


def counted(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Refusal as refusal:
            count(refusal)
            return refusal.response()
    return answer
