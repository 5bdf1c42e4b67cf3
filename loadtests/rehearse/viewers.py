"""Viewers of a rehearsal: HLS / LL-HLS players (loadtests/player.py, real pace) and WHEP viewers
(loadtests/whep.py, real WebRTC sessions), each behaving as the landing page does.

A viewer arrives, waits in the waiting room if told to (in the held line, as the page does, or
after Retry-After from a server without one: loadtests/player.py), gives up if it is not playing
after `patience` seconds, otherwise plays for `stay` seconds and leaves, releasing its admission
slot (`POST /api/admission/leave`, what the page's `pagehide` beacon does) so the next in line gets
in. A WHEP viewer that is refused (429 waiting room, 503 at WebRTC capacity) or cannot connect falls
back to LL-HLS for the rest of its time, as the page does, keeping the place in line it was given.
Each records when it joined the line, was admitted, started playing and left (places.py).
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from typing import Any

import aiohttp

from launchkit.admission.service import QUEUE_COOKIE, TICKET_COOKIE
from launchkit.webrtc.ice import IceSettings
from loadtests.player import KEY_HEADER, Player, PlayerConfig, queue_place
from loadtests.rehearse.profiles import Arrival
from loadtests.rehearse.results import ArrivalResult
from loadtests.whep import WhepResult, watch

WATCH_TICK = 0.25  # seconds between looks at a running player (state for the timeline, deadlines)
LEAVE_TIMEOUT = 2.0
TTFB_KINDS = ("segment", "part")


class RehearsalPlayer(Player):
    """A Player that can hand its admission ticket back when it leaves."""

    def admission_ticket(self) -> str | None:
        # The ticket is one viewer's cookie; Player keeps its cookies to itself.
        morsel = self._cookies.get(TICKET_COOKIE)
        return morsel.value if morsel is not None else None

    def carry(self, client_key: str, ticket: str | None, queue_ticket: str | None) -> None:
        """Arrive as a viewer who already asked: its key, and the ticket or place an earlier answer gave."""
        self.client_key = client_key
        if ticket is not None:
            self._cookies[TICKET_COOKIE] = ticket
        if queue_ticket is not None:
            self._cookies[QUEUE_COOKIE] = queue_ticket


async def hls_viewer(session: aiohttp.ClientSession, base_url: str, arrival: Arrival, record: ArrivalResult, *,
                     low_latency: bool, epoch: float, patience: float | None = None, stay: float | None = None,
                     request_timeout: float = 5.0, client_key: str | None = None, ticket: str | None = None,
                     queue_ticket: str | None = None) -> None:
    """Play `/hls/index.m3u8` until `stay` seconds after playback started (or give up after
    `patience`); fills `record`. `client_key` with `ticket` or `queue_ticket`: a viewer who already
    holds a place (admitted, or in line)."""
    loop = asyncio.get_running_loop()
    patience = arrival.patience if patience is None else patience
    stay = arrival.stay if stay is None else stay
    # Player's own deadline is only a backstop: this function stops it at the right moment.
    config = PlayerConfig(duration=patience + stay + 1.0, low_latency=low_latency, request_timeout=request_timeout)
    player = RehearsalPlayer(session, f"{base_url}/hls/index.m3u8", config, index=arrival.index,
                             arrival=arrival.at, epoch=epoch)
    if client_key is not None:
        player.carry(client_key, ticket, queue_ticket)
    started = loop.time()
    bytes_before = record.bytes  # a WHEP viewer falling back has received some already
    task = asyncio.create_task(player.run())
    try:
        while not task.done():
            playing_since = player.buffer.started_at
            end = playing_since + stay if playing_since is not None else started + patience
            if loop.time() >= end:
                task.cancel()
                break
            record.state = player.snapshot_state()
            record.bytes = bytes_before + player.result.bytes
            await asyncio.wait({task}, timeout=min(WATCH_TICK, max(0.0, end - loop.time())))
    finally:
        if not task.done():
            task.cancel()
        await asyncio.wait({task})
    left_at = round(loop.time() - epoch, 3)
    await _leave(session, base_url, player.admission_ticket())
    record.bytes = bytes_before + player.result.bytes
    _fill_from_player(record, player, epoch, left_at)


def _fill_from_player(record: ArrivalResult, player: Player, epoch: float, left_at: float) -> None:
    """Add what the player measured to `record` (which may hold a WHEP attempt's figures)."""
    result = player.result
    if record.queued_at is None and result.queued_at is not None:
        record.queued_at = round(result.queued_at, 3)
    if record.admitted_at is None and result.admitted_at is not None:  # else admitted by its WHEP answer
        record.admitted_at = round(result.admitted_at, 3)
    record.playing_at = round(player.buffer.started_at - epoch, 3) if player.buffer.started_at is not None else None
    record.left_at = left_at
    record.place = list(result.place) if result.place else record.place
    record.joined = result.startup_seconds is not None
    record.startup = result.startup_seconds
    record.waited += sum(result.waits)
    if result.positions and record.position is None:
        record.position = result.positions[0]
    record.played += result.played_seconds
    record.stalls += result.stalls
    record.rebuffer += result.rebuffer_seconds
    errors = Counter(record.errors)
    errors.update(result.errors)
    record.errors = dict(errors)
    record.http_5xx += sum(r.status >= 500 for r in result.requests)
    for kind in TTFB_KINDS:
        values = [round(r.ttfb, 4) for r in result.requests if r.kind == kind]
        if values:
            record.ttfb.setdefault(kind, []).extend(values)
    record.detail.update(rendition=result.rendition, low_latency=result.low_latency,
                         fell_behind=result.fell_behind, skipped=result.skipped)
    record.state = "done"


async def _leave(session: aiohttp.ClientSession, base_url: str, ticket: str | None) -> None:
    """Free the admission slot now rather than when the ticket expires (best effort, like a beacon)."""
    if ticket is None:
        return
    try:
        async with session.post(f"{base_url}/api/admission/leave", json={"ticket": ticket},
                                timeout=aiohttp.ClientTimeout(total=LEAVE_TIMEOUT)) as response:
            await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError):
        pass


async def whep_viewer(connector: aiohttp.BaseConnector, base_url: str, arrival: Arrival, record: ArrivalResult, *,
                      ice: IceSettings, fps: int, epoch: float) -> None:
    """A WebRTC viewer for `stay` seconds; on refusal or failure, LL-HLS for the time left, as the
    same viewer: its client key, and the admission ticket or the place in line the WHEP answer gave
    (a WHEP 503 "play LL-HLS" comes with a ticket: a second one would hold a second place).
    Needs `loadtests.whep.install_counting_decoders()` once per process."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    record.state = "loading"
    key = secrets.token_urlsafe(16)
    tickets: list[str] = []
    places: list[str] = []

    async def answered(_session: Any, _context: Any, params: aiohttp.TraceRequestEndParams) -> None:
        if params.method != "POST":
            return
        response = params.response
        if response.status == 201:
            record.state = "playing"
        if (morsel := response.cookies.get(TICKET_COOKIE)) is not None and morsel.value:
            record.admitted_at = round(loop.time() - epoch, 3)
            tickets.append(morsel.value)
        elif response.status == 429 and (morsel := response.cookies.get(QUEUE_COOKIE)) is not None:
            record.queued_at = round(loop.time() - epoch, 3)
            places.append(morsel.value)
            if (place := queue_place(morsel.value)) is not None:
                record.place = list(place)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(answered)
    # A session of its own (over the shared connector) to see the answers and the ticket as they come.
    async with aiohttp.ClientSession(connector=connector, connector_owner=False, trace_configs=[trace],
                                     cookie_jar=aiohttp.DummyCookieJar(), headers={KEY_HEADER: key}) as session:
        watching = loop.time()
        result = await watch(session, f"{base_url}/whep", arrival.stay, ice)
        left_at = round(loop.time() - epoch, 3)
        _fill_from_whep(record, result, fps)
        if record.joined:
            await _leave(session, base_url, tickets[-1] if tickets else None)
            record.left_at = left_at
            record.playing_at = round(watching - epoch + result.first_frame_after, 3)  # joined: a first frame
            record.state = "done"
            return
        record.detail["fallback"] = True
        fallback_at = loop.time()
        await hls_viewer(session, base_url, arrival, record, low_latency=True, epoch=epoch,
                         patience=max(0.0, arrival.patience - (fallback_at - started)), client_key=key,
                         ticket=tickets[-1] if tickets else None, queue_ticket=places[-1] if places else None)
        if record.startup is not None:  # the viewer has been waiting since the WHEP attempt
            record.startup += fallback_at - started


def _fill_from_whep(record: ArrivalResult, result: WhepResult, fps: int) -> None:
    status = result.status
    record.detail.update(status=status, frames=result.frames, expected_frames=result.expected_frames(fps),
                         first_frame_after=result.first_frame_after, connected_after=result.connected_after,
                         video_codec=result.video_codec, keyframes=result.keyframes,
                         audio_packets=result.audio_packets, error=result.error)
    record.bytes += result.bytes
    if status is not None and status >= 500 and not (status == 503 and result.retry_after is not None):
        record.http_5xx += 1
        _count(record, f"whep_http_{status}")
    elif status == 201 and result.error:
        _count(record, "whep_" + result.error.split(":", 1)[0])
    elif status is None:
        _count(record, "whep_" + (result.error or "no_answer").split(":", 1)[0])
    record.joined = status == 201 and result.frames > 0
    if record.joined:
        record.startup = result.first_frame_after
        # A freeze longer than 0.25 s is what a viewer sees as rebuffering.
        record.stalls = len(result.gaps)
        record.rebuffer = sum(result.gaps)
        record.played = max(0.0, result.expected_frames(fps) / fps - record.rebuffer)


def _count(record: ArrivalResult, error: str) -> None:
    record.errors[error] = record.errors.get(error, 0) + 1
