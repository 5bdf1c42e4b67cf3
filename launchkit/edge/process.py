"""The edge's processes: with `--workers 1` this process serves; with more, a supervisor runs N
workers on one port (launchkit/serve/workers.py). Every process drains on SIGTERM or a first
Ctrl-C for `--drain-seconds`; the demo's 2 s shutdown rule does not apply to a draining edge."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import socket
from dataclasses import asdict, replace
from typing import Any, Callable

from launchkit.admission import Admission, admission_secrets
from launchkit.admission.settings import from_options as admission_settings
from launchkit.admission.tickets import SECRET_ENV
from launchkit.auth import ENV as TOKEN_ENV
from launchkit.auth import Tokens
from launchkit.edge.app import EDGE, create_edge_app, edge_wall
from launchkit.edge.relay.upstream import default_edge_id
from launchkit.edge.settings import EdgeSettings
from launchkit.serve.lifecycle import serve
from launchkit.serve.listening import advertised, authority, listen
from launchkit.serve.workers import Supervisor, WorkerGroup, worker_main
from launchkit.web.clients import parse_networks

log = logging.getLogger("launchkit.edge")

_WORKER_ENTRY = "import sys; from launchkit.edge.process import _worker_main; _worker_main(*sys.argv[1:])"


def run_edge(settings: EdgeSettings) -> int:
    """Serve until drained; returns the exit status. Raises launchkit.serve.listening.ListenError
    when the address cannot be bound (nothing started)."""
    generated = _settle_secrets(os.environ)
    if settings.workers == 1:
        sock = listen(settings.host, settings.port)
        settings = _bound(settings, sock.getsockname()[1])
        return asyncio.run(_serve(settings, sock, supervised=False,
                                  on_listening=lambda: _announce(settings, generated)))
    group = WorkerGroup(_WORKER_ENTRY, settings.workers, settings.host, settings.port, settings.drain_seconds, "edge")
    return Supervisor(group, settings=lambda port: _settings_json(_bound(settings, port)),
                      announce=lambda port: _announce(_bound(settings, port), generated)).run()


def _bound(settings: EdgeSettings, port: int) -> EdgeSettings:
    """`settings` once listening on `port` (0 picks one): upstreams know the edge as HOST:PORT."""
    return replace(settings, port=port, edge_id=settings.edge_id or default_edge_id(port))


def _settle_secrets(environ: os._Environ[str]) -> dict[str, str]:
    """Secrets this edge makes up when unset, put in the environment so every worker shares them
    (an environment is readable by the same user only; a command line by everyone). Returns those
    worth printing."""
    if not environ.get(SECRET_ENV) and not environ.get(TOKEN_ENV["ops"]):
        # One key per run at least signs tickets alike across workers. Several edges need
        # LAUNCHKIT_ADMISSION_SECRET (or the ops token) set to honour each other's.
        environ[SECRET_ENV] = secrets.token_urlsafe(32)
    tokens = Tokens.from_env(environ)
    for name in ("edge", "metrics"):
        if name in tokens.generated:
            environ[TOKEN_ENV[name]] = getattr(tokens, name)
    if "edge" in tokens.generated:
        log.warning("neither %s nor %s is set: the origin will refuse this edge's WebRTC feed (WHEP viewers get "
                    "LL-HLS); set one of them to the origin's", TOKEN_ENV["edge"], TOKEN_ENV["ops"])
    return {"metrics token": tokens.metrics} if "metrics" in tokens.generated else {}


async def _serve(settings: EdgeSettings, sock: socket.socket, *, supervised: bool,
                 on_listening: Callable[[], None] | None = None) -> int:
    # Every process (single or worker) builds its app here, admission included: with --workers N
    # each worker admits its share of --max-viewers (and of --max-webrtc-viewers).
    if settings.workers > 1 and settings.max_webrtc_viewers > 0:
        settings = replace(settings, max_webrtc_viewers=max(1, settings.max_webrtc_viewers // settings.workers))
    admission = Admission(
        admission_settings(settings, share=1 / settings.workers),
        admission_secrets(os.environ, os.environ.get("LAUNCHKIT_OPS_TOKEN", "")), edge_id=settings.edge_id,
    )
    app = create_edge_app(settings, capacity=admission.status, edges=admission.edges)
    admission.setup(app)
    app.add_routes(admission.routes())
    edge = app[EDGE]
    wall = edge_wall(settings, edge) if settings.redis else None  # the origin owns the posts; Redis carries them
    if wall is not None:
        wall.setup(app)
        app.add_routes(wall.routes())

    async def drain() -> None:
        edge.begin_drain()
        admission.begin_drain()
        if wall is not None:
            await wall.hub.close()  # wall clients reconnect (Last-Event-ID), and land on another edge

    return await serve(app, sock, access_log=settings.access_log, drain_seconds=settings.drain_seconds,
                       on_drain=drain, supervised=supervised, on_listening=on_listening)


def _announce(settings: EdgeSettings, generated: dict[str, str]) -> None:
    base = f"http://{authority(advertised(settings.host), settings.port)}"
    workers = (f"{settings.workers} processes on one port (SO_REUSEPORT)" if settings.workers > 1
               else "1 process")
    log.info("\n".join([
        f"Launchkit edge is up (SIGTERM or Ctrl-C drains for {settings.drain_seconds:g} s; Ctrl-C twice stops):",
        f"  landing page      {base}/",
        f"  HLS playlist      {base}/hls/index.m3u8",
        f"  status (JSON)     {base}/api/status",
        f"  metrics           {base}/metrics",
        f"  origin            {settings.origin}",
        f"  edge id           {settings.edge_id}",
        f"  workers           {workers}, cache {settings.cache_mb} MB each",
        *(f"  {name} (generated for this run; set {TOKEN_ENV['metrics']} to fix it): {value}"
          for name, value in generated.items()),
    ]))


def _settings_json(settings: EdgeSettings) -> bytes:
    return json.dumps(asdict(settings), default=str).encode()


def _settings_from_json(values: dict[str, Any]) -> EdgeSettings:
    values = {**values, "trusted_proxies": parse_networks(",".join(values.get("trusted_proxies") or ()))}
    return EdgeSettings(**values)


def _worker_main(index: str, ready_fd: str) -> None:
    """Entry point of a worker process (launchkit/serve/workers.py)."""
    async def serve_worker(values: dict[str, Any], sock: socket.socket, on_listening: Callable[[], None]) -> int:
        return await _serve(_settings_from_json(values), sock, supervised=True, on_listening=on_listening)

    worker_main(index, ready_fd, serve_worker)
