"""Process lifecycle: bind first, then start the app, serve until SIGINT/SIGTERM, then clean up.

Binding before the app starts means a busy port fails fast with nothing started; cleanup joins
every media thread, so the process exits promptly with no thread left behind.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket

from aiohttp import web

from launchkit.app import create_demo_app
from launchkit.config import DemoConfig

log = logging.getLogger("launchkit")

# Seconds given to in-flight requests at shutdown; media threads get the rest of a 2 s budget.
SHUTDOWN_GRACE = 0.5


class ListenError(RuntimeError):
    pass


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=1024)
    except OSError as error:
        reason = "address already in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
        raise ListenError(f"cannot listen on {_authority(host, port)}: {reason}") from None


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def run_demo(config: DemoConfig) -> None:
    sock = listen(config.host, config.port)
    asyncio.run(_serve(sock, config))


async def _serve(sock: socket.socket, config: DemoConfig) -> None:
    app = create_demo_app(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE,
        access_log=logging.getLogger("launchkit.access") if config.access_log else None,
    )
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        _announce(config, sock.getsockname()[1])
        await stopping.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
    log.info("stopped")


def _announce(config: DemoConfig, port: int) -> None:
    host = config.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    base = f"http://{_authority(host, port)}"
    log.info(
        "Launchkit demo is up (Ctrl-C stops it):\n"
        "  landing page   %s/\n"
        "  HLS playlist   %s/hls/index.m3u8\n"
        "  status (JSON)  %s/api/status\n"
        "  metrics        %s/metrics",
        base, base, base, base,
    )
