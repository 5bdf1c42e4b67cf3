"""`launchkit edge` options as one immutable value, checked on construction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from launchkit.config import EDGE_OPTIONS
from launchkit.edge.relay.upstream import parse_origin_url
from launchkit.option_parsers import Bounded, ConfigError
from launchkit.web.clients import Network


@dataclass(frozen=True)
class EdgeSettings:
    """Every `launchkit edge` option (field names are the CLI option attributes) plus `edge_id`."""

    origin: str
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    cache_mb: int = 256
    max_object_mb: int = 32
    upstream_timeout: float = 5.0
    origin_grace: float = 10.0
    drain_seconds: float = 20.0
    negative_ttl: float = 0.5
    max_viewers: int | None = None
    max_webrtc_viewers: int = 100
    turn_urls: tuple[str, ...] = ()
    turn_credential_ttl: int = 600
    max_egress_mbps: float = 0.0
    max_loop_lag_ms: int = 100
    ticket_ttl: float = 60.0
    retry_after: int = 5
    retry_jitter: int = 5
    redis: str = ""
    advertise_url: str = ""
    log_level: str = "info"
    access_log: bool = False
    trusted_proxies: tuple[Network, ...] = ()
    frame_ancestors: str = "*"
    wall_posts_per_minute: float = 6.0
    wall_burst: int = 3
    edge_id: str = ""  # how upstreams see this edge (User-Agent, Via); run_edge sets HOST:PORT

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "origin", parse_origin_url(self.origin))
        except ValueError as error:
            raise ConfigError(f"--origin: {error}") from None
        # The bounds launchkit/config.py declares for the edge's options (the cache clamps
        # --max-object-mb to --cache-mb); --negative-ttl is not an option, its bounds are its own.
        for name, value, bounds in (*_declared(self), ("negative-ttl", self.negative_ttl, _NEGATIVE_TTL)):
            if value is not None:
                try:
                    bounds.check(value)
                except ConfigError as error:
                    raise ConfigError(f"--{name}: {error}") from None


_NEGATIVE_TTL = Bounded(float, 0, 10)


def _declared(settings: EdgeSettings) -> list[tuple[str, Any, Bounded]]:
    return [(option.name, getattr(settings, option.attribute), option.parse) for option in EDGE_OPTIONS
            if isinstance(option.parse, Bounded)]

