"""Configuration: every option of every role, its parser (launchkit/option_parsers.py), and its
LAUNCHKIT_* variable.

Options are declared once here; the CLI builds its parsers from these declarations, and edge
settings built in code are checked against the same bounds, so `--help`, environment variables
and validation can never drift apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from landing.agenda import Agenda
from launchkit.option_parsers import (
    ConfigError,
    agenda_file,
    bounded_float,
    bounded_int,
    bounded_text,
    captions_url,
    choice,
    comma_list,
    directory,
    feed_urls,
    flag,
    frame_ancestors,
    host_name,
    image_path,
    image_url,
    ladder,
    language_tag,
    local_source,
    mastodon_timelines,
    networks,
    origin_url,
    part_duration,
    port_or_off,
    start_time,
    turn_urls,
    viewer_limit,
    webrtc_rendition,
)
from launchkit.serve.listening import advertised
from launchkit.web.clients import Network
from stream.ladder import DEFAULT_LADDER, Rendition
from stream.packager.hls import part_frames
from stream.source.slate import DEFAULT_TEXT

ENV_PREFIX = "LAUNCHKIT_"


def env_name(option: str) -> str:
    return ENV_PREFIX + option.upper().replace("-", "_")


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    is_flag: bool = False
    show: Callable[[Any], str] = str


    @property
    def attribute(self) -> str:
        return self.name.replace("-", "_")


def _show_port(port: int | None) -> str:
    return "off" if port is None else str(port)


SERVER_OPTIONS = (
    Option("host", host_name, "127.0.0.1", "address to listen on", "ADDR"),
    Option("port", bounded_int(0, 65535), 8080, "HTTP port (0 picks a free one)", "PORT"),
    Option("log-level", choice("debug", "info", "warning", "error"), "info", "log verbosity: debug, info, warning, error", "LEVEL"),
    Option("access-log", flag, False, "log every HTTP request", is_flag=True),
    Option("trusted-proxies", networks, (), "proxies (CIDRs or addresses, separated by commas) whose "
           "X-Forwarded-For and X-Forwarded-Proto are believed: the ingress controller, load balancer or CDN in "
           "front", "CIDRS", show=lambda networks: ",".join(map(str, networks)) or "none"),
)

DEFAULT_WEBRTC = Rendition("webrtc", 640, 360, 800_000)


EVENT_OPTIONS = (
    Option("title", bounded_text(200), "Launchkit demo", "event title shown on the landing page", "TEXT"),
    Option("description", bounded_text(2000), "A live test card: moving picture, wall clock, frame counter and a 1 kHz tone.",
           "event description shown on the landing page", "TEXT"),
)

MEDIA_OPTIONS = (
    Option("ladder", ladder, DEFAULT_LADDER,
           "renditions as name:WIDTHxHEIGHT:KBPS, largest first; the first sets the program size", "LIST",
           show=lambda ladder: ",".join(f"{r.name}:{r.width}x{r.height}:{r.bitrate // 1000}" for r in ladder)),
    Option("fps", bounded_int(1, 60), 30, "frames per second", "N"),
    Option("audio-bitrate", bounded_int(32, 320), 128, "AAC bitrate in kbit/s", "KBPS"),
    Option("segment-duration", bounded_float(1.0, 10.0), 2.0, "HLS segment duration in seconds (= GOP length)", "S"),
    Option("playlist-window", bounded_int(3, 60), 6, "segments listed in each media playlist", "N"),
    Option("part-duration", part_duration, None, "LL-HLS part duration in seconds: whole frames, dividing the "
           "segment; auto picks the longest part up to 0.5 s", "S", show=lambda value: f"{value:g}" if value else "auto"),
    Option("slate-text", bounded_text(200), DEFAULT_TEXT, "text of the standby card shown while no publisher is live", "TEXT"),
    Option("slate-image", image_path, None, "background image of the standby card (PNG/JPEG)", "PATH",
           show=lambda path: str(path) if path else "a plain dark card"),
    Option("stall-timeout", bounded_float(0.1, 10.0), 0.5, "seconds without ingest frames before the slate takes over", "S"),
    Option("webrtc", webrtc_rendition, DEFAULT_WEBRTC, "the WebRTC rendition for WHEP viewers (H.264 Constrained Baseline + "
           "Opus, encoded once) as WIDTHxHEIGHT:KBPS, or off", "SPEC",
           show=lambda r: f"{r.width}x{r.height}:{r.bitrate // 1000}" if r else "off"),
)


WEBRTC_OPTIONS = (
    Option("max-webrtc-viewers", bounded_int(0, 100_000), 100, "WHEP viewers this server sends WebRTC to; beyond, "
           "503 + Retry-After and the page plays LL-HLS (0: no WebRTC viewers)", "N"),
    Option("turn-urls", turn_urls, (), "TURN servers WHEP viewers may relay through (turn:HOST:PORT?transport=tcp, "
           "turns:HOST:5349), separated by commas; credentials are signed with LAUNCHKIT_TURN_SECRET", "LIST",
           show=lambda urls: ",".join(urls) or "none"),
    Option("turn-credential-ttl", bounded_int(60, 7 * 86400), 600, "seconds a viewer's TURN credential may start a "
           "relay (coturn checks it when the relay is allocated; an established relay lasts as long as the viewing)",
           "S"),
)

ORIGIN_OPTIONS = (
    Option("rtmp-port", port_or_off, 1935, "RTMP ingest port (rtmp://HOST:PORT/live/<publish token>); off disables",
           "PORT", show=_show_port),
    Option("srt-port", port_or_off, 8890, "SRT ingest port (caller mode, passphrase = publish token); off disables",
           "PORT", show=_show_port),
    Option("public-host", bounded_text(253), "", "host name publishers and viewers use, for the URLs the console shows "
           "(default: --host)", "HOST"),
    Option("data-dir", directory, Path("launchkit-data"), "where event state and recordings are kept", "DIR"),
    Option("start-at", start_time, None, "announced start time (ISO 8601 with UTC offset): the page counts down to it",
           "TIME", show=lambda value: value.isoformat() if value else "not announced"),
    Option("source", local_source, None, "local primary source: testcard, a media file to loop, or none",
           "SOURCE", show=lambda value: value or "none"),
    Option("backup-source", local_source, None, "local backup source shown instead of the slate: testcard, a file, or none",
           "SOURCE", show=lambda value: value or "none"),
)


EDGE_ONLY_OPTIONS = (
    Option("origin", origin_url, "http://127.0.0.1:8080", "upstream to pull from: the origin, or another edge",
           "URL"),
    Option("workers", bounded_int(1, 64), 1, "edge processes sharing the port (SO_REUSEPORT); each coalesces on its own",
           "N"),
    Option("cache-mb", bounded_int(1, 1_048_576), 256, "memory budget of the edge cache (LRU)", "MB"),
    Option("max-object-mb", bounded_int(1, 1024), 32, "larger objects are streamed through, not cached", "MB"),
    Option("upstream-timeout", bounded_float(0.1, 120), 5.0, "seconds for one upstream fetch (blocking LL-HLS "
           "requests get three target durations more)", "S"),
    Option("origin-grace", bounded_float(0, 3600), 10.0, "seconds the edge stays ready with the origin unreachable",
           "S"),
    Option("drain-seconds", bounded_float(0, 3600), 20.0, "on SIGTERM: seconds to keep serving while readiness is off",
           "S"),
)

ADMISSION_OPTIONS = (
    Option("max-viewers", viewer_limit, None, "viewers this server admits; beyond, new viewers wait in the waiting "
           "room (0: unlimited)", "N", show=lambda value: str(value) if value else "unlimited"),
    Option("max-egress-mbps", bounded_float(0, 1_000_000), 0.0, "egress this server admits viewers up to, Mbit/s "
           "(0: no limit)", "MBPS"),
    Option("max-loop-lag-ms", bounded_int(0, 10_000), 100, "admit nobody new while the event loop lags more than "
           "this for a second in a row (one spike does not count; 0: off)", "MS"),
    Option("ticket-ttl", bounded_float(10, 3600), 60.0, "admission ticket lifetime, renewed while the viewer plays",
           "S"),
    Option("retry-after", bounded_int(1, 600), 5, "base Retry-After of the waiting room", "S"),
    Option("retry-jitter", bounded_int(0, 600), 5, "largest random seconds added to Retry-After", "S"),
    Option("redis", bounded_text(500), "", "Redis URL shared by edges: waiting room, viewer count, edge registry "
           "(default: this process only)", "URL"),
    Option("advertise-url", bounded_text(253), "", "URL viewers reach this server at (the recommended edge in /api/status)",
           "URL"),
)


def _show_list(values: tuple[str, ...]) -> str:
    return ",".join(values) or "none"


WALL_RATE_OPTIONS = (
    Option("wall-posts-per-minute", bounded_float(0.1, 600), 6.0, "wall posts (comments, questions) one client may "
           "send per minute, sustained", "N"),
    Option("wall-burst", bounded_int(1, 100), 3, "wall posts one client may send back to back", "N"),
)

WALL_OPTIONS = (
    Option("wall-moderation", choice("manual", "auto"), "manual", "wall moderation: manual (a moderator approves "
           "every post) or auto (approved unless blocked)", "MODE"),
    Option("wall-mastodon", mastodon_timelines, (), "Mastodon hashtag timelines shown on the wall, as "
           "https://INSTANCE#TAG separated by commas", "LIST", show=_show_list),
    Option("wall-feeds", feed_urls, (), "RSS/Atom feed URLs shown on the wall, separated by commas", "LIST",
           show=_show_list),
    Option("wall-allow", comma_list, (), "trusted authors approved without moderation (e.g. mastodon:press@example.org), "
           "separated by commas", "LIST", show=_show_list),
    Option("wall-block-accounts", comma_list, (), "authors whose posts are rejected, separated by commas", "LIST",
           show=_show_list),
    Option("wall-block-words", comma_list, (), "words that get a post rejected, separated by commas", "LIST",
           show=_show_list),
) + WALL_RATE_OPTIONS


PAGE_OPTIONS = (
    Option("agenda", agenda_file, Agenda(), "JSON file with the speakers and the agenda shown on the landing page",
           "PATH", show=lambda agenda: "none" if not agenda else "loaded"),
    Option("og-image", image_url, "", "absolute URL of the image shared links preview with (OpenGraph, Twitter "
           "card; 1200x630)", "URL", show=lambda url: url or "the built-in card"),
    Option("captions", captions_url, "", "WebVTT captions file for the player (a <track>; CORS-enabled if on "
           "another host)", "URL", show=lambda url: url or "none"),
    Option("captions-lang", language_tag, "en", "language of the captions (BCP 47)", "LANG"),
)

EMBED_OPTIONS = (
    Option("frame-ancestors", frame_ancestors, "*", "sites allowed to embed /embed in an iframe, as CSP "
           "frame-ancestors sources separated by spaces", "SOURCES"),
)

DEMO_OPTIONS = (SERVER_OPTIONS + EVENT_OPTIONS + PAGE_OPTIONS + EMBED_OPTIONS + MEDIA_OPTIONS + WEBRTC_OPTIONS
                + ADMISSION_OPTIONS + WALL_OPTIONS)
ORIGIN_OPTIONS = (SERVER_OPTIONS + EVENT_OPTIONS + PAGE_OPTIONS + EMBED_OPTIONS + MEDIA_OPTIONS + ORIGIN_OPTIONS
                  + WEBRTC_OPTIONS + ADMISSION_OPTIONS + WALL_OPTIONS)
# Edges render the page from the origin's /api/status; the wall's posts belong to the origin.
EDGE_OPTIONS = SERVER_OPTIONS + EDGE_ONLY_OPTIONS + EMBED_OPTIONS + WEBRTC_OPTIONS + ADMISSION_OPTIONS + WALL_RATE_OPTIONS
ALL_OPTIONS = ORIGIN_OPTIONS


@dataclass(frozen=True, slots=True)
class Config:
    """Every option of every role; a role's CLI exposes its subset, the rest keep their defaults."""

    role: str
    host: str
    port: int
    log_level: str
    access_log: bool
    trusted_proxies: tuple[Network, ...]
    title: str
    description: str
    ladder: tuple[Rendition, ...]
    fps: int
    audio_bitrate: int
    segment_duration: float
    playlist_window: int
    part_duration: float | None
    slate_text: str
    slate_image: Path | None
    stall_timeout: float
    webrtc: Rendition | None
    max_webrtc_viewers: int
    turn_urls: tuple[str, ...]
    turn_credential_ttl: int
    rtmp_port: int | None
    srt_port: int | None
    public_host: str
    data_dir: Path | None
    start_at: datetime | None
    source: str | None
    backup_source: str | None
    max_viewers: int | None
    max_egress_mbps: float
    max_loop_lag_ms: int
    ticket_ttl: float
    retry_after: int
    retry_jitter: int
    redis: str
    advertise_url: str
    agenda: Agenda
    og_image: str
    captions: str
    captions_lang: str
    frame_ancestors: str
    wall_moderation: str
    wall_mastodon: tuple[str, ...]
    wall_feeds: tuple[str, ...]
    wall_allow: tuple[str, ...]
    wall_block_accounts: tuple[str, ...]
    wall_block_words: tuple[str, ...]
    wall_posts_per_minute: float
    wall_burst: int

    def __post_init__(self) -> None:
        frames = self.fps * self.segment_duration
        if abs(frames - round(frames)) > 1e-6:
            raise ConfigError(
                f"--segment-duration {self.segment_duration:g} × --fps {self.fps} = {frames:g} frames: "
                "a segment must hold a whole number of frames"
            )
        if self.part_duration is not None:
            try:
                part_frames(self.part_duration, self.fps, self.segment_duration)
            except ValueError as error:
                raise ConfigError(f"--part-duration: {error}") from None

    @property
    def advertised_host(self) -> str:
        return self.public_host or advertised(self.host)

    @classmethod
    def for_role(cls, role: str, values: dict[str, Any]) -> Config:
        defaults = {option.attribute: option.default for option in ALL_OPTIONS}
        if role == "demo":
            # Everything in one process on this machine: the card stands in as the backup (so a
            # WHIP publisher from the console takes over as primary), no ingest ports, nothing
            # written to disk.
            defaults.update(backup_source="testcard", rtmp_port=None, srt_port=None, data_dir=None)
        merged = {**defaults, **values, "role": role}
        return cls(**{f.name: merged[f.name] for f in fields(cls)})


def env_defaults(options: tuple[Option, ...], environ: os._Environ[str] | dict[str, str]) -> dict[str, Any]:
    """Option values from LAUNCHKIT_* variables; raises ConfigError naming the variable."""
    values = {}
    for option in options:
        raw = environ.get(env_name(option.name))
        if raw is None:
            continue
        try:
            values[option.attribute] = option.parse(raw)
        except ConfigError as error:
            raise ConfigError(f"{env_name(option.name)}: {error}") from None
    return values
