"""`GET /api/webrtc/feed`: the WebRTC rendition for the edges below this server, in the feed's
messages (stream/webrtc/feed.py). A downstream that cannot keep up drops to the next keyframe,
like a slow viewer.

The feed is the whole rendition, so it is for edges only: the edge token (`Authorization: Bearer`)
is checked before the WebSocket opens, at most `max_downstreams` are served at once (503 beyond),
and no packet leaves while the event is not live (the embargo: before the start, a rehearsal on the
origin stays on the origin). A connected edge simply receives nothing until the event goes live.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from launchkit import metrics
from stream.bus import PacketBus
from stream.packet import EncodedPacket
from stream.webrtc.feed import KEYFRAME, encode

MAX_QUEUED = 60  # packets (about a second of video and audio) before a slow downstream is reset
MAX_DOWNSTREAMS = 1024  # edge processes one origin feeds (each costs a copy of the rendition's bitrate)


class FeedServer:
    """`GET /api/webrtc/feed`: this process's WebRTC rendition bus, for the edges below it.

    `authorize(request)` raises (an aiohttp answer or a Refusal) unless the request carries the edge
    credential; `live()` says whether packets may leave now."""

    def __init__(self, bus: PacketBus, request_keyframe: Callable[[str], None], *,
                 authorize: Callable[[web.Request], Awaitable[None]], live: Callable[[], bool],
                 max_downstreams: int = MAX_DOWNSTREAMS) -> None:
        self._bus = bus
        self._request_keyframe = request_keyframe
        self._authorize, self._live = authorize, live
        self._max_downstreams = max_downstreams
        self.downstreams = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await self._authorize(request)
        ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=1024)
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(text="this is a WebSocket endpoint (the WebRTC feed for edges)")
        if self.downstreams >= self._max_downstreams:
            raise web.HTTPServiceUnavailable(text=f"this server feeds {self._max_downstreams} edges already",
                                             headers={"Retry-After": "30"})
        await ws.prepare(request)
        queue: asyncio.Queue[EncodedPacket] = asyncio.Queue()
        resync = [True]  # start (and restart after a reset) at a keyframe

        def on_packet(packet: EncodedPacket) -> None:
            if not self._live():
                resync[0] = True  # the embargo: nothing leaves; resume at a keyframe once live
                return
            if resync[0] and not (packet.kind == "video" and packet.keyframe):
                return
            resync[0] = False
            if queue.qsize() >= MAX_QUEUED:
                while not queue.empty():
                    queue.get_nowait()
                resync[0] = True
                self._request_keyframe("downstream edge")
                return
            queue.put_nowait(packet)

        subscription = self._bus.subscribe(on_packet)
        self._request_keyframe("downstream edge")
        self.downstreams += 1
        metrics.WEBRTC_FEED_DOWNSTREAMS.set(self.downstreams)
        sender = asyncio.create_task(self._send(ws, queue))
        try:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT and message.data == KEYFRAME:
                    self._request_keyframe("downstream edge")
        finally:
            self.downstreams -= 1
            metrics.WEBRTC_FEED_DOWNSTREAMS.set(self.downstreams)
            subscription.close()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        return ws

    @staticmethod
    async def _send(ws: web.WebSocketResponse, queue: asyncio.Queue[EncodedPacket]) -> None:
        while not ws.closed:
            packet = await queue.get()
            try:
                await ws.send_bytes(encode(packet))
            except (ConnectionError, RuntimeError):
                return
