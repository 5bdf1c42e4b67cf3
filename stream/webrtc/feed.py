"""The WebRTC rendition between servers: an origin (or an edge) streams its encoded packets over
one WebSocket (`GET /api/webrtc/feed`) to each edge below it, which republishes them on its own
bus for its WHEP viewers (and for edges below it: tiers). One upstream stream per edge, whatever
its WHEP audience; the packets are the encoder's own, never re-encoded.

Messages: binary, one encoded packet each (`HEADER` then the payload); from the edge, the text
message `keyframe` asks upstream for a keyframe (the upstream's fan-out rate-limits it like a PLI).
The serving side (the edge credential, the embargo, slow downstreams) belongs to the server.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from fractions import Fraction

import aiohttp

from stream import telemetry
from stream.bus import PacketBus
from stream.packet import EncodedPacket

log = logging.getLogger(__name__)

PATH = "/api/webrtc/feed"
HEADER = struct.Struct("!BBqqIIId")  # kind, keyframe, pts, dts, duration, time base num/den, wallclock
KINDS = ("video", "audio")
RENDITIONS = {"video": "webrtc", "audio": "opus"}
KEYFRAME = "keyframe"
MAX_MESSAGE = 4 * 1024 * 1024  # one access unit; far above a 720p keyframe
RECONNECT_DELAYS = (0.5, 1.0, 2.0, 5.0)
REFUSED_DELAY = 30.0  # seconds before trying again a credential the upstream refused


def encode(packet: EncodedPacket) -> bytes:
    return HEADER.pack(KINDS.index(packet.kind), packet.keyframe, packet.pts, packet.dts, packet.duration,
                       packet.time_base.numerator, packet.time_base.denominator, packet.wallclock) + packet.data


def decode(message: bytes) -> EncodedPacket:
    """Raises ValueError on anything that is not a packet of ours."""
    if len(message) < HEADER.size:
        raise ValueError("short feed message")
    kind, keyframe, pts, dts, duration, num, den, wallclock = HEADER.unpack_from(message)
    if kind >= len(KINDS) or not num or not den:
        raise ValueError("bad feed header")
    name = KINDS[kind]
    return EncodedPacket(kind=name, rendition=RENDITIONS[name], data=message[HEADER.size:], pts=pts, dts=dts,
                         duration=duration, time_base=Fraction(num, den), keyframe=bool(keyframe), wallclock=wallclock)


class FeedClient:
    """An edge's one connection to its upstream's feed, republished on `bus`; reconnects by itself."""

    def __init__(self, upstream_url: str, bus: PacketBus, token: str, *, user_agent: str) -> None:
        self.url = upstream_url.rstrip("/") + PATH
        self._bus = bus
        self._user_agent = user_agent
        self._token = token
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.packets = 0
        self._connected_gauge = telemetry.gauge("webrtc_feed_connected")

    def start(self) -> None:
        self._connected_gauge.set(0)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def request_keyframe(self) -> None:
        """The edge's fan-out asks (already rate-limited): pass it up if connected."""
        if self._ws is not None and not self._ws.closed:
            asyncio.create_task(self._send_keyframe(self._ws))

    @staticmethod
    async def _send_keyframe(ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            await ws.send_str(KEYFRAME)
        except (ConnectionError, RuntimeError):
            pass

    async def _run(self) -> None:
        failures = 0
        headers = {"User-Agent": self._user_agent, "Authorization": f"Bearer {self._token}"}
        async with aiohttp.ClientSession(headers=headers, trust_env=False) as session:
            while True:
                delay = RECONNECT_DELAYS[min(failures, len(RECONNECT_DELAYS) - 1)]
                try:
                    async with session.ws_connect(self.url, heartbeat=10.0, max_msg_size=MAX_MESSAGE,
                                                  timeout=aiohttp.ClientWSTimeout(ws_close=2.0)) as ws:
                        self._connected(ws)
                        failures = 0
                        await self._receive(ws)
                except aiohttp.WSServerHandshakeError as error:
                    if error.status in (401, 403, 429):
                        log.error("the upstream at %s refused this edge's credential (HTTP %d): set "
                                  "LAUNCHKIT_EDGE_TOKEN to the origin's; retrying in %g s", self.url, error.status,
                                  REFUSED_DELAY)
                        delay = REFUSED_DELAY
                    elif failures == 0:
                        log.info("WebRTC feed from %s unavailable (HTTP %d): retrying", self.url, error.status)
                except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as error:
                    if failures == 0:
                        log.info("WebRTC feed from %s unavailable (%s): retrying", self.url, error or type(error).__name__)
                finally:
                    self._disconnected()
                await asyncio.sleep(delay)
                failures += 1

    def _connected(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws, self.connected = ws, True
        self._connected_gauge.set(1)
        log.info("WebRTC feed connected to %s", self.url)

    def _disconnected(self) -> None:
        if self.connected:
            log.info("WebRTC feed from %s lost", self.url)
        self._ws, self.connected = None, False
        self._connected_gauge.set(0)

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                continue
            try:
                packet = decode(message.data)
            except ValueError as error:
                log.warning("WebRTC feed from %s sent garbage (%s): reconnecting", self.url, error)
                return
            self.packets += 1
            self._bus.publish((packet,))
