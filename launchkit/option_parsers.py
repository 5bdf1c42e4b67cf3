"""Parsers of option values: each takes the text of a command-line flag or a LAUNCHKIT_* variable
and returns the value, or raises ConfigError saying what is expected (launchkit/config.py declares
which option uses which)."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from landing.agenda import Agenda
from launchkit.edge.relay.upstream import parse_origin_url
from launchkit.web.clients import Network, parse_networks
from stream.ladder import Rendition
from stream.source.file import LoopedFile


class ConfigError(ValueError):
    """A bad option value; the message names the option and what is expected."""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class Bounded:
    """A number within [low, high]: parses an option's text, and checks a value given as a number
    (EdgeSettings built in code or read back by a worker)."""

    def __init__(self, kind: type[int] | type[float], low: float, high: float) -> None:
        self.kind, self.low, self.high = kind, low, high

    def __call__(self, text: str) -> Any:
        try:
            value = self.kind(text)
        except ValueError:
            raise ConfigError(f"expected {'a whole number' if self.kind is int else 'a number'}, got {text!r}") from None
        self._within(value)
        return value

    def check(self, value: float) -> None:
        self._within(value)

    def _within(self, value: float) -> None:
        if not self.low <= value <= self.high:
            raise ConfigError(f"expected {_number(self.low)}–{_number(self.high)}, got {_number(value)}")


class Limit(Bounded):
    """A whole number within [0, high] where 0 means "no limit", parsed as None."""

    def __init__(self, high: int) -> None:
        super().__init__(int, 0, high)

    def __call__(self, text: str) -> int | None:
        return super().__call__(text) or None

    def check(self, value: float) -> None:
        """A limit given as a number is one (None says "no limit")."""
        if not 1 <= value <= self.high:
            raise ConfigError(f"expected 1–{_number(self.high)}, got {_number(value)}")


def bounded_int(low: int, high: int) -> Bounded:
    return Bounded(int, low, high)


def bounded_float(low: float, high: float) -> Bounded:
    return Bounded(float, low, high)


_RENDITION = re.compile(r"^([a-z0-9_-]{1,32}):(\d{2,4})x(\d{2,4}):(\d{2,5})$")


MAX_RENDITIONS = 6


def ladder(text: str) -> tuple[Rendition, ...]:
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


def image_path(text: str) -> Path | None:
    if not text:
        return None
    path = Path(text)
    if not path.is_file():
        raise ConfigError(f"no such image file: {text}")
    return path


def bounded_text(max_length: int) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if len(text) > max_length:
            raise ConfigError(f"expected at most {max_length} characters, got {len(text)}")
        if any(ord(c) < 32 for c in text):
            raise ConfigError("control characters are not allowed")
        return text

    return parse


def host_name(text: str) -> str:
    if not text or len(text) > 253 or any(c.isspace() for c in text):
        raise ConfigError(f"expected a host name or IP address, got {text!r}")
    return text


def choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ConfigError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text.lower()

    return parse


def flag(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"expected true or false, got {text!r}")


def port_or_off(text: str) -> int | None:
    if text.lower() == "off":
        return None
    return bounded_int(0, 65535)(text)


def start_time(text: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"expected an ISO 8601 time such as 2026-12-01T14:00:00+01:00, got {text!r}") from None
    if value.tzinfo is None:
        raise ConfigError(f"give the start time with its UTC offset (e.g. {text}+01:00 or {text}Z)")
    return value


def local_source(text: str) -> str | None:
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


def directory(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{text} exists and is not a directory")
    return path


def part_duration(text: str) -> float | None:
    return None if text.lower() == "auto" else bounded_float(0.01, 10.0)(text)


def networks(text: str) -> tuple[Network, ...]:
    try:
        return parse_networks(text)
    except ValueError as error:
        raise ConfigError(str(error)) from None


_WEBRTC_RENDITION = re.compile(r"^(\d{2,4})x(\d{2,4}):(\d{2,5})$")


def webrtc_rendition(text: str) -> Rendition | None:
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


def turn_urls(text: str) -> tuple[str, ...]:
    urls = comma_list(text)
    for url in urls:
        if not re.match(r"^turns?:[A-Za-z0-9.:\[\]-]+(\?transport=(udp|tcp))?$", url):
            raise ConfigError(f"expected turn: or turns: URLs (e.g. turn:turn.example.org:3478?transport=tcp), "
                              f"got {url!r}")
    return urls


def origin_url(text: str) -> str:
    try:
        return parse_origin_url(text)
    except ValueError as error:
        raise ConfigError(str(error)) from None


viewer_limit = Limit(10_000_000)


def comma_list(text: str) -> tuple[str, ...]:
    """Comma-separated values, blanks dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def mastodon_timelines(text: str) -> tuple[str, ...]:
    from launchkit.wall.connectors.mastodon import TagTimeline  # the wall validates its own syntax

    timelines = comma_list(text)
    for timeline in timelines:
        try:
            TagTimeline.parse(timeline)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    return timelines


def feed_urls(text: str) -> tuple[str, ...]:
    urls = comma_list(text)
    for url in urls:
        if not re.match(r"^https?://[^\s/]+", url):
            raise ConfigError(f"expected http(s) URLs separated by commas, got {url!r}")
    return urls


def agenda_file(text: str) -> Agenda:
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


def image_url(text: str) -> str:
    if text and not re.match(r"^https?://[^\s\"<>]+$", text):
        raise ConfigError(f"expected an absolute http(s) URL, got {text!r}")
    return text


# CSP source expressions: *, 'self', 'none', or scheme/host sources (https://news.example.org, https://*.example.com).
_FRAME_SOURCE = re.compile(r"^(\*|'self'|'none'|[a-z][a-z0-9+.-]*:|([a-z][a-z0-9+.-]*://)?[a-z0-9*.-]+(:[0-9*]+)?)$")


def frame_ancestors(text: str) -> str:
    sources = text.split()
    if not sources or any(not _FRAME_SOURCE.match(source.lower()) for source in sources):
        raise ConfigError(f"expected CSP sources separated by spaces (*, 'self', 'none', https://news.example.org), "
                          f"got {text!r}")
    return " ".join(sources)
