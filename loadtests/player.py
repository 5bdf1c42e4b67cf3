"""Simulated HLS / LL-HLS viewers that behave like hls.js, not like wrk, and a swarm of them.

A `Player` is one viewer: it loads the multivariant playlist, picks a rendition (the top one, a
named one, or the best under a bandwidth budget), loads the media playlist and starts where a real
player starts (RFC 8216bis §6.3.3: three target durations or HOLD-BACK from the end; with LL-HLS,
PART-HOLD-BACK from the end, on an independent part). Then, at real pace, it reloads the playlist
(every target duration after a change, half of it when unchanged, §6.3.4; or, when the server says
`CAN-BLOCK-RELOAD=YES`, a blocking reload `?_HLS_msn=N&_HLS_part=M` for the next part, §6.2.5.2),
fetches each new segment (or part) exactly once, in order, and keeps a simulated playback buffer
that drains with the wall clock. Like hls.js, the playlist loader and the media loader run
concurrently (two requests at most per viewer). Preload hints are parsed but not requested (hls.js
does not either).

Per viewer it measures: startup time (first request → enough media buffered to start playing: one
segment, or `start_parts` parts in LL-HLS), stalls (the buffer ran dry while playing) and the time
spent rebuffering, TTFB (request sent → response headers; includes connecting) and download time
(headers → last body byte) per request, bytes, errors by type (`http_404`, `timeout`, `reset`,
`connect`, `payload`, …) and waiting-room answers. A viewer behaves like the landing page's
waiting room (landing/static/waiting-room.js): once a Launchkit waiting room has told it its place
(a 429 whose JSON says `held` and carries a queue ticket), it asks `POST /api/admission?wait=25`
with that ticket and the server holds the request until its turn comes (the held line), asking
again at once when a held request ends without it; a server without that API (404/405/501, no
`held` in the answer, a failed call) is retried after `Retry-After`, exactly as long as the header
says (never less). The time spent in line is recorded, with when the viewer joined the line, its
place (the queue ticket's scope and sequence number) and when it was admitted. Each viewer sends
its own client key (`Launchkit-Key`, what the page keeps in sessionStorage: the admitted ticket is
bound to it) and keeps its own cookies (an admission ticket is one viewer's, never the swarm's).

A `Swarm` runs N players with an open arrival schedule (all at once, or spread over T seconds;
arrivals never wait for each other) against a base URL, over one shared aiohttp session whose
connector holds `connections_per_viewer` connections per viewer, so every viewer has its own
connection(s) like a real audience. It aggregates everything into a JSON-serialisable summary
(percentiles) and can report progress every second through a callback.

Everything is bounded: a per-request timeout, a per-viewer duration (each viewer stops by itself
at its deadline, in-flight requests included), a hard cap on viewers, and a swarm deadline after
which stragglers are cancelled.

Command line (for rehearsals by hand): `python -m loadtests.player URL --viewers 50 --duration 30
--spread 10 [--json out.json]`; URL is the multivariant playlist (or a media playlist).
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import inspect
import json
import math
import random
import re
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable
from urllib.parse import urljoin

import aiohttp

MAX_VIEWERS = 5000  # hard cap for one swarm (one process, one event loop)
WAITING_ROOM_STATUSES = (429, 503)
KEY_HEADER = "Launchkit-Key"  # the client key an admitted ticket is bound to (launchkit/admission/tickets.py)
# Statuses of a server without the admission API: the viewer falls back to Retry-After for good.
NO_ADMISSION_API = (404, 405, 501)
MAX_HOLD_ROUNDS = 1000  # held requests per wait (25 s each: far beyond any patience)
HOLD_SPREAD = 0.25  # seconds: a new held request after one that ended goes within this (as the page does)
USER_AGENT = "launchkit-player/0.1 (simulated hls.js viewer)"
# Request kinds whose TTFB is a server's responsiveness; a blocking reload's TTFB is mostly the
# server holding the request on purpose until the next part exists.
LATENCY_KINDS = ("multivariant", "playlist", "init", "segment", "part")


# --------------------------------------------------------------------------------------------
# Playlists (RFC 8216 / draft-pantos-hls-rfc8216bis)
# --------------------------------------------------------------------------------------------

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def parse_attributes(text: str) -> dict[str, str]:
    """An attribute list (§4.2): `NAME=value` pairs, quoted strings unquoted."""
    return {name: value[1:-1] if value.startswith('"') else value for name, value in _ATTRIBUTE.findall(text)}


def _byterange(text: str, previous_end: dict[str, int], uri: str) -> tuple[int, int]:
    """`<n>[@<o>]` → (offset, length); without `@o` the range follows the previous one of the
    same resource (§4.4.4.2, §4.4.4.9)."""
    length, _, offset = text.partition("@")
    start = int(offset) if offset else previous_end.get(uri, 0)
    previous_end[uri] = start + int(length)
    return start, int(length)


@dataclass
class Variant:
    uri: str  # absolute
    bandwidth: int
    average_bandwidth: int | None = None
    resolution: str | None = None
    codecs: str | None = None

    @property
    def name(self) -> str:
        """What a viewer would call it: the rendition's directory (`720p/index.m3u8` → `720p`)."""
        path = self.uri.split("?", 1)[0].rstrip("/").split("/")
        return path[-2] if len(path) >= 2 else path[-1]

    def matches(self, wanted: str) -> bool:
        if wanted in (self.name, self.uri):
            return True
        height = self.resolution.partition("x")[2] if self.resolution else ""
        return bool(height) and wanted == f"{height}p"


def parse_multivariant(text: str, base_url: str) -> list[Variant]:
    variants, pending = [], None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#EXT-X-STREAM-INF:"):
            pending = parse_attributes(line.split(":", 1)[1])
        elif line and not line.startswith("#") and pending is not None:
            variants.append(Variant(
                uri=urljoin(base_url, line), bandwidth=int(pending.get("BANDWIDTH", 0)),
                average_bandwidth=int(pending["AVERAGE-BANDWIDTH"]) if "AVERAGE-BANDWIDTH" in pending else None,
                resolution=pending.get("RESOLUTION"), codecs=pending.get("CODECS"),
            ))
            pending = None
    return variants


def choose_variant(variants: list[Variant], rendition: str = "top", max_bandwidth: int | None = None) -> Variant:
    """`top` (highest BANDWIDTH), `bottom`, or a name (`720p`, a URI); with a bandwidth budget, the
    best variant whose BANDWIDTH fits (the lowest if none does), like an ABR player on a capped link."""
    if not variants:
        raise ValueError("no variant streams in the multivariant playlist")
    ranked = sorted(variants, key=lambda v: v.bandwidth, reverse=True)
    if max_bandwidth is not None:
        fitting = [v for v in ranked if v.bandwidth <= max_bandwidth]
        return fitting[0] if fitting else ranked[-1]
    if rendition == "top":
        return ranked[0]
    if rendition == "bottom":
        return ranked[-1]
    for variant in ranked:
        if variant.matches(rendition):
            return variant
    raise ValueError(f"no rendition {rendition!r} among {[v.name for v in ranked]}")


@dataclass
class Part:
    uri: str  # absolute
    duration: float
    independent: bool = False
    byterange: tuple[int, int] | None = None  # (offset, length)
    gap: bool = False


@dataclass
class Segment:
    msn: int
    uri: str | None  # absolute; None while the segment is still being produced (parts only)
    duration: float
    start: float = 0.0  # media time from the start of the playlist
    parts: list[Part] = field(default_factory=list)
    map_uri: str | None = None
    byterange: tuple[int, int] | None = None
    gap: bool = False
    program_date_time: float | None = None  # seconds since the epoch

    @property
    def complete(self) -> bool:
        return self.uri is not None


@dataclass
class MediaPlaylist:
    target_duration: float
    media_sequence: int
    segments: list[Segment]  # complete segments, then (LL-HLS) the segment in progress
    endlist: bool = False
    part_target: float | None = None  # EXT-X-PART-INF:PART-TARGET
    can_block_reload: bool = False
    hold_back: float | None = None
    part_hold_back: float | None = None
    can_skip_until: float | None = None
    preload_hint: str | None = None  # URI of EXT-X-PRELOAD-HINT:TYPE=PART

    @property
    def low_latency(self) -> bool:
        return self.part_target is not None

    def segment(self, msn: int) -> Segment | None:
        index = msn - self.media_sequence
        return self.segments[index] if 0 <= index < len(self.segments) else None

    @property
    def complete_segments(self) -> list[Segment]:
        return [s for s in self.segments if s.complete]

    @property
    def last_msn(self) -> int:
        """Media sequence number of the last complete segment (media_sequence − 1 if none)."""
        complete = self.complete_segments
        return complete[-1].msn if complete else self.media_sequence - 1

    def end(self, with_parts: bool) -> float:
        """Media time of the end of the playlist (the live edge)."""
        if not self.segments:
            return 0.0
        last = self.segments[-1]
        if last.complete:
            return last.start + last.duration
        return last.start + (sum(p.duration for p in last.parts) if with_parts else 0.0)

    def next_blocking_request(self, with_parts: bool) -> tuple[int, int | None]:
        """The (_HLS_msn, _HLS_part) that names the first media not in this playlist (§6.2.5.2)."""
        if with_parts and self.low_latency:
            last = self.segments[-1] if self.segments else None
            if last is not None and not last.complete:
                return last.msn, len(last.parts)
            return self.last_msn + 1, 0
        return self.last_msn + 1, None


def parse_media_playlist(text: str, base_url: str) -> MediaPlaylist:
    target = 0.0
    sequence = 0
    segments: list[Segment] = []
    parts: list[Part] = []
    endlist = False
    part_target = hold_back = part_hold_back = can_skip = None
    can_block = False
    preload_hint = None
    map_uri = None
    extinf: float | None = None
    seg_range: str | None = None
    gap = False
    pdt: float | None = None
    ranges: dict[str, int] = {}
    skipped = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("#"):
            uri = urljoin(base_url, line)
            segments.append(Segment(
                msn=0, uri=uri, duration=extinf if extinf is not None else target, parts=parts, map_uri=map_uri,
                byterange=_byterange(seg_range, ranges, uri) if seg_range else None, gap=gap, program_date_time=pdt,
            ))
            parts, extinf, seg_range, gap = [], None, None, False
            pdt = pdt + segments[-1].duration if pdt is not None else None
            continue
        tag, _, value = line.partition(":")
        if tag == "#EXTINF":
            extinf = float(value.split(",", 1)[0])
        elif tag == "#EXT-X-TARGETDURATION":
            target = float(value)
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            sequence = int(value)
        elif tag == "#EXT-X-MAP":
            map_uri = urljoin(base_url, parse_attributes(value)["URI"])
        elif tag == "#EXT-X-BYTERANGE":
            seg_range = value
        elif tag == "#EXT-X-GAP":
            gap = True
        elif tag == "#EXT-X-PROGRAM-DATE-TIME":
            pdt = _parse_date(value)
        elif tag == "#EXT-X-ENDLIST":
            endlist = True
        elif tag == "#EXT-X-PART-INF":
            part_target = float(parse_attributes(value)["PART-TARGET"])
        elif tag == "#EXT-X-SERVER-CONTROL":
            attributes = parse_attributes(value)
            can_block = attributes.get("CAN-BLOCK-RELOAD") == "YES"
            hold_back = float(attributes["HOLD-BACK"]) if "HOLD-BACK" in attributes else None
            part_hold_back = float(attributes["PART-HOLD-BACK"]) if "PART-HOLD-BACK" in attributes else None
            can_skip = float(attributes["CAN-SKIP-UNTIL"]) if "CAN-SKIP-UNTIL" in attributes else None
        elif tag == "#EXT-X-PART":
            attributes = parse_attributes(value)
            uri = urljoin(base_url, attributes["URI"])
            parts.append(Part(
                uri=uri, duration=float(attributes["DURATION"]), independent=attributes.get("INDEPENDENT") == "YES",
                byterange=_byterange(attributes["BYTERANGE"], ranges, uri) if "BYTERANGE" in attributes else None,
                gap=attributes.get("GAP") == "YES",
            ))
        elif tag == "#EXT-X-PRELOAD-HINT":
            attributes = parse_attributes(value)
            if attributes.get("TYPE") == "PART":
                preload_hint = urljoin(base_url, attributes["URI"])
        elif tag == "#EXT-X-SKIP":
            # Only in answers to `_HLS_skip=YES`, which this player never sends; keep numbering right.
            skipped = int(parse_attributes(value).get("SKIPPED-SEGMENTS", 0))
    if parts:  # parts after the last URI line: the segment being produced now
        segments.append(Segment(msn=0, uri=None, duration=sum(p.duration for p in parts), parts=parts,
                                map_uri=map_uri, program_date_time=pdt))
    start = 0.0
    for index, segment in enumerate(segments):
        segment.msn = sequence + skipped + index
        segment.start = start
        start += segment.duration
    return MediaPlaylist(
        target_duration=target, media_sequence=sequence + skipped, segments=segments, endlist=endlist,
        part_target=part_target, can_block_reload=can_block, hold_back=hold_back, part_hold_back=part_hold_back,
        can_skip_until=can_skip, preload_hint=preload_hint,
    )


def _parse_date(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class Cursor:
    """The next media to load: segment `msn`, and in LL-HLS the part index within it
    (`part=None`: whole segments only)."""

    msn: int
    part: int | None = None


def start_cursor(playlist: MediaPlaylist, low_latency: bool) -> Cursor:
    """Where a player joins a live playlist (§6.3.3). Plain: the last segment starting at least
    HOLD-BACK (default three target durations) before the end. LL-HLS: the last independent part
    (or segment boundary) starting at least PART-HOLD-BACK before the end. VOD: the beginning."""
    segments = playlist.segments
    if not segments:
        return Cursor(playlist.media_sequence, 0 if low_latency else None)
    if playlist.endlist:
        return Cursor(segments[0].msn, 0 if low_latency else None)
    if low_latency and playlist.low_latency:
        hold_back = playlist.part_hold_back or 3 * (playlist.part_target or 0)
        latest = playlist.end(with_parts=True) - hold_back + 1e-6
        choice = Cursor(segments[0].msn, 0)
        for segment in segments:
            if segment.start <= latest:  # a segment starts with a keyframe (hls.js starts on fragment starts)
                choice = Cursor(segment.msn, 0)
            offset = segment.start
            for index, part in enumerate(segment.parts):
                if index and part.independent and offset <= latest:
                    choice = Cursor(segment.msn, index)
                offset += part.duration
        return choice
    complete = playlist.complete_segments
    if not complete:
        return Cursor(playlist.media_sequence, None)
    hold_back = playlist.hold_back or 3 * playlist.target_duration
    latest = playlist.end(with_parts=False) - hold_back + 1e-6
    candidates = [s for s in complete if s.start <= latest]
    return Cursor((candidates[-1] if candidates else complete[0]).msn, None)


# --------------------------------------------------------------------------------------------
# The simulated playback buffer
# --------------------------------------------------------------------------------------------

class PlaybackBuffer:
    """Media time buffered vs played, advancing with the wall clock. Playback starts once one
    segment (or `start_parts` parts) is buffered; it stalls when the playhead reaches the end of the
    buffer and resumes as soon as new media arrives (as a browser's media element does)."""

    def __init__(self, start_parts: int = 3) -> None:
        self.start_parts = start_parts
        self.buffered = 0.0  # media seconds appended
        self.position = 0.0  # media seconds played
        self.started_at: float | None = None
        self.stall_started: float | None = None
        self.stalls = 0
        self.rebuffer_seconds = 0.0
        self.played_until: float | None = None  # wall time of the last tick
        self._segments = 0
        self._parts = 0

    @property
    def playing(self) -> bool:
        return self.started_at is not None and self.stall_started is None

    @property
    def stalled(self) -> bool:
        return self.stall_started is not None

    def ahead(self, now: float) -> float:
        self.tick(now)
        return self.buffered - self.position

    def tick(self, now: float) -> None:
        if self.playing and self.played_until is not None:
            self.position += now - self.played_until
            if self.position >= self.buffered:
                overshoot = self.position - self.buffered
                self.position = self.buffered
                self.stall_started = now - overshoot
                self.stalls += 1
        self.played_until = now

    def append(self, duration: float, now: float, *, part: bool) -> None:
        self.tick(now)
        self.buffered += duration
        if part:
            self._parts += 1
        else:
            self._segments += 1
        if self.started_at is None:
            if self._segments >= 1 or self._parts >= self.start_parts:
                self.started_at = now
        elif self.stall_started is not None and self.buffered > self.position:
            self.rebuffer_seconds += now - self.stall_started
            self.stall_started = None

    def finish(self, now: float) -> None:
        """End of the session: a stall still going on counts up to now."""
        self.tick(now)
        if self.stall_started is not None:
            self.rebuffer_seconds += now - self.stall_started
            self.stall_started = now  # keep `stalled` true, count the time once


# --------------------------------------------------------------------------------------------
# One viewer
# --------------------------------------------------------------------------------------------

@dataclass
class PlayerConfig:
    duration: float = 30.0  # seconds from arrival to leaving
    rendition: str = "top"  # top | bottom | a name (720p) | a URI
    max_bandwidth: int | None = None  # bit/s: best variant whose BANDWIDTH fits (overrides `rendition`)
    request_timeout: float = 5.0  # seconds per request (a blocking reload gets 3 target durations more)
    low_latency: bool = True  # play LL-HLS (parts, PART-HOLD-BACK) when the playlist offers it
    blocking_reload: bool = True  # use `_HLS_msn`/`_HLS_part` when CAN-BLOCK-RELOAD=YES
    start_parts: int = 3  # LL-HLS: parts buffered before playback starts
    max_buffer: float = 30.0  # seconds ahead of the playhead before loading pauses (hls.js maxBufferLength)
    max_retries: int = 3  # per segment/part, then it is skipped (hls.js fragLoadPolicy-like)
    retry_delay: float = 0.5  # seconds, times the attempt number
    max_waiting_room_wait: float = 600.0  # a Retry-After longer than this is an error, not a wait
    # The held line: once told its place, ask this path (on the media URL's host) with ?wait=hold_seconds
    # and be answered when admitted. None: Retry-After only.
    admission_path: str | None = "/api/admission"
    hold_seconds: int = 25


@dataclass(slots=True)
class RequestRecord:
    kind: str  # multivariant | playlist | playlist_blocking | init | segment | part
    url: str
    started: float  # seconds since the swarm's start
    ttfb: float
    download: float
    bytes: int
    status: int


@dataclass
class ViewerResult:
    index: int
    arrival: float  # seconds after the swarm's start
    rendition: str | None = None
    low_latency: bool = False
    startup_seconds: float | None = None  # first request → playback starts (waiting-room waits included)
    stalls: int = 0
    rebuffer_seconds: float = 0.0
    played_seconds: float = 0.0
    bytes: int = 0
    requests: list[RequestRecord] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    waits: list[float] = field(default_factory=list)  # waiting-room waits (s): Retry-After told, or held in line
    positions: list[int] = field(default_factory=list)  # places in line the waiting-room answers gave
    # The line as this viewer saw it, seconds since the swarm's start: first waiting-room answer
    # received, first admission received (an admitting answer of the held line, or the first 2xx), and
    # its last place (queue ticket scope and sequence number: the server's FIFO order).
    queued_at: float | None = None
    admitted_at: float | None = None
    place: tuple[str, int] | None = None
    held_requests: int = 0
    duplicate_fetches: int = 0
    fell_behind: int = 0  # the next media had left the playlist: jumped to the live edge
    skipped: int = 0  # segments/parts given up after `max_retries`
    media_fetched: int = 0
    latency_seconds: float | None = None  # wall clock − PROGRAM-DATE-TIME at the playhead, at the end

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index, "arrival": round(self.arrival, 3), "rendition": self.rendition,
            "low_latency": self.low_latency, "startup_seconds": _round(self.startup_seconds),
            "stalls": self.stalls, "rebuffer_seconds": round(self.rebuffer_seconds, 3),
            "played_seconds": round(self.played_seconds, 3), "bytes": self.bytes,
            "requests": Counter(r.kind for r in self.requests), "errors": dict(self.errors),
            "waits": [round(w, 3) for w in self.waits], "positions": self.positions,
            "queued_at": _round(self.queued_at), "admitted_at": _round(self.admitted_at),
            "place": list(self.place) if self.place else None, "held_requests": self.held_requests,
            "duplicate_fetches": self.duplicate_fetches,
            "fell_behind": self.fell_behind, "skipped": self.skipped, "media_fetched": self.media_fetched,
            "latency_seconds": _round(self.latency_seconds),
        }


class _RequestFailed(Exception):
    pass


class Player:
    """One simulated viewer. `run()` plays until `config.duration` has passed (or, for VOD, the
    end), then returns its `ViewerResult`; it never raises for network or HTTP trouble."""

    def __init__(self, session: aiohttp.ClientSession, url: str, config: PlayerConfig | None = None, *,
                 index: int = 0, arrival: float = 0.0, epoch: float | None = None) -> None:
        self.session = session
        self.url = url
        self.config = config or PlayerConfig()
        self.result = ViewerResult(index=index, arrival=arrival)
        self.buffer = PlaybackBuffer(self.config.start_parts)
        self.state = "pending"  # pending | loading | waiting | playing | stalled | done
        self._loop = asyncio.get_running_loop()
        self._epoch = epoch if epoch is not None else self._loop.time()
        self._cookies: SimpleCookie = SimpleCookie()
        self.client_key = secrets.token_urlsafe(16)  # like the page's: random, never in a URL
        self._admission_url = urljoin(url, self.config.admission_path) if self.config.admission_path else None
        self._playlist: MediaPlaylist | None = None
        self._playlist_url = ""
        self._changed = asyncio.Event()
        self._fetched: set[tuple[str, tuple[int, int] | None]] = set()
        self._inits: set[str] = set()
        self._first_request: float | None = None
        self._pdt_origin: float | None = None  # PROGRAM-DATE-TIME at buffer position 0
        self._ll = False

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> ViewerResult:
        deadline = self._loop.time() + self.config.duration
        try:
            async with asyncio.timeout_at(deadline):
                await self._play()
        except TimeoutError:
            pass  # the viewer's time is up: leaving mid-request is what real viewers do
        except (ValueError, KeyError) as error:  # e.g. no such rendition, a playlist we cannot use
            self.result.errors[f"player_{type(error).__name__}"] += 1
        finally:
            self._finish(min(self._loop.time(), deadline))
        return self.result

    def _finish(self, now: float) -> None:
        self.buffer.finish(now)
        self.state = "done"
        result = self.result
        result.stalls = self.buffer.stalls
        result.rebuffer_seconds = self.buffer.rebuffer_seconds
        result.played_seconds = self.buffer.position
        if self.buffer.started_at is not None and self._first_request is not None:
            result.startup_seconds = self.buffer.started_at - self._first_request
        if self._pdt_origin is not None:
            result.latency_seconds = time.time() - (self._pdt_origin + self.buffer.position)

    def snapshot_state(self) -> str:
        if self.state in ("playing", "stalled"):
            self.buffer.tick(self._loop.time())
            return "stalled" if self.buffer.stalled else "playing"
        return self.state

    async def _play(self) -> None:
        self.state = "loading"
        text, url = await self._load_until_ok(self.url, "multivariant")
        if "#EXT-X-STREAM-INF" in text:
            variant = choose_variant(parse_multivariant(text, url), self.config.rendition, self.config.max_bandwidth)
            self.result.rendition = variant.name
            self._playlist_url = variant.uri
            text, _ = await self._load_until_ok(variant.uri, "playlist")
        else:  # given a media playlist directly
            self._playlist_url = url
            self.result.rendition = Variant(url, 0).name
        playlist = parse_media_playlist(text, self._playlist_url)
        self._playlist = playlist
        self._ll = self.config.low_latency and playlist.low_latency
        self.result.low_latency = self._ll
        async with asyncio.TaskGroup() as group:
            reloader = group.create_task(self._reload_loop(text))
            await self._media_loop(start_cursor(playlist, self._ll))
            reloader.cancel()

    # -- playlists ---------------------------------------------------------------------------

    async def _load_until_ok(self, url: str, kind: str) -> tuple[str, str]:
        attempt = 0
        while True:
            try:
                _, body, final_url = await self._request(url, kind, want_body=True)
                return body.decode("utf-8", errors="replace"), final_url
            except _RequestFailed:
                attempt += 1
                await asyncio.sleep(min(self.config.retry_delay * attempt, 5.0))

    async def _reload_loop(self, text: str) -> None:
        previous = text
        last_started = self._loop.time()  # the first load counts as a load that changed
        changed = True
        while self._playlist is not None and not self._playlist.endlist:
            playlist = self._playlist
            target = max(playlist.target_duration, 0.1)
            blocking = self.config.blocking_reload and playlist.can_block_reload
            url, kind, timeout = self._playlist_url, "playlist", self.config.request_timeout
            if blocking:
                msn, part = playlist.next_blocking_request(with_parts=self._ll)
                directives = f"_HLS_msn={msn}" + (f"&_HLS_part={part}" if part is not None else "")
                url = f"{url}{'&' if '?' in url else '?'}{directives}"
                kind, timeout = "playlist_blocking", timeout + 3 * target
                if not changed:  # the server ignored the directive: do not spin
                    await asyncio.sleep((playlist.part_target if self._ll else target) / 2)
            else:
                # §6.3.4: a target duration after the last load that changed began, half of it after
                # a load that did not.
                wait_until = last_started + target if changed else self._loop.time() + target / 2
                await asyncio.sleep(max(0.0, wait_until - self._loop.time()))
            last_started = self._loop.time()
            try:
                _, body, _ = await self._request(url, kind, want_body=True, timeout=timeout)
            except _RequestFailed:
                changed = False
                await asyncio.sleep(min(self.config.retry_delay, target / 2))
                continue
            text = body.decode("utf-8", errors="replace")
            changed = text != previous
            if changed:
                previous = text
                try:
                    self._playlist = parse_media_playlist(text, self._playlist_url)
                except (ValueError, KeyError):
                    self.result.errors["bad_playlist"] += 1
                    continue
                self._changed.set()

    # -- media -------------------------------------------------------------------------------

    async def _media_loop(self, cursor: Cursor) -> None:
        failures = 0
        while True:
            playlist = self._playlist
            assert playlist is not None
            resolved = self._resolve(playlist, cursor)
            if resolved is None:
                if playlist.endlist and (cursor.msn > playlist.segments[-1].msn if playlist.segments else True):
                    # VOD / ended: play out what is buffered, then leave.
                    ahead = self.buffer.ahead(self._loop.time())
                    await asyncio.sleep(max(0.0, ahead))
                    return
                self._changed.clear()
                await self._changed.wait()
                continue
            if isinstance(resolved, Cursor):  # nothing to fetch at this cursor: move on
                cursor = resolved
                continue
            unit, following = resolved
            ahead = self.buffer.ahead(self._loop.time())
            if ahead > self.config.max_buffer:
                await asyncio.sleep(ahead - self.config.max_buffer)
            if unit.map_uri and unit.map_uri not in self._inits:
                try:
                    await self._request(unit.map_uri, "init", want_body=False)
                    self._inits.add(unit.map_uri)
                except _RequestFailed:
                    await self._retry_pause(failures := failures + 1)
                    continue
            if not unit.gap:
                key = (unit.uri, unit.byterange)
                if key in self._fetched:
                    self.result.duplicate_fetches += 1
                try:
                    await self._request(unit.uri, unit.kind, want_body=False, byterange=unit.byterange)
                except _RequestFailed:
                    failures += 1
                    if failures <= self.config.max_retries:
                        await self._retry_pause(failures)
                        continue
                    self.result.skipped += 1
                    failures = 0
                    cursor = following
                    continue
                self._fetched.add(key)
                self.result.media_fetched += 1
            failures = 0
            now = self._loop.time()
            if self.buffer.started_at is None and unit.program_date_time is not None:
                self._pdt_origin = unit.program_date_time - self.buffer.buffered
            self.buffer.append(unit.duration, now, part=unit.kind == "part")
            if self.buffer.started_at is not None:
                self.state = "playing"
            cursor = following

    async def _retry_pause(self, attempt: int) -> None:
        await asyncio.sleep(self.config.retry_delay * attempt)

    def _resolve(self, playlist: MediaPlaylist, cursor: Cursor) -> tuple[_Unit, Cursor] | Cursor | None:
        """The media to load at `cursor` and the cursor after it; a new cursor when there is
        nothing to load here; None when the playlist does not have it yet."""
        segment = playlist.segment(cursor.msn)
        if segment is None:
            if cursor.msn < playlist.media_sequence:
                # The next media has left the playlist: jump back to the live edge, as hls.js does.
                self.result.fell_behind += 1
                return start_cursor(playlist, self._ll)
            return None
        if not self._ll or cursor.part is None:
            if not segment.complete:
                return None
            return _Unit.whole(segment), Cursor(segment.msn + 1, 0 if self._ll else None)
        index = cursor.part
        if index == 0 and segment.complete:
            # A finished segment: one request for all of it (hls.js loads parts near the edge only).
            return _Unit.whole(segment), Cursor(segment.msn + 1, 0)
        if index < len(segment.parts):
            part = segment.parts[index]
            last = segment.complete and index + 1 == len(segment.parts)
            following = Cursor(segment.msn + 1, 0) if last else Cursor(segment.msn, index + 1)
            return _Unit.from_part(part, segment, index), following
        if segment.complete:
            if not segment.parts:
                self.result.skipped += 1  # its remaining parts left the playlist before we got them
            return Cursor(segment.msn + 1, 0)
        return None

    # -- HTTP --------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "*/*", KEY_HEADER: self.client_key}
        if self._cookies:
            headers["Cookie"] = "; ".join(f"{k}={m.value}" for k, m in self._cookies.items())
        return headers

    def _keep_cookies(self, response: aiohttp.ClientResponse) -> None:
        """As a browser does: set what the answer sets, forget what it deletes (empty, Max-Age=0)."""
        for name, morsel in response.cookies.items():
            if not morsel.value or morsel["max-age"] == "0":
                self._cookies.pop(name, None)
            else:
                self._cookies[name] = morsel

    def _since_epoch(self) -> float:
        return self._loop.time() - self._epoch

    async def _request(self, url: str, kind: str, *, want_body: bool, timeout: float | None = None,
                       byterange: tuple[int, int] | None = None) -> tuple[int, bytes, str]:
        """GET with waiting-room handling; records every answer. Raises _RequestFailed on errors."""
        timeout = timeout if timeout is not None else self.config.request_timeout
        while True:
            headers = self._headers()
            if byterange is not None:
                headers["Range"] = f"bytes={byterange[0]}-{byterange[0] + byterange[1] - 1}"
            sent = self._loop.time()
            if self._first_request is None:
                self._first_request = sent
            chunks: list[bytes] = []
            size = 0
            try:
                async with self.session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout),
                                            allow_redirects=True) as response:
                    ttfb = self._loop.time() - sent
                    status = response.status
                    self._keep_cookies(response)
                    keep = want_body or status in WAITING_ROOM_STATUSES  # a waiting room says the place
                    while True:
                        chunk = await response.content.readany()
                        if not chunk:
                            break
                        size += len(chunk)
                        if keep:
                            chunks.append(chunk)
                    retry_after = response.headers.get("Retry-After")
                    final_url = str(response.url)
            except Exception as error:  # noqa: BLE001 - classified and recorded, never raised to the swarm
                kind_of_error = classify_error(error)
                self.result.errors[kind_of_error] += 1
                raise _RequestFailed(kind_of_error) from error
            download = self._loop.time() - sent - ttfb
            self.result.requests.append(RequestRecord(kind, url, sent - self._epoch, ttfb, download, size, status))
            self.result.bytes += size
            if status in WAITING_ROOM_STATUSES and retry_after is not None:
                answer = _waiting_answer(b"".join(chunks))
                self._in_line(status, answer)
                if answer is not None and self._can_hold(answer) and await self._hold_in_line(answer["ticket"]):
                    continue  # admitted: the ticket is in the cookies now
                wait = parse_retry_after(retry_after)
                if wait is not None and wait <= self.config.max_waiting_room_wait:
                    await self._wait_in_room(wait)
                    continue
            if not 200 <= status < 300:
                self.result.errors[f"http_{status}"] += 1
                raise _RequestFailed(f"http_{status}")
            if self.result.admitted_at is None:
                self.result.admitted_at = self._since_epoch()
            return status, b"".join(chunks), final_url

    def _in_line(self, status: int, answer: dict[str, Any] | None) -> None:
        """Note a waiting-room answer: when the viewer joined the line, its place and position (a 503
        without a place is a server in trouble, not a line)."""
        position = answer.get("position") if answer is not None else None
        has_position = isinstance(position, int) and not isinstance(position, bool)
        if self.result.queued_at is None and (status == 429 or has_position):
            self.result.queued_at = self._since_epoch()
        if answer is None:
            return
        if has_position:
            self.result.positions.append(position)
        if isinstance(answer.get("ticket"), str) and (place := queue_place(answer["ticket"])) is not None:
            self.result.place = place

    def _can_hold(self, answer: dict[str, Any]) -> bool:
        """A Launchkit waiting room that holds requests says `held` (true or false) and hands a place."""
        return (self._admission_url is not None and isinstance(answer.get("held"), bool)
                and isinstance(answer.get("ticket"), str))

    async def _hold_in_line(self, ticket: str) -> bool:
        """The held line (as the page does it): POST the queue ticket with ?wait=S until admitted
        (True). False when this server cannot hold (the caller falls back to Retry-After)."""
        assert self._admission_url is not None
        previous, self.state = self.state, "waiting"
        started = self._loop.time()
        url = f"{self._admission_url}?wait={self.config.hold_seconds}"
        timeout = aiohttp.ClientTimeout(total=self.config.hold_seconds + self.config.request_timeout)
        try:
            for _ in range(MAX_HOLD_ROUNDS):
                self.result.held_requests += 1
                outcome = await self._ask_held(url, ticket, timeout)
                if isinstance(outcome, bool):
                    return outcome
                ticket = outcome  # still in line (the hold ran out): ask again at once, spread a little
                await asyncio.sleep(random.uniform(0, HOLD_SPREAD))
            return False
        finally:
            self.result.waits.append(round(self._loop.time() - started, 3))
            self.state = previous

    async def _ask_held(self, url: str, ticket: str, timeout: aiohttp.ClientTimeout) -> bool | str:
        """One held request: True admitted, False cannot hold here, else the queue ticket to ask with next."""
        sent = self._loop.time()
        try:
            async with self.session.post(url, json={"ticket": ticket}, headers=self._headers(),
                                         timeout=timeout) as response:
                ttfb = self._loop.time() - sent
                status = response.status
                self._keep_cookies(response)
                body = await response.read()
        except Exception as error:  # noqa: BLE001 - classified and recorded; the viewer stays in line
            self.result.errors[f"admission_{classify_error(error)}"] += 1
            return False
        self.result.requests.append(RequestRecord("admission", url, sent - self._epoch, ttfb,
                                                  self._loop.time() - sent - ttfb, len(body), status))
        self.result.bytes += len(body)
        answer = _waiting_answer(body)
        if 200 <= status < 300 and answer is not None and answer.get("admitted") is True:
            self.result.admitted_at = self._since_epoch()
            return True
        if status == 429 and answer is not None:
            self._in_line(status, answer)
            return answer["ticket"] if self._can_hold(answer) and answer["held"] else False
        if status in NO_ADMISSION_API:
            self._admission_url = None  # not this server: Retry-After from now on
        else:
            self.result.errors[f"admission_http_{status}"] += 1
        return False

    async def _wait_in_room(self, seconds: float) -> None:
        """Honour Retry-After exactly: never retry before `seconds` have passed."""
        previous, self.state = self.state, "waiting"
        started = self._loop.time()
        self.result.waits.append(seconds)
        while (left := seconds - (self._loop.time() - started)) > 0:
            await asyncio.sleep(left)
        self.state = previous


@dataclass
class _Unit:
    uri: str
    duration: float
    kind: str  # segment | part
    map_uri: str | None
    byterange: tuple[int, int] | None
    gap: bool
    program_date_time: float | None

    @classmethod
    def whole(cls, segment: Segment) -> _Unit:
        return cls(segment.uri or "", segment.duration, "segment", segment.map_uri, segment.byterange, segment.gap,
                   segment.program_date_time)

    @classmethod
    def from_part(cls, part: Part, segment: Segment, index: int) -> _Unit:
        pdt = segment.program_date_time
        if pdt is not None:
            pdt += sum(p.duration for p in segment.parts[:index])
        return cls(part.uri, part.duration, "part", segment.map_uri, part.byterange, part.gap, pdt)


def _waiting_answer(body: bytes) -> dict[str, Any] | None:
    """A Launchkit admission answer ({"position": N, "ticket": ..., "held": ...}), if the body is one."""
    try:
        answer = json.loads(body)
    except ValueError:  # not JSON, or not text at all
        return None
    return answer if isinstance(answer, dict) else None


def queue_place(ticket: str) -> tuple[str, int] | None:
    """(scope, sequence number) of a Launchkit queue ticket `q.<scope>.<seq>.<issued_ms>.<sig>`
    (launchkit/admission/tickets.py: signed, not secret); the server serves places in this order."""
    parts = ticket.split(".")
    if len(parts) != 5 or parts[0] != "q" or not (parts[2].isascii() and parts[2].isdigit()):
        return None
    return parts[1], int(parts[2])


def parse_retry_after(value: str) -> float | None:
    """Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP-date; None if unparseable."""
    value = value.strip()
    try:
        seconds = float(value)
        return seconds if seconds >= 0 and math.isfinite(seconds) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def classify_error(error: BaseException) -> str:
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(error, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(error, aiohttp.ClientPayloadError):
        return "payload"
    if isinstance(error, (aiohttp.ServerDisconnectedError, ConnectionResetError, BrokenPipeError)):
        return "reset"
    if isinstance(error, aiohttp.ClientOSError):
        return "reset" if error.errno in (104, 32) else f"os_{error.errno}"
    return type(error).__name__


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------

def percentiles(values: list[float], digits: int = 4) -> dict[str, float | int | None]:
    """count, mean, p50, p95, p99 (nearest rank) and max."""
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    return {"count": len(ordered), "mean": round(sum(ordered) / len(ordered), digits),
            "p50": round(rank(0.50), digits), "p95": round(rank(0.95), digits),
            "p99": round(rank(0.99), digits), "max": round(ordered[-1], digits)}


def summarize(viewers: list[ViewerResult], *, since: float | None = None, until: float | None = None,
              wall_seconds: float | None = None) -> dict[str, Any]:
    """Aggregate viewers into a JSON-serialisable summary. `since`/`until` (seconds after the
    swarm's start) restrict the request statistics to requests sent in that window (e.g. a steady
    state after all arrivals); viewer-level figures always cover whole sessions."""
    requests = [r for v in viewers for r in v.requests
                if (since is None or r.started >= since) and (until is None or r.started < until)]
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in sorted({r.kind for r in requests}):
        chosen = [r for r in requests if r.kind == kind]
        by_kind[kind] = {"count": len(chosen), "bytes": sum(r.bytes for r in chosen),
                         "ttfb": percentiles([r.ttfb for r in chosen]),
                         "download": percentiles([r.download for r in chosen])}
    errors: Counter = Counter()
    for viewer in viewers:
        errors.update(viewer.errors)
    waits = [w for v in viewers for w in v.waits]
    started = [v for v in viewers if v.startup_seconds is not None]
    played = sum(v.played_seconds for v in viewers)
    rebuffer = sum(v.rebuffer_seconds for v in viewers)
    total_bytes = sum(r.bytes for r in requests)
    span = (until - since) if since is not None and until is not None else wall_seconds
    return {
        "viewers": len(viewers),
        "started": len(started),
        "never_started": len(viewers) - len(started),
        "low_latency_viewers": sum(v.low_latency for v in viewers),
        "renditions": dict(Counter(v.rendition for v in viewers if v.rendition)),
        "startup_seconds": percentiles([v.startup_seconds for v in started]),
        "stalls": sum(v.stalls for v in viewers),
        "viewers_with_stalls": sum(v.stalls > 0 for v in viewers),
        "rebuffer_seconds": round(rebuffer, 3),
        "rebuffer_ratio": round(rebuffer / (played + rebuffer), 5) if played + rebuffer > 0 else None,
        "played_seconds": round(played, 1),
        "requests": len(requests),
        "ttfb": percentiles([r.ttfb for r in requests if r.kind in LATENCY_KINDS]),
        "download": percentiles([r.download for r in requests if r.kind in ("segment", "part")]),
        "by_kind": by_kind,
        "bytes": total_bytes,
        "throughput_bps": round(8 * total_bytes / span) if span else None,
        "errors": dict(errors),
        "error_count": sum(errors.values()),
        "waiting_room": {"answers": len(waits), "viewers": sum(bool(v.waits) for v in viewers),
                         "seconds": round(sum(waits), 3), "max_seconds": round(max(waits), 3) if waits else None},
        "duplicate_fetches": sum(v.duplicate_fetches for v in viewers),
        "fell_behind": sum(v.fell_behind for v in viewers),
        "skipped": sum(v.skipped for v in viewers),
        "latency_seconds": percentiles([v.latency_seconds for v in viewers if v.latency_seconds is not None], 3),
    }


# --------------------------------------------------------------------------------------------
# The swarm
# --------------------------------------------------------------------------------------------

Progress = Callable[[dict[str, Any]], Awaitable[None] | None]


@dataclass
class SwarmResult:
    url: str
    viewers: list[ViewerResult]
    spread: float
    duration: float
    wall_seconds: float
    cancelled: int = 0  # viewers still running at the swarm deadline (should be 0)
    # (seconds after the start, how late a 50 ms timer fired): the load generator's own event-loop
    # lag, which inflates every TTFB it measures; large values mean the generator is the bottleneck.
    loop_lag: list[tuple[float, float]] = field(default_factory=list)

    def summary(self, *, since: float | None = None, until: float | None = None) -> dict[str, Any]:
        summary = summarize(self.viewers, since=since, until=until, wall_seconds=self.wall_seconds)
        lag = [late for at, late in self.loop_lag
               if (since is None or at >= since) and (until is None or at < until)]
        return {"url": self.url, "spread": self.spread, "duration": self.duration,
                "wall_seconds": round(self.wall_seconds, 3), "cancelled": self.cancelled, **summary,
                "client_loop_lag": percentiles(lag)}


class Swarm:
    """N players against `url` (the multivariant playlist), arriving all at once (`spread=0`) or
    spread evenly (or, `arrivals="random"`, uniformly at random) over `spread` seconds; each plays
    `player.duration` seconds from its arrival. Open model: an arrival never waits for another."""

    def __init__(self, url: str, viewers: int, player: PlayerConfig | None = None, *, spread: float = 0.0,
                 arrivals: str = "even", seed: int = 1, progress: Progress | None = None,
                 progress_interval: float = 1.0, connections_per_viewer: int = 2,
                 max_viewers: int = MAX_VIEWERS) -> None:
        if not 1 <= viewers <= max_viewers:
            raise ValueError(f"viewers must be within 1..{max_viewers}, got {viewers}")
        if arrivals not in ("even", "random"):
            raise ValueError("arrivals must be 'even' or 'random'")
        self.url = url
        self.count = viewers
        self.config = player or PlayerConfig()
        self.spread = max(0.0, spread)
        self.arrivals = arrivals
        self.seed = seed
        self.progress = progress
        self.progress_interval = progress_interval
        self.connections_per_viewer = connections_per_viewer
        self.players: list[Player] = []
        self._epoch = 0.0
        self._lag: list[tuple[float, float]] = []

    def schedule(self) -> list[float]:
        if self.spread == 0 or self.count == 1:
            return [0.0] * self.count
        if self.arrivals == "random":
            rng = random.Random(self.seed)
            return sorted(rng.uniform(0, self.spread) for _ in range(self.count))
        return [i * self.spread / self.count for i in range(self.count)]

    @property
    def deadline(self) -> float:
        """Seconds after the start by which every viewer must have left."""
        return self.spread + self.config.duration + 2.0

    async def run(self) -> SwarmResult:
        loop = asyncio.get_running_loop()
        limit = self.count * self.connections_per_viewer
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ttl_dns_cache=300)
        async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                         auto_decompress=False) as session:
            self._epoch = loop.time()
            self.players = [Player(session, self.url, self.config, index=i, arrival=t, epoch=self._epoch)
                            for i, t in enumerate(self.schedule())]
            tasks = [asyncio.create_task(self._arrive(p)) for p in self.players]
            helpers = [asyncio.create_task(self._measure_lag())]
            if self.progress:
                helpers.append(asyncio.create_task(self._report()))
            try:
                done, pending = await asyncio.wait(tasks, timeout=self.deadline)
                for task in pending:
                    task.cancel()
                if pending:
                    await asyncio.wait(pending, timeout=2.0)
            finally:
                for helper in helpers:
                    helper.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
            wall = loop.time() - self._epoch
            if self.progress:
                await self._emit(self.snapshot())
        return SwarmResult(self.url, [p.result for p in self.players], self.spread, self.config.duration, wall,
                           cancelled=len(pending), loop_lag=self._lag)

    async def _measure_lag(self, period: float = 0.05) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(int(self.deadline / period) + 100):
            planned = loop.time() + period
            await asyncio.sleep(period)
            now = loop.time()
            self._lag.append((now - self._epoch, max(0.0, now - planned)))

    async def _arrive(self, player: Player) -> ViewerResult:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, self._epoch + player.result.arrival - loop.time()))
        return await player.run()

    def snapshot(self) -> dict[str, Any]:
        """Live counters for progress reports (cheap: no percentiles)."""
        loop = asyncio.get_running_loop()
        states = Counter(p.snapshot_state() for p in self.players)
        errors: Counter = Counter()
        for player in self.players:
            errors.update(player.result.errors)
        return {
            "elapsed": round(loop.time() - self._epoch, 2),
            "arrived": sum(p.state != "pending" for p in self.players),
            "loading": states["loading"], "waiting": states["waiting"], "playing": states["playing"],
            "stalled": states["stalled"], "done": states["done"],
            "requests": sum(len(p.result.requests) for p in self.players),
            "bytes": sum(p.result.bytes for p in self.players),
            "errors": dict(errors),
            "stalls": sum(p.buffer.stalls for p in self.players),
        }

    async def _report(self) -> None:
        loop = asyncio.get_running_loop()
        previous_bytes, previous_at = 0, loop.time()
        for tick in range(1, int(self.deadline / self.progress_interval) + 2):
            await asyncio.sleep(max(0.0, self._epoch + tick * self.progress_interval - loop.time()))
            snapshot = self.snapshot()
            now = loop.time()
            snapshot["bitrate_bps"] = round(8 * (snapshot["bytes"] - previous_bytes) / max(now - previous_at, 1e-3))
            previous_bytes, previous_at = snapshot["bytes"], now
            await self._emit(snapshot)

    async def _emit(self, snapshot: dict[str, Any]) -> None:
        try:
            outcome = self.progress(snapshot)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as error:  # noqa: BLE001 - a broken progress display must not stop the test
            print(f"progress callback failed: {error!r}", file=sys.stderr)


async def run_swarm(url: str, viewers: int, player: PlayerConfig | None = None, **options: Any) -> SwarmResult:
    return await Swarm(url, viewers, player, **options).run()


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="multivariant (or media) playlist URL")
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds each viewer plays")
    parser.add_argument("--spread", type=float, default=0.0, help="arrivals spread over this many seconds")
    parser.add_argument("--rendition", default="top")
    parser.add_argument("--max-bandwidth", type=int, help="bit/s budget for the rendition choice")
    parser.add_argument("--request-timeout", type=float, default=5.0)
    parser.add_argument("--no-low-latency", action="store_true", help="ignore LL-HLS parts")
    parser.add_argument("--json", help="write the summary (and per-viewer results) here")
    args = parser.parse_args(argv)
    config = PlayerConfig(duration=args.duration, rendition=args.rendition, max_bandwidth=args.max_bandwidth,
                          request_timeout=args.request_timeout, low_latency=not args.no_low_latency)

    def show(snapshot: dict[str, Any]) -> None:
        print(json.dumps(snapshot), file=sys.stderr, flush=True)

    result = asyncio.run(run_swarm(args.url, args.viewers, config, spread=args.spread, progress=show))
    summary = result.summary()
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"summary": summary, "viewers": [v.as_dict() for v in result.viewers]}, out, indent=2)
    return 0 if summary["error_count"] == 0 and summary["stalls"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
