"""The fan-out without a network: packetized once and shared, every viewer starts at a keyframe,
a viewer whose sender stops reading stays bounded, keyframe requests are rate-limited; the
origin→edge feed's wire format; WHEP refusals (no ICE involved)."""

from __future__ import annotations

import asyncio
import gc
from fractions import Fraction

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCPeerConnection

from launchkit.webrtc.ice import IceSettings
from launchkit.webrtc.whep import WhepEndpoint
from stream.bus import PacketBus
from stream.packet import EncodedPacket
from stream.webrtc import feed
from stream.webrtc.fanout import MAX_QUEUED_VIDEO, SHARED_PACKETIZER, Fanout, packetize

IDR = b"\x00\x00\x00\x01\x67\x42\xc0\x1e\xda" + b"\x00\x00\x00\x01\x68\xce\x3c\x80" + b"\x00\x00\x00\x01\x65" + b"\x88" * 3000
P_FRAME = b"\x00\x00\x00\x01\x41" + b"\x9a" * 500


def video(index: int, keyframe: bool = False) -> EncodedPacket:
    return EncodedPacket("video", "webrtc", IDR if keyframe else P_FRAME, index * 6000, index * 6000, 6000,
                         Fraction(1, 90000), keyframe, 1_800_000_000.0 + index / 15)


def audio(index: int) -> EncodedPacket:
    return EncodedPacket("audio", "opus", b"\xfc" * 40, index * 960, index * 960, 960, Fraction(1, 48000), True, 0.0)


class Encoder:
    def __init__(self) -> None:
        self.requests = 0

    def request_keyframe(self) -> None:
        self.requests += 1


def test_a_frame_is_packetized_once_into_rtp_sized_payloads():
    frame = packetize(video(3, keyframe=True))
    assert frame.keyframe and frame.timestamp == 18000 and len(frame.payloads) >= 3
    assert all(len(payload) <= 1300 for payload in frame.payloads)
    assert SHARED_PACKETIZER.pack(frame) == (frame.payloads, 18000)
    assert packetize(audio(2)).timestamp == 1920


async def test_viewers_start_at_a_keyframe_and_share_the_same_payload_objects():
    encoder = Encoder()
    fanout = Fanout(PacketBus(), encoder.request_keyframe, min_keyframe_interval=0.05)
    first, second = fanout.join(), fanout.join()
    for packet in (video(0), audio(0), video(1, keyframe=True), audio(1), video(2)):
        fanout.on_packet(packet)
    a = [await first.next("video"), await first.next("video")]
    b = [await second.next("video"), await second.next("video")]
    assert a[0].keyframe and [f.timestamp for f in a] == [6000, 12000]
    assert a[0] is b[0] and a[1] is b[1]  # one RtpFrame (one packetization) for every viewer
    assert (await first.next("audio")).timestamp == 960  # audio starts with the picture
    assert encoder.requests == 1  # two joins within the interval: one keyframe asked of the encoder


async def test_a_viewer_that_stops_reading_drops_to_the_next_keyframe_and_stays_bounded():
    encoder = Encoder()
    fanout = Fanout(PacketBus(), encoder.request_keyframe, min_keyframe_interval=0.0)
    stuck, reading = fanout.join(), fanout.join()
    received = []
    fanout.on_packet(video(0, keyframe=True))
    for index in range(1, 200):
        fanout.on_packet(video(index, keyframe=index % 60 == 0))
        fanout.on_packet(audio(index))
        received.append(await reading.next("video"))
        assert stuck.queued() <= MAX_QUEUED_VIDEO + 25
    assert len(received) == 199 and reading.frames_dropped == 0  # the reader lost nothing
    assert stuck.frames_dropped > 150 and encoder.requests >= 2  # asked for keyframes to resume at
    while stuck.queued():  # its sender catches up with what is queued...
        await stuck.next("video" if stuck._queues["video"] else "audio")
    fanout.on_packet(video(200))
    fanout.on_packet(video(201, keyframe=True))
    assert (await stuck.next("video")).timestamp in (200 * 6000, 201 * 6000)  # ...and goes on, whole frames only


async def test_keyframe_requests_are_merged_to_one_per_interval():
    encoder = Encoder()
    fanout = Fanout(PacketBus(), encoder.request_keyframe, min_keyframe_interval=0.2)
    for _ in range(50):
        fanout.request_keyframe("picture loss")
    assert encoder.requests == 1
    await asyncio.sleep(0.3)
    assert encoder.requests == 2  # the 49 later ones became one, at the end of the interval
    assert (fanout.keyframes_asked, fanout.keyframes_requested) == (50, 2)
    fanout.stop()


def test_feed_messages_round_trip_and_garbage_is_refused():
    for packet in (video(7, keyframe=True), audio(3)):
        assert feed.decode(feed.encode(packet)) == packet
    for garbage in (b"", b"\x00" * 10, b"\x07" + bytes(feed.HEADER.size)):
        with pytest.raises(ValueError):
            feed.decode(garbage)


def peer_connections() -> int:
    """Live RTCPeerConnection objects in this process: a refused offer must leave none behind."""
    gc.collect()
    return sum(isinstance(o, RTCPeerConnection) and o.connectionState != "closed" for o in gc.get_objects())


@pytest.fixture
async def whep():
    fanout = Fanout(PacketBus(), lambda: None)
    endpoint = WhepEndpoint(fanout, IceSettings(addresses=("127.0.0.1",)), max_viewers=1)
    app = web.Application()
    app.add_routes([web.post("/whep", endpoint.post), web.patch("/whep/{session}", endpoint.patch),
                    web.delete("/whep/{session}", endpoint.delete)])
    before = peer_connections()
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client
        assert endpoint.sessions == 0 and fanout.viewers == 0
        assert peer_connections() == before  # nothing leaked by the refusals


VP8_ONLY = """v=0\r
o=- 1 1 IN IP4 127.0.0.1\r
s=-\r
t=0 0\r
a=group:BUNDLE 0\r
m=video 9 UDP/TLS/RTP/SAVPF 96\r
c=IN IP4 0.0.0.0\r
a=mid:0\r
a=recvonly\r
a=rtcp-mux\r
a=rtpmap:96 VP8/90000\r
a=ice-ufrag:abcd\r
a=ice-pwd:abcdefghijklmnopqrstuvwx\r
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r
a=setup:actpass\r
"""


@pytest.mark.parametrize("body, content_type, status, message", [
    (b"v=0", "text/plain", 415, "Content-Type: application/sdp"),
    (b"x" * (65 * 1024), "application/sdp", 413, "larger than"),
    (b"", "application/sdp", 400, "empty"),
    (b"\xff\xfe", "application/sdp", 400, "UTF-8"),
    (b"hello", "application/sdp", 400, "offer one video"),
    (VP8_ONLY.encode(), "application/sdp", 400, "do not include H.264"),
    (VP8_ONLY.replace("a=recvonly", "a=sendonly").encode(), "application/sdp", 400, "recvonly"),
    # H.264 offered, but no ICE credentials: aiortc refuses it once the session exists (closed again)
    (VP8_ONLY.replace("VP8/90000", "H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=42e01f")
     .replace("a=ice-ufrag:abcd\r\n", "").encode(), "application/sdp", 400, "could not be applied"),
])
async def test_bad_offers_get_a_clear_4xx_and_no_session(whep, body, content_type, status, message):
    response = await whep.post("/whep", data=body, headers={"Content-Type": content_type})
    assert response.status == status and message in await response.text()
    assert "Traceback" not in await response.text()


async def test_patch_is_405_and_unknown_sessions_404(whep):
    assert (await whep.patch("/whep/nope")).status == 405
    assert (await whep.delete("/whep/nope")).status == 404
