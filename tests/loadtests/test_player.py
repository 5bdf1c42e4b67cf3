"""The simulated HLS / LL-HLS player (`loadtests/player.py`): against a real `launchkit demo` (and its
held line), and against tiny aiohttp servers that play a waiting room (with and without the
admission API), a stalled server and an LL-HLS origin."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp import web

from loadtests.player import (
    Cursor,
    PlaybackBuffer,
    Player,
    PlayerConfig,
    Swarm,
    choose_variant,
    parse_media_playlist,
    parse_multivariant,
    parse_retry_after,
    percentiles,
    queue_place,
    run_swarm,
    start_cursor,
)
from loadtests.target import start_demo

# ---------------------------------------------------------------------------------------------
# Parsing and start position (RFC 8216bis), no network
# ---------------------------------------------------------------------------------------------

# Shaped like the LL-HLS example of draft-pantos-hls-rfc8216bis (appendix), shortened.
LL_PLAYLIST = """#EXTM3U
#EXT-X-TARGETDURATION:4
#EXT-X-VERSION:6
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,CAN-SKIP-UNTIL=12.0
#EXT-X-PART-INF:PART-TARGET=0.33334
#EXT-X-MEDIA-SEQUENCE:266
#EXT-X-PROGRAM-DATE-TIME:2019-02-14T02:13:36.106Z
#EXT-X-MAP:URI="init.mp4"
#EXTINF:4.00008,
fileSequence266.mp4
#EXTINF:4.00008,
fileSequence267.mp4
#EXTINF:4.00008,
fileSequence268.mp4
#EXTINF:4.00008,
fileSequence269.mp4
#EXTINF:4.00008,
fileSequence270.mp4
""" + "".join(
    f'#EXT-X-PART:DURATION=0.33334,URI="filePart271.{i}.mp4"{",INDEPENDENT=YES" if i % 4 == 0 else ""}\n'
    for i in range(12)
) + """#EXTINF:4.00008,
fileSequence271.mp4
#EXT-X-PROGRAM-DATE-TIME:2019-02-14T02:14:00.106Z
#EXT-X-PART:DURATION=0.33334,URI="filePart272.a.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33334,URI="filePart272.b.mp4"
#EXT-X-PART:DURATION=0.33334,URI="filePart272.c.mp4"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="filePart272.d.mp4"
#EXT-X-RENDITION-REPORT:URI="../1M/waitForMSN.php",LAST-MSN=273,LAST-PART=2
"""


def test_ll_playlist_parts_belong_to_their_segment_and_the_open_one_is_last():
    playlist = parse_media_playlist(LL_PLAYLIST, "https://example.com/2M/waitForMSN.php")
    assert playlist.low_latency and playlist.can_block_reload
    assert playlist.part_target == pytest.approx(0.33334)
    assert playlist.part_hold_back == 1.0 and playlist.can_skip_until == 12.0
    assert [s.msn for s in playlist.segments] == list(range(266, 273))
    closed, open_ = playlist.segments[-2], playlist.segments[-1]
    assert closed.complete and len(closed.parts) == 12 and closed.uri == "https://example.com/2M/fileSequence271.mp4"
    assert not open_.complete and [p.uri.rsplit("/", 1)[1] for p in open_.parts] == [
        "filePart272.a.mp4", "filePart272.b.mp4", "filePart272.c.mp4"]
    assert playlist.preload_hint == "https://example.com/2M/filePart272.d.mp4"
    assert playlist.last_msn == 271
    assert playlist.segments[0].map_uri == "https://example.com/2M/init.mp4"
    # The next blocking reload asks for the part after the last one listed (§6.2.5.2).
    assert playlist.next_blocking_request(with_parts=True) == (272, 3)
    assert playlist.next_blocking_request(with_parts=False) == (272, None)


def test_start_position_honours_part_hold_back_and_independent_parts():
    playlist = parse_media_playlist(LL_PLAYLIST, "https://example.com/2M/x.m3u8")
    # PART-HOLD-BACK 1.0 s = the three open parts: start at the open segment's first part.
    assert start_cursor(playlist, low_latency=True) == Cursor(272, 0)
    # 2.0 s back lands inside 271 (at 3.0 s of its 4 s): the latest independent part before it is .8
    playlist.part_hold_back = 2.0
    assert start_cursor(playlist, low_latency=True) == Cursor(271, 8)
    # Without low latency: three target durations (12 s) from the last complete segment's end.
    assert start_cursor(playlist, low_latency=False) == Cursor(269, None)


def test_plain_playlist_start_is_three_target_durations_from_the_end():
    text = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:10\n" + "".join(
        f"#EXTINF:2.0,\n{n}.m4s\n" for n in range(10, 16))
    playlist = parse_media_playlist(text, "http://h/hls/720p/index.m3u8")
    assert start_cursor(playlist, low_latency=True) == Cursor(13, None)  # no parts: plain HLS rules
    assert playlist.next_blocking_request(with_parts=True) == (16, None)


def test_part_byteranges_follow_each_other_without_an_offset():
    text = ("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PART-INF:PART-TARGET=0.5\n#EXT-X-MEDIA-SEQUENCE:1\n"
            '#EXT-X-PART:DURATION=0.5,URI="s1.mp4",BYTERANGE="100@0",INDEPENDENT=YES\n'
            '#EXT-X-PART:DURATION=0.5,URI="s1.mp4",BYTERANGE="150"\n#EXTINF:1.0,\ns1.mp4\n')
    segment = parse_media_playlist(text, "http://h/a/p.m3u8").segments[0]
    assert [p.byterange for p in segment.parts] == [(0, 100), (100, 150)]


def test_variant_choice_top_named_and_by_bandwidth_budget():
    text = ("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=3500000,RESOLUTION=1280x720\n720p/index.m3u8\n"
            "#EXT-X-STREAM-INF:BANDWIDTH=1400000,RESOLUTION=854x480\n480p/index.m3u8\n"
            "#EXT-X-STREAM-INF:BANDWIDTH=700000,RESOLUTION=640x360\n360p/index.m3u8\n")
    variants = parse_multivariant(text, "http://h/hls/index.m3u8")
    assert choose_variant(variants).uri == "http://h/hls/720p/index.m3u8"
    assert choose_variant(variants, "bottom").name == "360p"
    assert choose_variant(variants, "480p").name == "480p"
    assert choose_variant(variants, max_bandwidth=2_000_000).name == "480p"
    assert choose_variant(variants, max_bandwidth=100_000).name == "360p"  # nothing fits: the lowest


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("-1") is None and parse_retry_after("soon") is None
    later = datetime.now(timezone.utc) + timedelta(seconds=30)
    assert 28 <= parse_retry_after(format_datetime(later, usegmt=True)) <= 30


def test_playback_buffer_counts_stalls_and_rebuffer_time():
    buffer = PlaybackBuffer()
    buffer.append(2.0, now=10.0, part=False)  # one segment: playback starts
    assert buffer.started_at == 10.0
    buffer.tick(13.0)  # ran dry at 12.0
    assert buffer.stalled and buffer.stalls == 1
    buffer.append(2.0, now=13.5, part=False)
    assert not buffer.stalled and buffer.rebuffer_seconds == pytest.approx(1.5)
    buffer.finish(20.0)  # dry again at 15.5, still stalled at the end
    assert buffer.stalls == 2 and buffer.rebuffer_seconds == pytest.approx(1.5 + 4.5)


def test_percentiles_nearest_rank():
    stats = percentiles([float(i) for i in range(1, 101)])
    assert (stats["p50"], stats["p95"], stats["p99"], stats["max"], stats["count"]) == (50, 95, 99, 100, 100)
    assert percentiles([])["p99"] is None


# ---------------------------------------------------------------------------------------------
# Against a real `launchkit demo`
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    """One 360p rendition with 1 s segments: cheap to encode, quick to fill its playlist."""
    with start_demo("--ladder", "360p:640x360:600", "--segment-duration", "1",
                    log_dir=tmp_path_factory.mktemp("player-demo")) as demo:
        time.sleep(4)  # a full live window, so viewers join three segments from the edge
        yield demo


def _msn_and_part(url: str) -> tuple[int, int]:
    """`…/1795791737.m4s` → (1795791737, -1) for a segment, `…/1795791739.1.m4s` → (…, 1) for a part."""
    match = re.search(r"/(\d+)(?:\.(\d+))?\.m4s$", url)
    return int(match.group(1)), int(match.group(2)) if match.group(2) is not None else -1


@pytest.mark.parametrize("low_latency", [False, True], ids=["hls", "ll-hls"])
async def test_twenty_viewers_play_the_demo_without_errors_or_stalls(small_demo, low_latency):
    if low_latency:
        with urllib.request.urlopen(small_demo.url + "/hls/360p/index.m3u8", timeout=5) as response:
            assert b"#EXT-X-PART-INF" in response.read()  # the origin serves LL-HLS
    snapshots = []
    config = PlayerConfig(duration=8.0, low_latency=low_latency)
    result = await run_swarm(small_demo.url + "/hls/index.m3u8", 20, config, spread=1.0, progress=snapshots.append)
    summary = result.summary()
    assert summary["error_count"] == 0, summary["errors"]
    assert summary["started"] == 20 and summary["stalls"] == 0
    assert summary["startup_seconds"]["max"] < 3.0
    assert summary["duplicate_fetches"] == 0 and summary["fell_behind"] == 0 and summary["skipped"] == 0
    assert summary["cancelled"] == 0 and result.wall_seconds < 1.0 + 8.0 + 1.0
    assert summary["low_latency_viewers"] == (20 if low_latency else 0)
    for viewer in result.viewers:
        media = [r.url for r in viewer.requests if r.kind in ("segment", "part")]
        assert len(media) == len(set(media)), "a segment or part was fetched twice"
        # In order, nothing skipped: every segment number from the first one, each either whole or
        # as parts from its first part on (a viewer joining mid-segment starts on an independent part).
        units = [_msn_and_part(url) for url in media]
        assert units == sorted(units)
        msns = sorted({msn for msn, _ in units})
        assert msns == list(range(msns[0], msns[0] + len(msns))), "a segment was skipped"
        for msn in msns[1:]:
            parts = [part for m, part in units if m == msn]
            assert parts == [-1] or parts == list(range(len(parts))), (msn, parts)
        assert viewer.played_seconds > 8.0 - 1.0  # played from startup to leaving, no stall
        if low_latency:
            assert any(r.kind == "part" for r in viewer.requests)
            # The product's ≤ 3 s is shown with hls.js in Chromium (test_llhls.py); this simulator runs 20
            # viewers on the demo's own 2 cores, so it gets half a second of slack for scheduling.
            assert viewer.latency_seconds is not None and viewer.latency_seconds < 3.5
        else:
            # Real pace: three segments to start, then about one per segment duration, and about
            # one playlist (re)load per target duration (blocking or not), never a tight loop.
            assert 8 <= len(media) <= 13
            assert 5 <= sum(r.kind.startswith("playlist") for r in viewer.requests) <= 12
            assert viewer.latency_seconds is not None and 2.0 < viewer.latency_seconds < 5.0
        assert viewer.rendition == "360p"
    # Progress arrives about once a second and ends with everyone gone.
    assert 8 <= len(snapshots) <= 12 and snapshots[-1]["done"] == 20
    assert max(s["playing"] for s in snapshots) == 20


# ---------------------------------------------------------------------------------------------
# Tiny servers: a wall-clock live stream with knobs
# ---------------------------------------------------------------------------------------------

class FakeLive:
    """A live HLS stream computed from the clock (segments of `segment` s, `parts` parts each in
    LL-HLS mode, with blocking reload), optionally behind a waiting room or stalling."""

    def __init__(self, *, segment: float = 1.0, parts: int = 0, window: int = 6, size: int = 20_000,
                 retry_after: int = 0, stall: str | None = None, says_held: bool = False) -> None:
        self.segment, self.parts, self.window, self.size = segment, parts, window, size
        self.retry_after, self.stall = retry_after, stall
        self.says_held = says_held  # answers like a Launchkit waiting room, but has no /api/admission
        self.t0 = time.monotonic() - window * segment  # the window is full from the start
        self.log: list[tuple[float, str]] = []
        self.tickets: dict[str, float] = {}
        self.early_retries = 0

    @property
    def part_duration(self) -> float:
        return self.segment / self.parts

    def _edge(self) -> tuple[int, int]:
        """(segment being produced, parts of it already complete)."""
        elapsed = time.monotonic() - self.t0
        current = int(elapsed // self.segment)
        done = int((elapsed - current * self.segment) // self.part_duration) if self.parts else 0
        return current, done

    def _available(self, msn: int, part: int | None) -> bool:
        current, done = self._edge()
        return msn < current or (part is not None and msn == current and part < done)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/hls/index.m3u8", self.multivariant)
        app.router.add_get("/hls/v/index.m3u8", self.media_playlist)
        app.router.add_get("/hls/v/{name}", self.media)
        return app

    async def _maybe_stall(self, what: str) -> None:
        if self.stall == "all" or self.stall == what:
            await asyncio.sleep(30)  # longer than any test: the client must give up by itself

    async def multivariant(self, request: web.Request) -> web.Response:
        self.log.append((time.monotonic(), request.path_qs))
        await self._maybe_stall("playlist")
        if self.retry_after:
            ticket = request.cookies.get("ticket")
            now = time.monotonic()
            if ticket is None or ticket not in self.tickets:
                ticket = f"t{len(self.tickets)}"
                self.tickets[ticket] = now
                response = web.Response(status=429, text="waiting room",
                                        headers={"Retry-After": str(self.retry_after)})
                if self.says_held:
                    response = web.json_response(
                        {"admitted": False, "position": len(self.tickets), "held": False,
                         "ticket": f"q.fake.{len(self.tickets)}.0.signature-is-not-checked"},
                        status=429, headers={"Retry-After": str(self.retry_after)})
                response.set_cookie("ticket", ticket)
                return response
            if now - self.tickets[ticket] < self.retry_after:
                self.early_retries += 1
                left = self.retry_after - (now - self.tickets[ticket])
                return web.Response(status=429, text="too early", headers={"Retry-After": str(math.ceil(left))})
        return web.Response(text="#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=200000,RESOLUTION=640x360\nv/index.m3u8\n",
                            content_type="application/vnd.apple.mpegurl")

    async def media_playlist(self, request: web.Request) -> web.Response:
        self.log.append((time.monotonic(), request.path_qs))
        await self._maybe_stall("playlist")
        if "_HLS_msn" in request.query:
            msn = int(request.query["_HLS_msn"])
            part = int(request.query["_HLS_part"]) if "_HLS_part" in request.query else None
            for _ in range(int(3 * math.ceil(self.segment) / 0.01)):
                if self._available(msn, part):
                    break
                await asyncio.sleep(0.01)
            else:
                return web.Response(status=503, text="not produced in time")
        return web.Response(text=self._render(), content_type="application/vnd.apple.mpegurl")

    def _render(self) -> str:
        current, done = self._edge()
        first = max(0, current - self.window)
        lines = ["#EXTM3U", "#EXT-X-VERSION:9", f"#EXT-X-TARGETDURATION:{math.ceil(self.segment)}"]
        if self.parts:
            lines += [f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={3 * self.part_duration:.3f}",
                      f"#EXT-X-PART-INF:PART-TARGET={self.part_duration:.3f}"]
        lines += [f"#EXT-X-MEDIA-SEQUENCE:{first}", '#EXT-X-MAP:URI="init.mp4"']
        for msn in range(first, current):
            if self.parts and msn >= current - 2:  # parts listed for the last two segments only
                lines += self._parts(msn, self.parts)
            lines += [f"#EXTINF:{self.segment:.3f},", f"{msn}.m4s"]
        if self.parts:
            lines += self._parts(current, done)
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{current}.{done}.m4s"')
        return "\n".join(lines) + "\n"

    def _parts(self, msn: int, count: int) -> list[str]:
        return [f'#EXT-X-PART:DURATION={self.part_duration:.3f},URI="{msn}.{p}.m4s"'
                + (",INDEPENDENT=YES" if p == 0 else "") for p in range(count)]

    async def media(self, request: web.Request) -> web.Response:
        self.log.append((time.monotonic(), request.path_qs))
        await self._maybe_stall("media")
        name = request.match_info["name"]
        if name == "init.mp4":
            return web.Response(body=b"\0" * 700, content_type="video/mp4")
        match = re.fullmatch(r"(\d+)(?:\.(\d+))?\.m4s", name)
        if not match:
            raise web.HTTPNotFound()
        msn, part = int(match.group(1)), match.group(2)
        if not self._available(msn, int(part) if part is not None else None):
            raise web.HTTPNotFound()
        size = self.size // self.parts if part is not None else self.size
        return web.Response(body=b"\0" * size, content_type="video/mp4")


@contextlib.asynccontextmanager
async def serve(fake: FakeLive):
    runner = web.AppRunner(fake.app(), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hls/index.m3u8"
    finally:
        await runner.cleanup()


async def test_waiting_room_retry_after_is_honoured_never_earlier_and_recorded():
    fake = FakeLive(retry_after=2)
    async with serve(fake) as url:
        result = await run_swarm(url, 3, PlayerConfig(duration=5.0))
    summary = result.summary()
    assert fake.early_retries == 0
    assert summary["waiting_room"] == {"answers": 3, "viewers": 3, "seconds": 6.0, "max_seconds": 2.0}
    assert len(fake.tickets) == 3  # one admission ticket per viewer: cookies are not shared
    for viewer in result.viewers:
        assert viewer.waits == [2.0]
        first, retry = [r for r in viewer.requests if r.kind == "multivariant"]
        assert first.status == 429 and retry.status == 200
        assert retry.started - first.started >= 2.0
        assert viewer.startup_seconds >= 2.0 and not viewer.errors
    assert summary["error_count"] == 0 and summary["stalls"] == 0 and summary["started"] == 3


async def test_a_waiting_room_without_the_held_line_api_is_waited_out_with_retry_after():
    fake = FakeLive(retry_after=2, says_held=True)
    async with serve(fake) as url:
        result = await run_swarm(url, 2, PlayerConfig(duration=5.0))
    assert fake.early_retries == 0
    for viewer in result.viewers:
        asked = [r for r in viewer.requests if r.kind == "admission"]
        assert [(r.status, r.url.rsplit("/", 1)[1]) for r in asked] == [(404, "admission?wait=25")]
        assert viewer.waits[-1] == 2.0 and not viewer.errors  # then Retry-After, exactly; a 404 is no error
        assert viewer.place == ("fake", viewer.positions[0]) and viewer.admitted_at > viewer.queued_at + 2.0
        assert viewer.startup_seconds >= 2.0 and viewer.played_seconds > 0


def test_a_queue_ticket_names_its_place():
    assert queue_place("q.g.42.1700000000000.abcdefghijklmnopqrstuvwx") == ("g", 42)
    assert queue_place("a.id.1700000000.binding.sig") is None
    assert queue_place("q.g.٤٢.1.sig") is None  # digits, ASCII ones


def test_a_queued_viewer_is_admitted_by_the_held_line_as_soon_as_a_place_frees(tmp_path):
    """A real demo with one place: the second viewer holds `POST /api/admission?wait=25` with its own
    client key and is let in the moment the first one leaves; its ticket is bound to that key, so its
    media requests are served only because it sends the key (a copied ticket would wait in line)."""

    async def scene(url: str) -> tuple[Player, Player, float]:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            first = Player(session, url + "/hls/index.m3u8", PlayerConfig(duration=3.0))
            second = Player(session, url + "/hls/index.m3u8", PlayerConfig(duration=8.0))
            playing = asyncio.create_task(first.run())
            await asyncio.sleep(0.5)
            waiting = asyncio.create_task(second.run())
            await playing
            ticket = first._cookies["lk_ticket"].value
            loop = asyncio.get_running_loop()
            left = loop.time() - second._epoch
            async with session.post(url + "/api/admission/leave", json={"ticket": ticket}) as response:
                assert response.status == 204
            await waiting
            return first, second, left

    with start_demo("--ladder", "360p:640x360:600", "--segment-duration", "1", "--max-viewers", "1",
                    log_dir=tmp_path) as demo:
        time.sleep(2)
        first, second, left = asyncio.run(scene(demo.url))
    assert first.result.queued_at is None and first.result.admitted_at is not None
    viewer = second.result
    held = [r for r in viewer.requests if r.kind == "admission"]
    assert [(r.status, r.url.rsplit("/", 1)[1]) for r in held] == [(200, "admission?wait=25")]
    assert viewer.held_requests == 1 and viewer.positions == [1] and viewer.place[1] >= 1
    freed_to_admitted = viewer.admitted_at - left
    print(f"\nheld line: place freed -> next viewer admitted in {freed_to_admitted * 1000:.0f} ms, "
          f"held {viewer.waits[0]:.2f} s")
    assert 0 <= freed_to_admitted < 1.0
    assert viewer.waits[0] == pytest.approx(viewer.admitted_at - viewer.queued_at, abs=0.05)
    # Admitted, it plays: every media request after the admission was served with its bound ticket.
    after = [r for r in viewer.requests if r.started >= viewer.admitted_at]
    assert after and all(r.status == 200 for r in after) and not viewer.errors
    assert viewer.startup_seconds is not None and viewer.stalls == 0
    # The key came from the viewer's own header: the server never had to make one up (an lk_key cookie).
    assert "lk_key" not in second._cookies and "lk_key" not in first._cookies


@pytest.mark.parametrize("stall", ["media", "all"])
async def test_a_stalling_server_gives_timeouts_and_the_run_ends_on_time(stall):
    fake = FakeLive(stall=stall)
    async with serve(fake) as url:
        started = time.monotonic()
        result = await run_swarm(url, 4, PlayerConfig(duration=4.0, request_timeout=1.0, retry_delay=0.2))
        elapsed = time.monotonic() - started
    assert elapsed < 4.0 + 1.0  # every viewer left at its deadline, mid-request
    summary = result.summary()
    assert summary["cancelled"] == 0
    assert summary["errors"].get("timeout", 0) >= 4 * 2 and set(summary["errors"]) == {"timeout"}
    assert summary["started"] == 0 and summary["never_started"] == 4


async def test_low_latency_viewers_use_blocking_reloads_and_fetch_each_part_once():
    fake = FakeLive(segment=1.0, parts=4, size=40_000)
    async with serve(fake) as url:
        swarm = Swarm(url, 5, PlayerConfig(duration=5.0), spread=0.5)
        result = await swarm.run()
    summary = result.summary()
    assert summary["error_count"] == 0, summary["errors"]
    assert summary["low_latency_viewers"] == 5 and summary["stalls"] == 0
    assert summary["duplicate_fetches"] == 0 and summary["skipped"] == 0
    for viewer in result.viewers:
        blocking = [r for r in viewer.requests if r.kind == "playlist_blocking"]
        assert blocking and all("_HLS_msn=" in r.url and "&_HLS_part=" in r.url for r in blocking)
        assert not [r for r in viewer.requests if r.kind == "playlist"][1:]  # only the first load is plain
        parts = [r.url for r in viewer.requests if r.kind == "part"]
        assert len(parts) == len(set(parts)) >= 4 * 4  # ~4 parts per second at real pace
        # Joined PART-HOLD-BACK (3 parts = 0.75 s) from the edge, started after 3 parts.
        assert viewer.startup_seconds < 1.0
    # Requests never ran ahead of the stream: every part and segment existed when asked for.
    assert all("404" not in str(e) for e in summary["errors"])
