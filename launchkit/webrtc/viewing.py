"""WebRTC viewing as one component, the same on the origin and on edges: the fan-out over a
WebRTC rendition bus, the WHEP endpoint, and the feed for edges below.

    viewing = WebRtcViewing(bus, keyframe_source, ice, max_viewers=100, live=lambda: ..., authorize_feed=...,
                            turn=TurnCredentials.from_env(turn_urls, turn_credential_ttl))
    app.add_routes(viewing.routes()); start() on startup, await stop() on cleanup

On the origin the bus is the pipeline's WebRTC bus and keyframes come from its encoder; on an
edge the bus is fed by a `FeedClient` and keyframe requests go up the feed. `turn` (None: no
TURN) signs the TURN credentials WHEP hands to viewers (launchkit/webrtc/turn.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from launchkit.webrtc.feed import FeedServer
from launchkit.webrtc.ice import IceSettings
from launchkit.webrtc.turn import TurnCredentials
from launchkit.webrtc.whep import WhepEndpoint
from stream.bus import PacketBus
from stream.webrtc.fanout import Fanout
from stream.webrtc.feed import PATH as FEED_PATH


class WebRtcViewing:
    def __init__(self, bus: PacketBus, keyframe_source: Callable[[], None], ice: IceSettings, *,
                 max_viewers: int, live: Callable[[], bool],
                 authorize_feed: Callable[[web.Request], Awaitable[None]],
                 turn: TurnCredentials | None = None) -> None:
        self.bus = bus
        self.fanout = Fanout(bus, keyframe_source)
        self.whep = WhepEndpoint(self.fanout, ice, max_viewers, live, turn)
        self.feed = FeedServer(bus, self.fanout.request_keyframe, authorize=authorize_feed, live=live)

    def routes(self) -> list[web.RouteDef]:
        return [*self.whep.routes("/whep"), web.get(FEED_PATH, self.feed.handle)]

    def status(self) -> dict:
        return self.whep.status()

    def start(self) -> None:
        self.fanout.start()

    async def stop(self) -> None:
        await self.whep.close()
        self.fanout.stop()
