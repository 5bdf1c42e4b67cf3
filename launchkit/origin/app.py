"""The origin's aiohttp application (roles demo and origin). This module is the one place where
the origin's public URL contract is routed and where its components' start and stop are ordered
(each registers a lifespan on `app.cleanup_ctx`: started in that order, stopped in the reverse)."""

from __future__ import annotations

import os

from aiohttp import web

from landing.app import LandingPage
from launchkit.admission import Admission, admission_secrets
from launchkit.admission.settings import from_options as admission_settings
from launchkit.admission.tickets import wall_identity_secret
from launchkit.auth import FailedCredentials, Tokens
from launchkit.config import Config
from launchkit.event import EventStore, State
from launchkit.origin.hls import HlsHandlers, ReplayHandlers
from launchkit.origin.media import Media
from launchkit.origin.ops import OpsConsole
from launchkit.origin.status import StatusHandlers
from launchkit.qoe import QoeBeacons
from launchkit.wall.service import Wall, WallSettings
from launchkit.web import middleware
from launchkit.web.clients import TrustedProxies
from launchkit.web.probes import Probes
from launchkit.web.routes import hls_routes
from launchkit.webrtc.ice import IceSettings

MEDIA = web.AppKey("media", Media)


def create_app(config: Config, tokens: Tokens, ice: IceSettings | None = None) -> web.Application:
    """Build the app for `config.role`. Call from inside the running event loop."""
    events = EventStore.open(config.data_dir, config.start_at, live=config.role == "demo")
    failures = FailedCredentials()  # one per process: guesses at every credential add up
    media = Media(config, tokens, failures, events, ice or IceSettings())
    ops = OpsConsole(config, tokens, failures, media)
    top = config.ladder[0]
    admission = Admission(
        admission_settings(config, viewer_mbps=(top.bitrate + config.audio_bitrate * 1000) * 1.1 / 1e6),
        admission_secrets(os.environ, tokens.ops), bypass=ops.is_operator,
    )
    hls = HlsHandlers(media.pipeline.hls, lambda request: events.event.state is State.LIVE or ops.is_operator(request))
    replay = ReplayHandlers(media.recorder, media.pipeline.hls, media.replay_available) if media.recorder else None
    status = StatusHandlers(config, media, hls.viewers, admission.status, admission.edges)
    landing = LandingPage(config, status, wall=True)
    wall = _wall(config, tokens, ops)

    trusted = TrustedProxies(config.trusted_proxies)
    app = web.Application(middlewares=[trusted.middleware, middleware.observe], client_max_size=64 * 1024)
    app[MEDIA] = media
    # Lifespans, stopped in the reverse order: the admission, then the wall's SSE streams and
    # connectors, stop before the media threads.
    app.cleanup_ctx.append(media.lifespan)
    wall.setup(app)
    admission.setup(app)
    app.add_routes(admission.routes())
    landing.setup(app)
    ops.setup(app)
    app.add_routes(wall.routes())
    app.on_response_prepare.append(middleware.count_response_bytes)
    app.add_routes([
        web.get("/", landing.index),
        web.get("/embed", landing.embed),
        landing.assets.route(),
        *status.routes(),
        *QoeBeacons().routes(),
        *media.whip_routes(),
        *hls_routes("/hls", hls.multivariant, hls.media_playlist, hls.media),
        *ops.routes(hls.multivariant, hls.media_playlist, hls.media),
        *Probes(tokens, failures, status.readiness, status.media_flowing).routes(),
        *media.viewer_routes(),
    ])
    if replay is not None:
        app.add_routes(hls_routes("/replay", replay.multivariant, replay.media_playlist, replay.media))
    return app


def _wall(config: Config, tokens: Tokens, ops: OpsConsole) -> Wall:
    return Wall(
        WallSettings(
            database=config.data_dir / "wall.sqlite3" if config.data_dir else None,
            moderation=config.wall_moderation, mastodon=config.wall_mastodon, feeds=config.wall_feeds,
            allow=config.wall_allow, block_accounts=config.wall_block_accounts, block_words=config.wall_block_words,
            posts_per_minute=config.wall_posts_per_minute, burst=config.wall_burst,
            webhook_secret=os.environ.get("LAUNCHKIT_WALL_WEBHOOK_SECRET", ""),
            redis_url=config.redis or None, identity_secret=wall_identity_secret(os.environ, tokens.ops),
        ),
        is_operator=ops.is_operator,
        require_operator=ops.require,
        page_context=lambda: {"title": config.title, "description": config.description},
    )
