"""LL-HLS delivery rules of the origin, over real HTTP on loopback, with the packets fed by the test:
blocking playlist reload, preload-hinted parts, the 400/404/503 answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from launchkit.origin.hls import HlsHandlers
from stream.packager import cmaf
from stream.packager.hls import HlsPackager, RenditionInfo, RenditionPackager
from stream.packet import EncodedPacket
from tests.support.media import encode_lavfi


@pytest.fixture(scope="module")
def encoded():
    return encode_lavfi(8.2)


class Feed:
    """The encoder side, driven by the test: packets go in only when the test says so."""

    def __init__(self, rendition: RenditionPackager, packets: list[EncodedPacket]) -> None:
        self.rendition = rendition
        self._packets: Iterator[EncodedPacket] = iter(packets)
        self._published = 0
        rendition.part_listeners.append(lambda r, part: setattr(self, "_published", self._published + 1))

    def parts(self, count: int = 1) -> None:
        """Feed until `count` more parts are published."""
        target = self._published + count
        while self._published < target:
            self.rendition.on_packet(next(self._packets))


@pytest.fixture
async def origin(encoded):
    video, audio, packets = encoded
    rendition = RenditionPackager(
        RenditionInfo("180p", 320, 180, 30, 600_000, 500_000),
        cmaf.VideoTrack(1, 90000, 320, 180, video.parameter_sets), cmaf.AudioTrack(2, audio.config),
        segment_duration=1.0, window=3,
    )
    handlers = HlsHandlers(HlsPackager([rendition]), lambda request: True)
    app = web.Application()
    app.add_routes([
        web.get("/hls/{rendition}/index.m3u8", handlers.media_playlist),
        web.get("/hls/{rendition}/{name}", handlers.media),
    ])
    feed = Feed(rendition, packets)
    feed.parts(6)  # three complete segments of two parts
    async with TestClient(TestServer(app)) as client:
        yield client, feed


def _playlist_url(query: str = "") -> str:
    return "/hls/180p/index.m3u8" + (f"?{query}" if query else "")


async def _pending(client: TestClient, url: str) -> asyncio.Task:
    task = asyncio.create_task(client.get(url))
    await asyncio.sleep(0.1)
    assert not task.done(), "answered before the media exists"
    return task


async def test_plain_playlist_is_revalidated_by_caches(origin):
    client, feed = origin
    response = await client.get(_playlist_url())
    assert response.status == 200 and response.headers["Cache-Control"] == "public, no-cache"
    ignored = await client.get(_playlist_url("_HLS_skip=YES"))  # no CAN-SKIP-UNTIL: a plain request
    assert ignored.status == 200 and await ignored.text() == await response.text()


@pytest.mark.parametrize("query", [
    "_HLS_msn=abc", "_HLS_msn=-1", "_HLS_msn=1.5", "_HLS_msn=", "_HLS_msn=%2B5", "_HLS_msn=12345678901",
    "_HLS_msn=1&_HLS_msn=2", "_HLS_part=1", "_HLS_msn=1&_HLS_part=x", "_HLS_msn=1&_HLS_part=-1",
])
async def test_malformed_delivery_directives_are_400(origin, query):
    client, _ = origin
    response = await client.get(_playlist_url(query))
    assert response.status == 400, query
    assert "_HLS_" in await response.text() and response.headers["Cache-Control"] == "no-store"


async def test_too_far_ahead_is_400_at_once(origin):
    client, feed = origin
    last = feed.rendition.last_sequence
    started = time.monotonic()
    assert (await client.get(_playlist_url(f"_HLS_msn={last + 3}"))).status == 400
    # Six parts of 0.5 s is the Advance Part Limit (three seconds).
    assert (await client.get(_playlist_url(f"_HLS_msn={last + 1}&_HLS_part=6"))).status == 400
    assert time.monotonic() - started < 0.5


async def test_blocking_reload_answers_when_the_next_part_is_published(origin):
    client, feed = origin
    last = feed.rendition.last_part
    assert last.index == 1  # the final part of the last complete segment
    # §6.2.5.2: an index past the final part means part 0 of the next segment.
    task = await _pending(client, _playlist_url(f"_HLS_msn={last.sequence}&_HLS_part={last.index + 1}"))
    feed.parts(1)
    response = await asyncio.wait_for(task, 1)
    assert response.status == 200
    assert f'URI="{last.sequence + 1}.0.m4s",INDEPENDENT=YES' in await response.text()
    assert response.headers["Cache-Control"] == "public, max-age=3"  # three target durations
    # The next part of the same segment.
    task = await _pending(client, _playlist_url(f"_HLS_msn={last.sequence + 1}&_HLS_part=1"))
    feed.parts(1)
    assert f'URI="{last.sequence + 1}.1.m4s"' in await (await asyncio.wait_for(task, 1)).text()


async def test_blocking_reload_for_a_segment_waits_for_the_whole_segment(origin):
    client, feed = origin
    following = feed.rendition.last_sequence + 1
    task = await _pending(client, _playlist_url(f"_HLS_msn={following}"))
    feed.parts(1)
    await asyncio.sleep(0.1)
    assert not task.done()  # a part of it is not the segment
    feed.parts(1)
    assert f"\n{following}.m4s\n" in await (await asyncio.wait_for(task, 1)).text()


async def test_what_is_already_there_is_answered_at_once(origin):
    client, feed = origin
    for query in (f"_HLS_msn={feed.rendition.last_sequence}", f"_HLS_msn={feed.rendition.last_sequence - 5}&_HLS_part=0"):
        response = await asyncio.wait_for(client.get(_playlist_url(query)), 0.5)
        assert response.status == 200, query


async def test_a_request_the_stream_cannot_satisfy_in_time_is_503(origin):
    client, feed = origin
    last = feed.rendition.last_part
    started = time.monotonic()
    response = await client.get(_playlist_url(f"_HLS_msn={last.sequence + 1}&_HLS_part=0"))  # nothing is fed
    elapsed = time.monotonic() - started
    assert response.status == 503 and response.headers["Retry-After"] == "1"
    assert response.headers["Cache-Control"] == "no-store"
    assert 2.9 <= elapsed < 3.5  # three target durations of 1 s, then an answer: never a hang


async def test_a_preload_hinted_part_is_served_once_published(origin):
    client, feed = origin
    text = await (await client.get(_playlist_url())).text()
    hint = text.split('#EXT-X-PRELOAD-HINT:TYPE=PART,URI="')[1].split('"')[0]
    task = await _pending(client, f"/hls/180p/{hint}")
    feed.parts(1)
    response = await asyncio.wait_for(task, 1)
    assert response.status == 200 and response.headers["Cache-Control"].endswith("immutable")
    assert await response.read() == bytes(feed.rendition.part(hint).data)


async def test_parts_that_will_not_come_soon_are_404_at_once(origin):
    client, feed = origin
    last = feed.rendition.last_part
    started = time.monotonic()
    for name in (
        f"{last.sequence + 1}.1.m4s",  # after the hint: no playlist names it yet
        f"{last.sequence + 3}.0.m4s",
        f"{last.sequence - 9}.0.m4s",  # expired long ago
        f"{last.sequence + 1}.m4s",  # a segment in progress is never hinted
    ):
        response = await client.get(f"/hls/180p/{name}")
        assert response.status == 404, name
    assert time.monotonic() - started < 0.5
