"""Configuration: every option of every role, its validation, and its LAUNCHKIT_* variable.

Options are declared once here; the CLI builds its parsers from these declarations, so
`--help`, environment variables and validation can never drift apart.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from landing.agenda import Agenda
from launchkit.web.clients import Network, parse_networks
from stream.ladder import DEFAULT_LADDER, Rendition
from stream.packager.hls import part_frames
from stream.relay.upstream import parse_origin_url
from stream.source.file import LoopedFile
from stream.source.slate import DEFAULT_TEXT

ENV_PREFIX = "LAUNCHKIT_"


class ConfigError(ValueError):
    """A bad option value; the message names the option and what is expected."""


def env_name(option: str) -> str:
    return ENV_PREFIX + option.upper().replace("-", "_")


def _bounded(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], Any]:
    noun = "a whole number" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ConfigError(f"expected {noun}, got {text!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"expected {low:g}–{high:g}, got {value:g}")
        return value

    return parse


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    return _bounded(int, low, high)


def _bounded_float(low: float, high: float) -> Callable[[str], float]:
    return _bounded(float, low, high)


_RENDITION = re.compile(r"^([a-z0-9_-]{1,32}):(\d{2,4})x(\d{2,4}):(\d{2,5})$")
MAX_RENDITIONS = 6


def _ladder(text: str) -> tuple[Rendition, ...]:
    """`name:WxH:kbps,...`, largest first, e.g. `720p:1280x720:3000,360p:640x360:600`."""
    renditions = []
    for item in text.split(","):
        match = _RENDITION.match(item.strip())
        if not match:
            raise ConfigError(f"expected name:WIDTHxHEIGHT:KBPS items separated by commas, got {item.strip()!r}")
        name, width, height, kbps = match.group(1), *map(int, match.groups()[1:])
        if width % 2 or height % 2 or not (64 <= width <= 3840 and 64 <= height <= 2160):
            raise ConfigError(f"{name}: size must be even and within 64x64–3840x2160, got {width}x{height}")
        if not 100 <= kbps <= 50_000:
            raise ConfigError(f"{name}: bitrate must be 100–50000 kbit/s, got {kbps}")
        renditions.append(Rendition(name, width, height, kbps * 1000))
    if len(renditions) > MAX_RENDITIONS:
        raise ConfigError(f"at most {MAX_RENDITIONS} renditions, got {len(renditions)}")
    if len({r.name for r in renditions}) != len(renditions):
        raise ConfigError("rendition names must be unique")
    if any(a.width * a.height < b.width * b.height for a, b in zip(renditions, renditions[1:])):
        raise ConfigError("list renditions from the largest to the smallest")
    return tuple(renditions)


def _image_path(text: str) -> Path | None:
    if not text:
        return None
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"no such image file: {text}")
    return path


def _text(max_length: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if len(text) > max_length:
            raise ConfigError(f"expected at most {max_length} characters, got {len(text)}")
        if any(ord(c) < 32 for c in text):
            raise ConfigError("control characters are not allowed")
        return text

    return parse


def _host(text: str) -> str:
    if not text or len(text) > 253 or any(c.isspace() for c in text):
        raise ConfigError(f"expected a host name or IP address, got {text!r}")
    return text


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ConfigError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text.lower()

    return parse


def _flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"expected true or false, got {text!r}")


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


def _port_or_off(text: str) -> int | None:
    if text.lower() == "off":
        return None
    return _bounded_int(0, 65535)(text)


def _start_time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"expected an ISO 8601 time such as 2026-12-01T14:00:00+01:00, got {text!r}") from None
    if value.tzinfo is None:
        raise ConfigError(f"give the start time with its UTC offset (e.g. {text}+01:00 or {text}Z)")
    return value


def _local_source(text: str) -> str | None:
    """`testcard`, a media file to loop, or `none`."""
    if text.lower() in ("", "none"):
        return None
    if text.lower() == "testcard":
        return "testcard"
    try:
        LoopedFile(Path(text))  # opens and probes the file now, so a bad one fails at startup
    except ValueError as error:
        raise ConfigError(f"expected testcard, none or a playable media file: {error}") from None
    return text


def _directory(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{text} exists and is not a directory")
    return path


def _part_duration(text: str) -> float | None:
    return None if text.lower() == "auto" else _bounded_float(0.01, 10.0)(text)


def _show_port(port: int | None) -> str:
    return "off" if port is None else str(port)


def _networks(text: str) -> tuple[Network, ...]:
    try:
        return parse_networks(text)
    except ValueError as error:
        raise ConfigError(str(error)) from None


SERVER_OPTIONS = (
    Option("host", _host, "127.0.0.1", "address to listen on", "ADDR"),
    Option("port", _bounded_int(0, 65535), 8080, "HTTP port (0 picks a free one)", "PORT"),
    Option("log-level", _choice("debug", "info", "warning", "error"), "info", "log verbosity: debug, info, warning, error", "LEVEL"),
    Option("access-log", _flag, False, "log every HTTP request", is_flag=True),
    Option("trusted-proxies", _networks, (), "proxies (CIDRs or addresses, separated by commas) whose "
           "X-Forwarded-For and X-Forwarded-Proto are believed: the ingress controller, load balancer or CDN in "
           "front", "CIDRS", show=lambda networks: ",".join(map(str, networks)) or "none"),
)

_WEBRTC_RENDITION = re.compile(r"^(\d{2,4})x(\d{2,4}):(\d{2,5})$")
DEFAULT_WEBRTC = Rendition("webrtc", 640, 360, 800_000)


def _webrtc(text: str) -> Rendition | None:
    """`WIDTHxHEIGHT:KBPS` or `off`."""
    if text.strip().lower() == "off":
        return None
    match = _WEBRTC_RENDITION.match(text.strip())
    if not match:
        raise ConfigError(f"expected WIDTHxHEIGHT:KBPS (e.g. 640x360:800) or off, got {text.strip()!r}")
    width, height, kbps = map(int, match.groups())
    if width % 2 or height % 2 or not (64 <= width <= 1920 and 64 <= height <= 1080):
        raise ConfigError(f"size must be even and within 64x64–1920x1080, got {width}x{height}")
    if not 100 <= kbps <= 10_000:
        raise ConfigError(f"bitrate must be 100–10000 kbit/s, got {kbps}")
    return Rendition("webrtc", width, height, kbps * 1000)


EVENT_OPTIONS = (
    Option("title", _text(200), "Launchkit demo", "event title shown on the landing page", "TEXT"),
    Option("description", _text(2000), "A live test card: moving picture, wall clock, frame counter and a 1 kHz tone.",
           "event description shown on the landing page", "TEXT"),
)

MEDIA_OPTIONS = (
    Option("ladder", _ladder, DEFAULT_LADDER,
           "renditions as name:WIDTHxHEIGHT:KBPS, largest first; the first sets the program size", "LIST",
           show=lambda ladder: ",".join(f"{r.name}:{r.width}x{r.height}:{r.bitrate // 1000}" for r in ladder)),
    Option("fps", _bounded_int(1, 60), 30, "frames per second", "N"),
    Option("audio-bitrate", _bounded_int(32, 320), 128, "AAC bitrate in kbit/s", "KBPS"),
    Option("segment-duration", _bounded_float(1.0, 10.0), 2.0, "HLS segment duration in seconds (= GOP length)", "S"),
    Option("playlist-window", _bounded_int(3, 60), 6, "segments listed in each media playlist", "N"),
    Option("part-duration", _part_duration, None, "LL-HLS part duration in seconds: whole frames, dividing the "
           "segment; auto picks the longest part up to 0.5 s", "S", show=lambda value: f"{value:g}" if value else "auto"),
    Option("slate-text", _text(200), DEFAULT_TEXT, "text of the standby card shown while no publisher is live", "TEXT"),
    Option("slate-image", _image_path, None, "background image of the standby card (PNG/JPEG)", "PATH",
           show=lambda path: str(path) if path else "a plain dark card"),
    Option("stall-timeout", _bounded_float(0.1, 10.0), 0.5, "seconds without ingest frames before the slate takes over", "S"),
    Option("webrtc", _webrtc, DEFAULT_WEBRTC, "the WebRTC rendition for WHEP viewers (H.264 Constrained Baseline + "
           "Opus, encoded once) as WIDTHxHEIGHT:KBPS, or off", "SPEC",
           show=lambda r: f"{r.width}x{r.height}:{r.bitrate // 1000}" if r else "off"),
)

def _turn_urls(text: str) -> tuple[str, ...]:
    urls = _list(text)
    for url in urls:
        if not re.match(r"^turns?:[A-Za-z0-9.:\[\]-]+(\?transport=(udp|tcp))?$", url):
            raise ConfigError(f"expected turn: or turns: URLs (e.g. turn:turn.example.org:3478?transport=tcp), "
                              f"got {url!r}")
    return urls


WEBRTC_OPTIONS = (
    Option("max-webrtc-viewers", _bounded_int(0, 100_000), 100, "WHEP viewers this server sends WebRTC to; beyond, "
           "503 + Retry-After and the page plays LL-HLS (0: no WebRTC viewers)", "N"),
    Option("turn-urls", _turn_urls, (), "TURN servers WHEP viewers may relay through (turn:HOST:PORT?transport=tcp, "
           "turns:HOST:5349), separated by commas; credentials are signed with LAUNCHKIT_TURN_SECRET", "LIST",
           show=lambda urls: ",".join(urls) or "none"),
    Option("turn-credential-ttl", _bounded_int(60, 7 * 86400), 600, "seconds a viewer's TURN credential may start a "
           "relay (coturn checks it when the relay is allocated; an established relay lasts as long as the viewing)",
           "S"),
)

ORIGIN_OPTIONS = (
    Option("rtmp-port", _port_or_off, 1935, "RTMP ingest port (rtmp://HOST:PORT/live/<publish token>); off disables",
           "PORT", show=_show_port),
    Option("srt-port", _port_or_off, 8890, "SRT ingest port (caller mode, passphrase = publish token); off disables",
           "PORT", show=_show_port),
    Option("public-host", _text(253), "", "host name publishers and viewers use, for the URLs the console shows "
           "(default: --host)", "HOST"),
    Option("data-dir", _directory, Path("launchkit-data"), "where event state and recordings are kept", "DIR"),
    Option("start-at", _start_time, None, "announced start time (ISO 8601 with UTC offset): the page counts down to it",
           "TIME", show=lambda value: value.isoformat() if value else "not announced"),
    Option("source", _local_source, None, "local primary source: testcard, a media file to loop, or none",
           "SOURCE", show=lambda value: value or "none"),
    Option("backup-source", _local_source, None, "local backup source shown instead of the slate: testcard, a file, or none",
           "SOURCE", show=lambda value: value or "none"),
)

def _origin_url(text: str) -> str:
    try:
        return parse_origin_url(text)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _max_viewers(text: str) -> int | None:
    value = _bounded_int(0, 10_000_000)(text)
    return value or None


EDGE_ONLY_OPTIONS = (
    Option("origin", _origin_url, "http://127.0.0.1:8080", "upstream to pull from: the origin, or another edge",
           "URL"),
    Option("workers", _bounded_int(1, 64), 1, "edge processes sharing the port (SO_REUSEPORT); each coalesces on its own",
           "N"),
    Option("cache-mb", _bounded_int(1, 1_048_576), 256, "memory budget of the edge cache (LRU)", "MB"),
    Option("max-object-mb", _bounded_int(1, 1024), 32, "larger objects are streamed through, not cached", "MB"),
    Option("upstream-timeout", _bounded_float(0.1, 120), 5.0, "seconds for one upstream fetch (blocking LL-HLS "
           "requests get three target durations more)", "S"),
    Option("origin-grace", _bounded_float(0, 3600), 10.0, "seconds the edge stays ready with the origin unreachable",
           "S"),
    Option("drain-seconds", _bounded_float(0, 3600), 20.0, "on SIGTERM: seconds to keep serving while readiness is off",
           "S"),
)

ADMISSION_OPTIONS = (
    Option("max-viewers", _max_viewers, None, "viewers this server admits; beyond, new viewers wait in the waiting "
           "room (0: unlimited)", "N", show=lambda value: str(value) if value else "unlimited"),
    Option("max-egress-mbps", _bounded_float(0, 1_000_000), 0.0, "egress this server admits viewers up to, Mbit/s "
           "(0: no limit)", "MBPS"),
    Option("max-loop-lag-ms", _bounded_int(0, 10_000), 100, "admit nobody new while the event loop lags more than "
           "this for a second in a row (one spike does not count; 0: off)", "MS"),
    Option("ticket-ttl", _bounded_float(10, 3600), 60.0, "admission ticket lifetime, renewed while the viewer plays",
           "S"),
    Option("retry-after", _bounded_int(1, 600), 5, "base Retry-After of the waiting room", "S"),
    Option("retry-jitter", _bounded_int(0, 600), 5, "largest random seconds added to Retry-After", "S"),
    Option("redis", _text(500), "", "Redis URL shared by edges: waiting room, viewer count, edge registry "
           "(default: this process only)", "URL"),
    Option("advertise-url", _text(253), "", "URL viewers reach this server at (the recommended edge in /api/status)",
           "URL"),
)

def _list(text: str) -> tuple[str, ...]:
    """Comma-separated values, blanks dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _show_list(values: tuple[str, ...]) -> str:
    return ",".join(values) or "none"


def _mastodon_timelines(text: str) -> tuple[str, ...]:
    from launchkit.wall.connectors.mastodon import TagTimeline  # the wall validates its own syntax

    timelines = _list(text)
    for timeline in timelines:
        try:
            TagTimeline.parse(timeline)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    return timelines


def _feed_urls(text: str) -> tuple[str, ...]:
    urls = _list(text)
    for url in urls:
        if not re.match(r"^https?://[^\s/]+", url):
            raise ConfigError(f"expected http(s) URLs separated by commas, got {url!r}")
    return urls


WALL_RATE_OPTIONS = (
    Option("wall-posts-per-minute", _bounded_float(0.1, 600), 6.0, "wall posts (comments, questions) one client may "
           "send per minute, sustained", "N"),
    Option("wall-burst", _bounded_int(1, 100), 3, "wall posts one client may send back to back", "N"),
)

WALL_OPTIONS = (
    Option("wall-moderation", _choice("manual", "auto"), "manual", "wall moderation: manual (a moderator approves "
           "every post) or auto (approved unless blocked)", "MODE"),
    Option("wall-mastodon", _mastodon_timelines, (), "Mastodon hashtag timelines shown on the wall, as "
           "https://INSTANCE#TAG separated by commas", "LIST", show=_show_list),
    Option("wall-feeds", _feed_urls, (), "RSS/Atom feed URLs shown on the wall, separated by commas", "LIST",
           show=_show_list),
    Option("wall-allow", _list, (), "trusted authors approved without moderation (e.g. mastodon:press@example.org), "
           "separated by commas", "LIST", show=_show_list),
    Option("wall-block-accounts", _list, (), "authors whose posts are rejected, separated by commas", "LIST",
           show=_show_list),
    Option("wall-block-words", _list, (), "words that get a post rejected, separated by commas", "LIST",
           show=_show_list),
) + WALL_RATE_OPTIONS


def _agenda(text: str) -> Agenda:
    if not text:
        return Agenda()
    try:
        return Agenda.load(Path(text))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def captions_url(text: str) -> str:
    """A WebVTT file: an absolute http(s) URL or a path on this server."""
    if text and not re.match(r"^(https?://|/)[^\s\"<>]+$", text):
        raise ConfigError(f"expected an http(s) URL or a /path of a WebVTT file, got {text!r}")
    return text


def language_tag(text: str) -> str:
    if not re.match(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$", text):
        raise ConfigError(f"expected a BCP 47 language tag such as en or fr-CA, got {text!r}")
    return text


def _image_url(text: str) -> str:
    if text and not re.match(r"^https?://[^\s\"<>]+$", text):
        raise ConfigError(f"expected an absolute http(s) URL, got {text!r}")
    return text


# CSP source expressions: *, 'self', 'none', or scheme/host sources (https://news.example.org, https://*.example.com).
_FRAME_SOURCE = re.compile(r"^(\*|'self'|'none'|[a-z][a-z0-9+.-]*:|([a-z][a-z0-9+.-]*://)?[a-z0-9*.-]+(:[0-9*]+)?)$")


def _frame_ancestors(text: str) -> str:
    sources = text.split()
    if not sources or any(not _FRAME_SOURCE.match(source.lower()) for source in sources):
        raise ConfigError(f"expected CSP sources separated by spaces (*, 'self', 'none', https://news.example.org), "
                          f"got {text!r}")
    return " ".join(sources)


PAGE_OPTIONS = (
    Option("agenda", _agenda, Agenda(), "JSON file with the speakers and the agenda shown on the landing page",
           "PATH", show=lambda agenda: "none" if not agenda else "loaded"),
    Option("og-image", _image_url, "", "absolute URL of the image shared links preview with (OpenGraph, Twitter "
           "card; 1200x630)", "URL", show=lambda url: url or "the built-in card"),
    Option("captions", captions_url, "", "WebVTT captions file for the player (a <track>; CORS-enabled if on "
           "another host)", "URL", show=lambda url: url or "none"),
    Option("captions-lang", language_tag, "en", "language of the captions (BCP 47)", "LANG"),
)

EMBED_OPTIONS = (
    Option("frame-ancestors", _frame_ancestors, "*", "sites allowed to embed /embed in an iframe, as CSP "
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
        if self.public_host:
            return self.public_host
        return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)

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
