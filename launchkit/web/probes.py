"""The probes every role answers: `/healthz` (the process serves), `/readyz` (send it viewers:
what "ready" means is the role's), `/metrics` (Prometheus, behind the metrics token).

The event-loop lag gauge (`launchkit_event_loop_lag_seconds`) is written by one monitor per
process, the admission's lag guard (launchkit/admission/capacity.py), which every role runs.
"""

from __future__ import annotations

import os
from typing import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from launchkit.auth import FailedCredentials, Tokens
from launchkit.web.credentials import require_bearer
from launchkit.web.refusal import NO_STORE


def exposition() -> bytes:
    """This process's metrics, or every worker's when running in multiprocess mode
    (PROMETHEUS_MULTIPROC_DIR, set by launchkit/serve/workers.py)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return generate_latest(registry)


class Probes:
    """`readiness()` answers /readyz: a JSON object whose `ready` decides 200 or 503; `refresh()`
    updates the gauges that are computed on demand, before each scrape."""

    def __init__(self, tokens: Tokens, failures: FailedCredentials, readiness: Callable[[], dict],
                 refresh: Callable[[], object] = lambda: None) -> None:
        self._tokens, self._failures = tokens, failures
        self._readiness, self._refresh = readiness, refresh

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/metrics", self.metrics), web.get("/healthz", self.healthz), web.get("/readyz", self.readyz)]

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True}, headers=NO_STORE)

    async def readyz(self, request: web.Request) -> web.Response:
        body = self._readiness()
        return web.json_response(body, status=200 if body["ready"] else 503, headers=NO_STORE)

    async def metrics(self, request: web.Request) -> web.Response:
        await require_bearer(request, self._failures, "metrics", self._tokens.is_metrics, "launchkit-metrics",
                             "the metrics token (LAUNCHKIT_METRICS_TOKEN) or the ops token")
        self._refresh()
        return web.Response(body=exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST, **NO_STORE})
