"""The origin's process: bind first, then start the app, serve until SIGINT/SIGTERM, then clean up.

Binding before the app starts means a busy port fails fast with nothing started; cleanup joins
every media thread, so the process exits promptly with no thread left behind.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from launchkit.auth import ENV as TOKEN_ENV
from launchkit.auth import Tokens
from launchkit.config import Config
from launchkit.origin.app import create_app
from launchkit.serve.lifecycle import serve
from launchkit.serve.listening import authority, listen
from launchkit.webrtc.ice import IceSettings

log = logging.getLogger("launchkit")


def run(config: Config, tokens: Tokens, ice: IceSettings) -> None:
    sock = listen(config.host, config.port)
    asyncio.run(_serve(sock, config, tokens, ice))


async def _serve(sock: socket.socket, config: Config, tokens: Tokens, ice: IceSettings) -> None:
    app = create_app(config, tokens, ice)
    await serve(app, sock, access_log=config.access_log,
                on_listening=lambda: _announce(config, tokens, sock.getsockname()[1]))


def _announce(config: Config, tokens: Tokens, port: int) -> None:
    base = f"http://{authority(config.advertised_host, port)}"
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
        lines.append(f"  RTMP ingest       rtmp://{authority(config.advertised_host, config.rtmp_port)}/live/<publish token>")
    if config.srt_port is not None:
        lines.append(f"  SRT ingest        srt://{authority(config.advertised_host, config.srt_port)}"
                     "?passphrase=<publish token>")
    if tokens.generated:
        # Printed once so a newcomer can use the console; production sets the variables. Only the
        # generated ones: a token from the environment is never written to a log.
        lines.append("  tokens generated for this run (set the variables to fix them):")
        lines += [f"    {name + ' token':<15} {getattr(tokens, name)}  ({TOKEN_ENV[name]})" for name in tokens.generated]
    log.info("\n".join(lines))
