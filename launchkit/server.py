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

from launchkit.app import create_app
from launchkit.auth import ENV as TOKEN_ENV
from launchkit.auth import Tokens
from launchkit.config import Config
from launchkit.web import limits
from stream.webrtc.ice import IceSettings

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


def run(config: Config, tokens: Tokens, ice: IceSettings) -> None:
    limits.raise_open_file_limit()
    sock = listen(config.host, config.port)
    asyncio.run(_serve(sock, config, tokens, ice))


async def _serve(sock: socket.socket, config: Config, tokens: Tokens, ice: IceSettings) -> None:
    app = create_app(config, tokens, ice)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE, keepalive_timeout=limits.IDLE_TIMEOUT,
        access_log=logging.getLogger("launchkit.access") if config.access_log else None,
    )
    try:
        await runner.setup()  # starts ingest listeners too: a busy RTMP port fails here
    except OSError as error:
        await runner.cleanup()
        raise ListenError(error.strerror or str(error)) from None
    try:
        await web.SockSite(runner, sock, backlog=1024).start()  # SockSite listens again: its default is 128
        _announce(config, tokens, sock.getsockname()[1])
        await stopping.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
    log.info("stopped")


def _announce(config: Config, tokens: Tokens, port: int) -> None:
    base = f"http://{_authority(config.advertised_host, port)}"
    lines = [
        f"Launchkit {config.role} is up (Ctrl-C stops it):",
        f"  landing page      {base}/",
        f"  HLS playlist      {base}/hls/index.m3u8",
        f"  status (JSON)     {base}/api/status",
        f"  operator console  {base}/ops",
        f"  metrics           {base}/metrics",
        f"  WHIP ingest       {base}/whip  (Authorization: Bearer <publish token>)",
    ]
    if config.rtmp_port is not None:
        lines.append(f"  RTMP ingest       rtmp://{_authority(config.advertised_host, config.rtmp_port)}/live/<publish token>")
    if config.srt_port is not None:
        lines.append(f"  SRT ingest        srt://{_authority(config.advertised_host, config.srt_port)}"
                     "?passphrase=<publish token>")
    if tokens.generated:
        # Printed once so a newcomer can use the console; production sets the variables. Only the
        # generated ones: a token from the environment is never written to a log.
        lines.append("  tokens generated for this run (set the variables to fix them):")
        lines += [f"    {name + ' token':<15} {getattr(tokens, name)}  ({TOKEN_ENV[name]})" for name in tokens.generated]
    log.info("\n".join(lines))
