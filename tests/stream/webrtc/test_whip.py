"""WHIP ingest in process: every refusal is a clear 4xx that leaves nothing behind, and an aiortc
publisher (loopback ICE only, no STUN) goes live, is asked for keyframes, and frees its slot."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import aioice.ice
import av
import numpy
import pytest
from aiohttp import test_utils, web
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from launchkit.auth import FailedCredentials, Tokens
from launchkit.option_parsers import ConfigError
from launchkit.webrtc import ice
from launchkit.webrtc.ice import IceSettings
from launchkit.webrtc.whip import WhipEndpoint
from stream.program import Program, ProgramInput
from stream.source import CapturedFrame
from stream.webrtc import session, whip

TOKEN = "publish-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/sdp"}
LOOPBACK = IceSettings(addresses=("127.0.0.1",), servers=())
WIDTH, HEIGHT, FPS = 320, 180, 15


def blank(width: int = WIDTH, height: int = HEIGHT) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    return frame


class MovingBars(VideoStreamTrack):
    """A 30 fps publisher camera whose picture changes every frame, so the encoder has work."""

    def __init__(self) -> None:
        super().__init__()
        self._count = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        image = numpy.zeros((HEIGHT, WIDTH, 3), numpy.uint8)
        image[:, (self._count * 4) % WIDTH:][:, :40] = (255, 200, 0)
        self._count += 1
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        return frame


@pytest.fixture
def program() -> Iterator[Program]:
    collected: list[CapturedFrame] = []
    program = Program(WIDTH, HEIGHT, FPS, collected.append, lambda _at: blank())
    program.start()
    yield program
    program.stop(1.0)


@pytest.fixture
async def server(program: Program) -> AsyncIterator[tuple[test_utils.TestClient, WhipEndpoint]]:
    endpoint = WhipEndpoint(program, Tokens(TOKEN, "ops-token-0123456789abc"), LOOPBACK, FailedCredentials())
    # aiohttp's default 1 MiB limit: the 64 KiB offer limit must be the endpoint's own.
    app = web.Application()
    app.add_routes([
        web.post("/whip", endpoint.post),
        web.options("/whip", endpoint.options),
        web.delete("/whip/{session}", endpoint.delete),
        web.patch("/whip/{session}", endpoint.patch),
        web.options("/whip/{session}", endpoint.options),
    ])
    app.on_cleanup.append(lambda _app: endpoint.close())
    async with test_utils.TestClient(test_utils.TestServer(app, host="127.0.0.1")) as client:
        yield client, endpoint


class Publisher:
    """An aiortc publisher: sendonly video (+ audio), non-trickle offer."""

    def __init__(self, codec: str = "video/VP8", audio: bool = True) -> None:
        self.pc = RTCPeerConnection(LOOPBACK.rtc_configuration())
        video = self.pc.addTransceiver(MovingBars(), direction="sendonly")
        video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == codec])
        if audio:
            self.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def close(self) -> None:
        await self.pc.close()


@pytest.fixture
async def publishers() -> AsyncIterator[Callable[..., Publisher]]:
    made: list[Publisher] = []

    def make(*args: object, **kwargs: object) -> Publisher:
        made.append(Publisher(*args, **kwargs))
        return made[-1]

    yield make
    await asyncio.gather(*(p.close() for p in made))


async def eventually(check: Callable[[], bool], timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def assert_nothing_left(endpoint: WhipEndpoint, program: Program) -> None:
    assert endpoint.sessions() == 0
    assert program.inputs() == []


async def refused(client: test_utils.TestClient, status: int, message: str, method: str = "POST",
                  path: str = "/whip", **kwargs: object) -> dict[str, str]:
    response = await client.request(method, path, **kwargs)
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == "text/plain"
    assert message in text and text.count("\n") == 1, text
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    return dict(response.headers)


# ICE settings ---------------------------------------------------------------------------------

def test_ice_settings_come_from_the_environment_and_never_default_to_a_public_stun_server():
    settings = IceSettings.from_env({"LAUNCHKIT_ICE_ADDRESSES": " 10.0.0.5, ::1 ",
                                     "LAUNCHKIT_ICE_SERVERS": "stun:stun.example.net:3478"})
    assert settings == IceSettings(("10.0.0.5", "::1"), ("stun:stun.example.net:3478",))
    assert [s.urls for s in settings.rtc_configuration().iceServers] == ["stun:stun.example.net:3478"]
    assert IceSettings.from_env({}).rtc_configuration().iceServers == []
    with pytest.raises(ConfigError, match="LAUNCHKIT_ICE_ADDRESSES: expected IP addresses, got 'eth0'"):
        IceSettings.from_env({"LAUNCHKIT_ICE_ADDRESSES": "eth0"})
    with pytest.raises(ConfigError, match="LAUNCHKIT_ICE_SERVERS: expected stun:"):
        IceSettings.from_env({"LAUNCHKIT_ICE_SERVERS": "http://stun.example.net"})


def test_host_addresses_are_exactly_the_configured_ones():
    try:
        ice.apply_host_addresses(IceSettings(addresses=("127.0.0.1", "::1")))
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1", "::1"]
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
        ice.apply_host_addresses(IceSettings())
        assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)  # the stock scan
    finally:
        ice.apply_host_addresses(LOOPBACK)


def test_mdns_candidates_are_dropped_from_offers():
    offer = ("a=mid:0\r\na=candidate:1 1 udp 2122260223 2b4c1a3e-0f.local 54321 typ host\r\n"
             "a=candidate:2 1 udp 2122260223 127.0.0.1 54322 typ host\r\n")
    assert ice.without_mdns_candidates(offer) == "a=mid:0\r\na=candidate:2 1 udp 2122260223 127.0.0.1 54322 typ host\r\n"


# Refusals ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [
    {"Content-Type": "application/sdp"},
    {"Content-Type": "application/sdp", "Authorization": "Bearer wrong-token-0123456789"},
    {"Content-Type": "application/sdp", "Authorization": f"Basic {TOKEN}"},
])
async def test_post_without_the_publish_token_is_401(server, program, publishers, headers):
    client, endpoint = server
    offer = await publishers().offer()
    response_headers = await refused(client, 401, "publish token", data=offer, headers=headers)
    assert response_headers["WWW-Authenticate"].startswith("Bearer")
    assert_nothing_left(endpoint, program)


async def test_wrong_content_type_is_415(server, program, publishers):
    client, endpoint = server
    offer = await publishers().offer()
    headers = {**AUTH, "Content-Type": "text/plain"}
    await refused(client, 415, "Content-Type: application/sdp", data=offer, headers=headers)
    assert_nothing_left(endpoint, program)


async def test_offer_larger_than_64_kib_is_413_with_or_without_content_length(server, program):
    client, endpoint = server
    body = b"v=0\r\n" + b"a=x\r\n" * 14_000
    await refused(client, 413, "larger than 64 KiB", data=body, headers=AUTH)

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield body[:10_000]

    await refused(client, 413, "larger than 64 KiB", data=chunked(), headers=AUTH)
    assert_nothing_left(endpoint, program)


@pytest.mark.parametrize(("body", "message"), [
    ("", "body is empty"),
    ("   \r\n", "body is empty"),
    ("hello, this is not SDP", "no video"),
    ("v=0\r\nm=video notaport RTP/SAVPF 96\r\n", "not a valid SDP offer"),
])
async def test_empty_or_malformed_offer_is_400(server, program, body, message):
    client, endpoint = server
    await refused(client, 400, message, data=body.encode(), headers=AUTH)
    assert_nothing_left(endpoint, program)


async def test_offer_without_acceptable_video_is_400(server, program, publishers):
    client, endpoint = server
    offer = await publishers().offer()
    vp9_only = offer.replace("VP8/90000", "VP9/90000")
    await refused(client, 400, "neither H.264 nor VP8", data=vp9_only, headers=AUTH)
    audio_only = RTCPeerConnection(LOOPBACK.rtc_configuration())
    audio_only.addTransceiver(AudioStreamTrack(), direction="sendonly")
    await audio_only.setLocalDescription(await audio_only.createOffer())
    await refused(client, 400, "no video", data=audio_only.localDescription.sdp, headers=AUTH)
    await audio_only.close()
    simulcast = offer.replace("a=mid:0\r\n", "a=mid:0\r\na=rid:h send\r\na=rid:l send\r\na=simulcast:send h;l\r\n", 1)
    await refused(client, 400, "simulcast is not supported", data=simulcast, headers=AUTH)
    no_dtls = "".join(line for line in offer.splitlines(keepends=True) if not line.startswith("a=fingerprint"))
    await refused(client, 400, "DTLS", data=no_dtls, headers=AUTH)
    assert_nothing_left(endpoint, program)


async def test_offer_aiortc_cannot_apply_is_400_and_closes_everything(server, program, publishers):
    client, endpoint = server
    offer = await publishers().offer()
    # Parses, passes our checks, but aiortc refuses it (no ICE credentials): the slot was claimed
    # and the peer connection made, and both must be gone.
    no_ice = "".join(line for line in offer.splitlines(keepends=True) if not line.startswith("a=ice-pwd"))
    await refused(client, 400, "could not be applied", data=no_ice, headers=AUTH)
    assert_nothing_left(endpoint, program)


async def test_unknown_role_is_400(server, program, publishers):
    client, endpoint = server
    offer = await publishers().offer()
    await refused(client, 400, "role must be primary or backup", path="/whip?role=tertiary", data=offer, headers=AUTH)
    assert_nothing_left(endpoint, program)


async def test_patch_is_405_because_trickle_ice_is_not_supported(server, program):
    client, endpoint = server
    headers = await refused(client, 405, "trickle ICE", method="PATCH", path="/whip/anything",
                            data=b"a=candidate:1 1 udp 1 127.0.0.1 9 typ host", headers=AUTH)
    assert headers["Allow"] == "DELETE, OPTIONS"


async def test_delete_needs_the_token_and_an_existing_session(server, program):
    client, endpoint = server
    await refused(client, 401, "publish token", method="DELETE", path="/whip/nope")
    await refused(client, 404, "no such WHIP session", method="DELETE", path="/whip/nope", headers=AUTH)


@pytest.mark.parametrize("path", ["/whip", "/whip/some-session"])
async def test_cors_preflight_allows_browser_publishers_on_other_origins(server, path):
    client, _ = server
    response = await client.options(path, headers={
        "Origin": "https://console.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })
    assert response.status == 204
    headers = response.headers
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert {"POST", "DELETE", "PATCH", "OPTIONS"} <= set(headers["Access-Control-Allow-Methods"].split(", "))
    assert {"Authorization", "Content-Type"} <= set(headers["Access-Control-Allow-Headers"].split(", "))
    assert {"Location", "ETag"} <= set(headers["Access-Control-Expose-Headers"].split(", "))
    assert headers["Accept-Post"] == "application/sdp"


# Sessions ---------------------------------------------------------------------------------------

async def publish(client: test_utils.TestClient, publisher: Publisher, path: str = "/whip",
                  munge: Callable[[str], str] = lambda sdp: sdp) -> tuple[str, str]:
    response = await client.post(path, data=munge(await publisher.offer()), headers=AUTH)
    answer = await response.text()
    assert response.status == 201, answer
    assert response.content_type == "application/sdp"
    assert int(response.headers["Content-Length"]) == len(answer.encode())
    assert "Transfer-Encoding" not in response.headers
    assert response.headers["ETag"].startswith('"')
    assert {"Location", "ETag"} <= set(response.headers["Access-Control-Expose-Headers"].split(", "))
    location = response.headers["Location"]
    assert location.startswith("/whip/") and len(location) >= len("/whip/") + 32
    await publisher.accept(answer)
    return location, answer


def candidate_addresses(sdp: str) -> set[str]:
    return {line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")}


def only_input(program: Program) -> ProgramInput:
    (program_input,) = program.inputs()
    return program_input


async def test_publisher_goes_live_and_delete_frees_the_slot(server, program, publishers):
    client, endpoint = server
    location, answer = await publish(client, publishers("video/VP8"))
    # An actpass offer is answered passive (GStreamer's WHIP client needs it); loopback only.
    assert "a=setup:passive" in answer and "a=setup:active" not in answer
    assert candidate_addresses(answer) == {"127.0.0.1"}
    program_input = only_input(program)
    await eventually(lambda: program_input.stats.frames > 20 and program.on_air == "primary")
    assert (program_input.stats.video_codec, program_input.stats.audio_codec) == ("vp8", "opus")
    assert (program_input.stats.width, program_input.stats.height) == (WIDTH, HEIGHT)
    assert (program_input.stats.protocol, program_input.stats.role) == ("whip", "primary")
    await eventually(lambda: program_input.stats.bytes > 10_000, timeout=3.0)

    response = await client.post("/whip", data=await publishers().offer(), headers=AUTH)
    assert response.status == 409
    assert "a primary publisher (whip from 127.0.0.1) is already live" in await response.text()
    assert endpoint.sessions() == 1 and program.inputs() == [program_input]

    response = await client.delete(location, headers=AUTH)
    assert response.status == 200
    assert_nothing_left(endpoint, program)
    assert program_input.closed
    assert (await client.delete(location, headers=AUTH)).status == 404


async def test_passive_offer_gets_an_active_answer_and_keyframes_on_request(server, program, publishers,
                                                                           monkeypatch):
    # FFmpeg's WHIP muxer offers setup:passive: we must take the DTLS client role.
    plis: list[int] = []
    send_pli = whip.WhipSession._send_pli

    async def spy(receiver, ssrc: int) -> None:
        plis.append(ssrc)
        await send_pli(receiver, ssrc)

    monkeypatch.setattr(whip.WhipSession, "_send_pli", staticmethod(spy))
    client, endpoint = server
    publisher = publishers("video/H264", audio=False)
    _, answer = await publish(client, publisher, path="/whip?role=backup",
                              munge=lambda sdp: sdp.replace("a=setup:actpass", "a=setup:passive"))
    assert "a=setup:active" in answer
    program_input = only_input(program)
    assert program_input.role == "backup"
    await eventually(lambda: program_input.stats.frames > 10 and program.on_air == "backup")
    assert program_input.stats.video_codec == "h264" and program_input.stats.audio_codec is None
    # The session start asks for a keyframe as soon as the publisher's SSRC is known.
    await eventually(lambda: len(plis) == 1, timeout=3.0)
    (ssrc,) = plis
    assert ssrc == publisher.pc.getSenders()[0]._ssrc

    before = program_input.stats.keyframes
    assert program_input.request_keyframe is not None
    await asyncio.to_thread(program_input.request_keyframe)  # the program asks from its own thread
    await eventually(lambda: plis == [ssrc, ssrc] and program_input.stats.keyframes > before, timeout=3.0)


async def test_h264_is_answered_when_offered_even_after_vp8(server, program, publishers):
    client, _ = server
    publisher = publishers("video/VP8")
    sender = publisher.pc.getTransceivers()[0]
    sender.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                if c.mimeType in ("video/VP8", "video/H264")])
    _, answer = await publish(client, publisher)
    video = answer[answer.index("m=video"):]
    assert video.split("\r\n")[0].split()[3] in {
        line.split()[0].removeprefix("a=rtpmap:") for line in video.splitlines() if "H264/90000" in line
    }
    assert only_input(program).stats.video_codec == "h264"


async def test_publisher_that_hangs_up_without_delete_frees_the_slot(server, program, publishers):
    client, endpoint = server
    publisher = publishers("video/VP8", audio=False)
    await publish(client, publisher)
    program_input = only_input(program)
    await eventually(lambda: program_input.stats.frames > 5)
    await publisher.close()
    await eventually(lambda: endpoint.sessions() == 0 and program.inputs() == [])
    assert program_input.closed


async def test_publisher_that_never_connects_frees_the_slot(server, program, publishers, monkeypatch):
    monkeypatch.setattr(session, "CONNECT_TIMEOUT", 0.5)
    client, endpoint = server
    response = await client.post("/whip", data=await publishers().offer(), headers=AUTH)
    assert response.status == 201  # the answer is never applied: ICE never starts
    assert endpoint.sessions() == 1
    await eventually(lambda: endpoint.sessions() == 0 and program.inputs() == [], timeout=3.0)


async def test_close_ends_every_session(server, program, publishers):
    client, endpoint = server
    await publish(client, publishers("video/VP8", audio=False))
    await publish(client, publishers("video/VP8", audio=False), path="/whip?role=backup")
    assert endpoint.sessions() == 2 and len(program.inputs()) == 2
    await endpoint.close()
    assert_nothing_left(endpoint, program)
