"""HTTP middleware shared by every role: metrics per route, refusals answered, and no traceback
ever reaches a client."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from launchkit import metrics
from launchkit.web.refusal import Refusal
from launchkit.web.routes import Handler

log = logging.getLogger(__name__)

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def route_label(request: web.Request) -> str:
    """The route template (`/hls/{rendition}/{name}`), never the raw path: bounded cardinality."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    route = route_label(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except Refusal as refusal:
        status = refusal.status
        return refusal.response()
    except web.HTTPException as error:
        status = error.status
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, route)
        return web.json_response({"error": "internal error"}, status=500)
    finally:
        method = request.method if request.method in _METHODS else "OTHER"
        metrics.HTTP_REQUESTS.labels(route, method, str(status)).inc()
        metrics.HTTP_REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)


async def count_response_bytes(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: the body size is known here for every response we send."""
    if request.method != "HEAD" and response.content_length:
        metrics.HTTP_RESPONSE_BYTES.labels(route_label(request)).inc(response.content_length)
