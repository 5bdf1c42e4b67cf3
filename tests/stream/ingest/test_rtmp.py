"""RTMP ingest: the gate on hand-built chunk streams, then real FFmpeg publishers through the proxy.

Everything talks to 127.0.0.1 only; every publisher is a Debian `ffmpeg` subprocess bounded by
`-t` and a timeout, and killed by its PID if it outlives the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import subprocess
import threading
import time
from collections import deque
from typing import Callable

import av
import numpy as np
import pytest
from prometheus_client import REGISTRY

from launchkit.auth import FailedCredentials, Tokens, address_group, generate_token
from launchkit.origin.rtmp_access import CONNECTIONS_PER_ADDRESS, RtmpPublishers
from launchkit.web.ratelimit import Limit
from stream.ingest.rtmp.chunk import MAX_MESSAGE_SIZE
from stream.ingest.rtmp.gate import PREPUBLISH_BYTES, PublishGate, PublishRequest
from stream.ingest.rtmp.handshake import HANDSHAKE_PACKET_SIZE
from stream.ingest.rtmp.message import COMMAND_AMF0
from stream.ingest.rtmp.refusal import Refused
from stream.ingest.rtmp.server import MAX_NEGOTIATION_READS, MAX_PENDING, MAX_PENDING_PER_ADDRESS, RtmpIngest
from stream.program import Program
from stream.source import CapturedFrame
from tests.support.rtmp import amf0, command, connect, message, set_chunk_size

WIDTH, HEIGHT, FPS = 320, 180, 15
TOKEN = generate_token()
VIDEO_MESSAGE = 9
USER_CONTROL, WINDOW_ACK_SIZE = 4, 5

# --- a publisher's session, built by hand (tests/support/rtmp.py) ---------------------------


def obs_like_session(key: str = TOKEN, app: str = "live") -> bytes:
    """OBS's order: connect, Set Chunk Size, releaseStream, FCPublish, createStream, publish.

    Also every header form: an extended timestamp repeated in continuation chunks (connect), and
    2- and 3-byte basic headers (createStream, publish).
    """
    return (connect(app, timestamp=0x01000000) + set_chunk_size(4096)
            + command("releaseStream", key, chunk_size=4096) + command("FCPublish", key, chunk_size=4096)
            + command("createStream", chunk_stream_id=100, chunk_size=4096)
            + command("publish", key, "live", chunk_stream_id=400, chunk_size=4096))


def gate() -> PublishGate:
    return PublishGate(Tokens(TOKEN, "ops").is_publish)


def feed_all(data: bytes, step: int) -> tuple[bytes, PublishRequest | None, bytes]:
    """Feeds `data` in `step`-byte pieces, as a slow network would, until the publish request.

    Returns what was forwarded, the request, and the bytes not fed (the session relays those).
    """
    publish_gate, forwarded = gate(), b""
    for start in range(0, len(data), step):
        forward, request = publish_gate.feed(data[start : start + step])
        forwarded += forward
        if request is not None:
            return forwarded, request, data[start + step :]
    return forwarded, None, b""


# --- the gate, byte for byte -----------------------------------------------------------------


@pytest.mark.parametrize("step", [1, 7, 128, 1 << 20])
def test_gate_passes_a_valid_publisher_byte_for_byte_in_order(step):
    publish = command("publish", TOKEN, "live", chunk_stream_id=400, chunk_size=4096)
    data = obs_like_session() + message(6, VIDEO_MESSAGE, b"\x17\x01" + bytes(5000), chunk_size=4096)
    forwarded, request, rest = feed_all(data, step)
    assert request is not None and request.role == "primary"
    # Nothing is dropped or reordered: what FFmpeg sees is exactly what the publisher sent.
    assert forwarded + request.held + rest == data
    assert forwarded.endswith(data[: data.index(publish)])  # all but publish passed before the claim
    assert request.held.startswith(publish)


def test_gate_holds_commands_until_complete_and_keeps_order_with_control_messages():
    connect_chunks = connect()
    first_chunk_end = 1 + 11 + 128
    interleaved = connect_chunks[:first_chunk_end] + message(2, 5, struct.pack(">I", 2500000))
    publish_gate = gate()
    forward, request = publish_gate.feed(interleaved)
    assert (forward, request) == (b"", None)  # the Window Ack Size waits behind the half-read connect
    forward, request = publish_gate.feed(connect_chunks[first_chunk_end:])
    assert forward == interleaved + connect_chunks[first_chunk_end:] and request is None
    assert publish_gate.role == "primary"


def test_gate_maps_the_backup_app_and_tolerates_slash_and_query():
    for app, role in (("backup", "backup"), ("live/", "primary"), ("backup?x=1", "backup")):
        _, request, _ = feed_all(obs_like_session(app=app), 1 << 20)
        assert request is not None and request.role == role
    _, request, _ = feed_all(obs_like_session(key=f"{TOKEN}?role=whatever"), 1 << 20)
    assert request is not None


@pytest.mark.parametrize("data", [
    pytest.param(obs_like_session(key="wrong"), id="wrong key at releaseStream"),
    pytest.param(connect() + command("publish", "", "live"), id="missing key"),
    pytest.param(connect() + command("publish", None, "live"), id="no stream name"),
    pytest.param(connect("other"), id="wrong app"),
    pytest.param(connect(TOKEN), id="key as app"),
    pytest.param(command("connect", command_object=None), id="connect without app"),
])
def test_gate_refuses_a_wrong_key_or_app_before_forwarding_it(data):
    publish_gate = gate()
    with pytest.raises(Refused) as refused:
        publish_gate.feed(data)
    assert refused.value.reason == "bad_key"
    assert TOKEN not in str(refused.value)


@pytest.mark.parametrize("data", [
    pytest.param(connect() + message(6, VIDEO_MESSAGE, b"\x17\x00"), id="media before publish"),
    pytest.param(connect() + message(5, 18, amf0("@setDataFrame")), id="metadata before publish"),
    pytest.param(command("publish", TOKEN, "live"), id="publish before connect"),
    pytest.param(connect() + connect(), id="second connect"),
    pytest.param(connect() + command("play", TOKEN), id="play"),
    pytest.param(set_chunk_size(0), id="chunk size zero"),
    pytest.param(set_chunk_size(1), id="chunk size one"),
    pytest.param(set_chunk_size(127), id="chunk size below the default"),
    pytest.param(set_chunk_size(1 << 30), id="chunk size too big"),
    pytest.param(b"\x03" + b"\x00\x00\x00" + (1 << 20).to_bytes(3) + b"\x14" + bytes(4), id="huge command"),
    pytest.param(b"\x03" + b"\x00\x00\x00" + (MAX_MESSAGE_SIZE + 1).to_bytes(3) + b"\x14" + bytes(4),
                 id="command over the pre-publish limit"),
    pytest.param(b"\xc5", id="chunk stream starting without a header"),
    pytest.param(message(3, COMMAND_AMF0, b"\x02\x00\x07connect\x00\x3f"), id="truncated AMF0"),
    pytest.param(message(3, COMMAND_AMF0, amf0("connect", 1) + b"\x0a\x00\x00\x00\x01" * 40),
                 id="AMF0 nested too deep"),
    pytest.param(message(3, COMMAND_AMF0, amf0("connect", 1) + b"\x11"), id="AMF3 value"),
    pytest.param(b"".join(set_chunk_size(128).replace(b"\x02", bytes([c]), 1) for c in range(2, 20)),
                 id="too many chunk streams"),
])
def test_gate_refuses_malformed_or_out_of_order_input(data):
    with pytest.raises(Refused) as refused:
        gate().feed(data)
    assert refused.value.reason == "bad_request"


def test_a_real_publisher_needs_a_small_part_of_the_pre_publish_budget():
    assert len(obs_like_session()) < PREPUBLISH_BYTES / 4


def window_ack_size(chunk_stream_id: int = 2) -> bytes:
    return message(chunk_stream_id, WINDOW_ACK_SIZE, struct.pack(">I", 2500000))


@pytest.mark.parametrize("opening, spam", [
    # Control messages held behind a command whose first chunk only was sent: held without bound before.
    pytest.param(connect()[: 1 + 11 + 128], window_ack_size(), id="held behind a half-sent command"),
    pytest.param(connect()[: 1 + 11 + 128] + set_chunk_size(MAX_MESSAGE_SIZE),
                 message(2, USER_CONTROL, bytes(MAX_MESSAGE_SIZE - 1), chunk_size=MAX_MESSAGE_SIZE),
                 id="large control messages held"),
    pytest.param(connect(), window_ack_size(), id="control messages forwarded"),
])
def test_gate_refuses_a_client_over_the_pre_publish_budget(opening, spam):
    publish_gate, fed = gate(), 0
    with pytest.raises(Refused) as refused:
        for piece in [opening] + [spam] * (4 * PREPUBLISH_BYTES // len(spam)):
            publish_gate.feed(piece)
            fed += len(piece)
    assert refused.value.reason == "bad_request"
    assert fed <= PREPUBLISH_BYTES  # refused by the piece that went over, nothing beyond it kept


# --- real publishers through the proxy -------------------------------------------------------

SLATE = av.VideoFrame.from_ndarray(np.zeros((HEIGHT * 3 // 2, WIDTH), np.uint8), format="yuv420p")


@pytest.fixture
def captured() -> deque[CapturedFrame]:
    return deque(maxlen=5000)


@pytest.fixture
def program(captured):
    program = Program(WIDTH, HEIGHT, FPS, captured.append, lambda wallclock: SLATE)
    program.start()
    yield program
    program.stop(1.0)


@pytest.fixture
async def ingest(program):
    ingest = RtmpIngest(program, RtmpPublishers(Tokens(TOKEN, generate_token()), FailedCredentials()), "127.0.0.1", 0)
    await ingest.start()
    yield ingest
    await ingest.stop()


def url(ingest: RtmpIngest, path: str) -> str:
    return f"rtmp://127.0.0.1:{ingest.port}/{path}"


async def start_publisher(target: str, seconds: float) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}",
        "-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=44100",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", str(FPS), "-c:a", "aac",
        "-t", str(seconds), "-f", "flv", target,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def finish(process: asyncio.subprocess.Process, timeout: float) -> int | None:
    """The publisher's exit code, or None if it ran past `timeout` (it is then killed by its PID)."""
    try:
        return await asyncio.wait_for(process.wait(), timeout)
    except TimeoutError:
        await kill(process)
        return None


async def kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
        await process.wait()


async def until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(interval)
    return condition()


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def rejected(reason: str) -> float:
    return sample("launchkit_ingest_rejected_total", protocol="rtmp", reason=reason)


def rtmp_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("ingest-rtmp-")]


async def test_right_key_goes_on_air_and_frees_the_slot_when_the_publisher_stops(ingest, program, captured):
    publisher = await start_publisher(url(ingest, f"live/{TOKEN}"), seconds=4)
    try:
        assert await until(lambda: program.on_air == "primary", timeout=5)
        (publisher_input,) = program.inputs()
        assert (publisher_input.stats.protocol, publisher_input.role) == ("rtmp", "primary")
        assert publisher_input.stats.remote.startswith("127.0.0.1:")
        assert await until(lambda: publisher_input.stats.frames > 30, timeout=5)
        assert (publisher_input.stats.video_codec, publisher_input.stats.audio_codec) == ("h264", "aac")
        assert (publisher_input.stats.width, publisher_input.stats.height) == (WIDTH, HEIGHT)
        assert publisher_input.stats.bytes > 10_000
        assert any(c.is_video and c.frame is not SLATE for c in list(captured))  # the publisher's picture
        assert await finish(publisher, timeout=10) == 0
    finally:
        await kill(publisher)
    assert await until(lambda: not program.inputs(), timeout=2)
    assert publisher_input.closed
    assert await until(lambda: program.on_air == "slate", timeout=2)


@pytest.mark.parametrize("path, presented", [
    ("live/not-the-publish-token-at-all", "not-the-publish-token-at-all"),
    ("live", None),
    (f"other/{TOKEN}", TOKEN),
], ids=["wrong key", "missing key", "wrong app"])
async def test_wrong_key_or_app_is_refused_before_any_media(ingest, program, caplog, path, presented):
    caplog.set_level(logging.DEBUG)
    before = rejected("bad_key")
    connections_before = sample("launchkit_ingest_connections_total", protocol="rtmp", role="primary")
    publisher = await start_publisher(url(ingest, path), seconds=3)
    slots_seen = []
    deadline = time.monotonic() + 10
    while publisher.returncode is None and time.monotonic() < deadline:
        slots_seen.append(program.inputs())
        await asyncio.sleep(0.01)
    assert await finish(publisher, timeout=1) not in (0, None)
    assert all(slots == [] for slots in slots_seen) and program.on_air == "slate"
    assert sample("launchkit_ingest_connections_total", protocol="rtmp", role="primary") == connections_before
    assert rejected("bad_key") == before + 1
    warnings = [r for r in caplog.records if r.name == "stream.ingest.rtmp" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "127.0.0.1:" in warnings[0].getMessage()
    if presented:
        assert not any(presented in r.getMessage() for r in caplog.records)
    assert await until(lambda: not rtmp_threads(), timeout=2)


async def test_second_primary_is_refused_busy_while_the_backup_app_gets_the_backup_slot(ingest, program):
    first = await start_publisher(url(ingest, f"live/{TOKEN}"), seconds=8)
    try:
        assert await until(lambda: program.on_air == "primary", timeout=5)
        (first_input,) = program.inputs()
        busy_before = rejected("busy")
        second = await start_publisher(url(ingest, f"live/{TOKEN}"), seconds=3)
        assert await finish(second, timeout=8) not in (0, None)
        assert rejected("busy") == busy_before + 1
        frames = first_input.stats.frames
        assert await until(lambda: first_input.stats.frames > frames + 5, timeout=2)  # the first keeps going
        assert program.inputs() == [first_input] and program.on_air == "primary"

        backup = await start_publisher(url(ingest, f"backup/{TOKEN}"), seconds=2)
        assert await until(lambda: [i.role for i in program.inputs()] == ["primary", "backup"], timeout=5)
        assert program.on_air == "primary"  # primary wins while it is fresh
        assert await finish(backup, timeout=8) == 0
        assert await until(lambda: program.inputs() == [first_input], timeout=2)
    finally:
        await kill(first)
    assert await until(lambda: not program.inputs(), timeout=2)


async def open_rtmp(ingest: RtmpIngest, handshake: bool,
                    source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", ingest.port, local_addr=(source, 0))
    if handshake:  # the server side here is FFmpeg's, behind the gate
        writer.write(b"\x03" + bytes(8) + os.urandom(HANDSHAKE_PACKET_SIZE - 8))
        s0_s1_s2 = await asyncio.wait_for(reader.readexactly(1 + 2 * HANDSHAKE_PACKET_SIZE), 5)
        writer.write(s0_s1_s2[1 : 1 + HANDSHAKE_PACKET_SIZE])  # C2 echoes S1
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bool:
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


async def test_ffmpeg_is_started_only_once_connect_passes_the_gate(ingest):
    reader, writer = await open_rtmp(ingest, handshake=True)  # answered by the proxy itself
    half = len(connect()) // 2
    writer.write(connect()[:half])
    await asyncio.sleep(0.2)
    assert rtmp_threads() == []
    writer.write(connect()[half:])
    answer = await asyncio.wait_for(reader.read(65536), 5)  # FFmpeg's answer to connect, through the proxy
    assert answer and len(rtmp_threads()) == 1
    writer.close()
    assert await until(lambda: not rtmp_threads(), timeout=2)


async def test_garbage_and_silent_clients_are_closed_without_a_traceback(ingest, caplog):
    caplog.set_level(logging.DEBUG)
    ingest.publish_deadline = 1.0
    before = rejected("bad_request")

    reader, writer = await open_rtmp(ingest, handshake=False)
    writer.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert await closed_by_server(reader, within=1)

    reader, writer = await open_rtmp(ingest, handshake=True)
    writer.write(connect() + message(6, VIDEO_MESSAGE, b"\x17\x00" + bytes(100)))
    assert await closed_by_server(reader, within=1)

    started = time.monotonic()
    reader, writer = await open_rtmp(ingest, handshake=False)  # says nothing at all
    assert await closed_by_server(reader, within=3)
    assert 0.9 < time.monotonic() - started < 2.5

    reader, writer = await open_rtmp(ingest, handshake=True)  # handshakes, then stalls
    assert await closed_by_server(reader, within=3)

    warnings = len([r for r in caplog.records if r.levelno >= logging.WARNING])
    reader, writer = await open_rtmp(ingest, handshake=False)  # a TCP health check: connect, close
    writer.close()
    await asyncio.sleep(0.2)

    assert rejected("bad_request") == before + 4
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == warnings
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    await ingest.stop()
    assert rtmp_threads() == []


async def test_stop_with_a_live_publisher_returns_quickly_and_leaves_no_thread(ingest, program, caplog):
    publisher = await start_publisher(url(ingest, f"live/{TOKEN}"), seconds=20)
    try:
        assert await until(lambda: program.on_air == "primary", timeout=5)
        assert rtmp_threads()
        started = time.monotonic()
        await ingest.stop()
        assert time.monotonic() - started < 1.0
        assert rtmp_threads() == []
        assert program.inputs() == []
        await asyncio.sleep(0.1)  # asyncio reports a mishandled cancelled task on the next loop turn
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert await finish(publisher, timeout=5) not in (0, None)  # the publisher sees its connection end
    finally:
        await kill(publisher)


async def test_a_busy_port_fails_start_with_a_clear_message(ingest, program):
    taken = RtmpIngest(program, RtmpPublishers(Tokens(TOKEN, "ops"), FailedCredentials()), "127.0.0.1", ingest.port)
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{ingest.port}"):
        await taken.start()


async def still_open(reader: asyncio.StreamReader) -> bool:
    return not await closed_by_server(reader, within=0.05)


async def test_one_address_over_its_pending_cap_evicts_its_least_recently_heard_session(ingest):
    ingest.publish_deadline = 2.0
    busy_before = rejected("busy")
    idle = [await open_rtmp(ingest, handshake=False, source="127.0.0.2") for _ in range(MAX_PENDING_PER_ADDRESS)]
    heard = await open_rtmp(ingest, handshake=True, source="127.0.0.2")  # the first to go without this
    assert await closed_by_server(idle[0][0], within=0.5)  # the new one took the place of the oldest idle one
    assert [await still_open(reader) for reader, _ in idle[1:]] == [True] * (MAX_PENDING_PER_ADDRESS - 1)
    other = await open_rtmp(ingest, handshake=False, source="127.0.0.3")  # another address: room for it
    assert await still_open(heard[0]) and await still_open(other[0])
    assert rejected("busy") == busy_before + 1 and ingest.pending == MAX_PENDING_PER_ADDRESS + 1
    assert await closed_by_server(other[0], within=3)  # and nobody stays pending past the deadline


async def test_a_full_port_evicts_from_the_address_holding_the_most(ingest):
    ingest.publish_deadline = 3.0
    busiest = [await open_rtmp(ingest, handshake=False, source="127.0.0.2") for _ in range(MAX_PENDING_PER_ADDRESS)]
    singles = [await open_rtmp(ingest, handshake=False, source=f"127.0.1.{n}")
               for n in range(1, MAX_PENDING - MAX_PENDING_PER_ADDRESS + 1)]
    assert ingest.pending == MAX_PENDING
    newcomer = await open_rtmp(ingest, handshake=False, source="127.0.2.1")
    assert await closed_by_server(busiest[0][0], within=0.5)
    assert await still_open(newcomer[0]) and await still_open(singles[0][0])
    assert ingest.pending == MAX_PENDING


async def test_a_burst_of_new_connections_evicts_silent_sessions_before_one_that_spoke(ingest):
    # Without the ranking, the session that spoke is the least recently heard (every newcomer is
    # "heard" at its accept) and the first to go, as a publisher waiting for an answer would.
    spoke = await open_rtmp(ingest, handshake=True, source="127.0.0.2")
    silent = [await open_rtmp(ingest, handshake=False, source=f"127.0.1.{n}") for n in range(1, MAX_PENDING)]
    assert ingest.pending == MAX_PENDING
    burst = [await open_rtmp(ingest, handshake=False, source=f"127.0.2.{n}") for n in range(1, MAX_PENDING)]
    assert await still_open(spoke[0])
    assert [await closed_by_server(reader, within=0.5) for reader, _ in silent] == [True] * len(silent)
    assert [await still_open(reader) for reader, _ in burst] == [True] * len(burst)


async def test_connections_over_the_rate_of_one_address_are_closed_at_once_and_evict_nobody(ingest):
    opened = [await open_rtmp(ingest, handshake=False, source="127.0.0.2") for _ in range(CONNECTIONS_PER_ADDRESS.burst)]
    survivors = opened[-MAX_PENDING_PER_ADDRESS:]
    busy_before = rejected("busy")
    reader, _ = await open_rtmp(ingest, handshake=False, source="127.0.0.2")
    assert await closed_by_server(reader, within=0.2)
    assert [await still_open(reader) for reader, _ in survivors] == [True] * MAX_PENDING_PER_ADDRESS
    assert rejected("busy") == busy_before + 1
    other = await open_rtmp(ingest, handshake=False, source="127.0.0.3")  # other addresses are not concerned
    assert await still_open(other[0])
    assert rtmp_threads() == []  # nor did any of it start a thread


async def test_a_trickling_client_is_refused_after_a_bounded_number_of_reads(ingest, caplog):
    reader, writer = await open_rtmp(ingest, handshake=True)
    trickled = 0
    with contextlib.suppress(ConnectionError):
        for byte in connect():  # one byte per read, far within the byte budget and the deadline
            writer.write(bytes([byte]))
            await writer.drain()
            trickled += 1
            await asyncio.sleep(0.003)
            if reader.at_eof():
                break
    assert await closed_by_server(reader, within=1)
    # Refused after its reads, long before the byte budget or the deadline (reads may join bytes under load).
    assert MAX_NEGOTIATION_READS - 2 <= trickled < len(connect())
    assert any(f"{MAX_NEGOTIATION_READS} reads and no publish" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("address, group", [
    ("127.0.0.2", "127.0.0.2"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # one subscriber's /64 counts as one address
    ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4 on a dual-stack socket
])
def test_pending_caps_and_connection_rates_count_ipv6_by_64(address, group):
    assert address_group(address) == group


async def test_a_publishing_session_is_never_evicted(ingest, program):
    publisher = await start_publisher(url(ingest, f"live/{TOKEN}"), seconds=10)
    try:
        assert await until(lambda: program.on_air == "primary", timeout=5)
        (publisher_input,) = program.inputs()
        crowd = [await open_rtmp(ingest, handshake=False) for _ in range(MAX_PENDING + MAX_PENDING_PER_ADDRESS)]
        assert ingest.pending <= MAX_PENDING_PER_ADDRESS  # the crowd from the publisher's address evicts itself
        frames = publisher_input.stats.frames
        assert await until(lambda: publisher_input.stats.frames > frames + 5, timeout=2)
        assert program.inputs() == [publisher_input] and not publisher_input.closed
        for _, writer in crowd:
            writer.close()
    finally:
        await kill(publisher)


async def wrong_key_attempt(ingest: RtmpIngest, source: str, key: str) -> tuple[float, bool]:
    """Seconds from presenting `key` to the close, and whether the server answered the handshake."""
    try:
        reader, writer = await open_rtmp(ingest, handshake=True, source=source)
    except asyncio.IncompleteReadError:  # closed before S0/S1/S2
        return 0.0, False
    started = time.monotonic()
    writer.write(connect() + command("releaseStream", key))
    assert await closed_by_server(reader, within=5)
    return time.monotonic() - started, True


async def test_wrong_keys_are_answered_late_and_then_locked_out_before_a_thread(ingest, program, caplog):
    caplog.set_level(logging.DEBUG)
    ingest.access.failures = FailedCredentials(Limit(per_minute=1, burst=2), delay=0.5)
    wrong = "wrong-key-" + generate_token()
    opened_before = await open_rtmp(ingest, handshake=True, source="127.0.0.2")
    for _ in range(2):
        seconds, answered = await wrong_key_attempt(ingest, "127.0.0.2", wrong)
        assert answered and 0.45 < seconds < 1.5
        assert await until(lambda: not rtmp_threads(), timeout=1)
    failures = sample("launchkit_auth_failures_total", credential="publish")
    # A connection opened before the lockout cannot go on guessing: its key is not even compared.
    started = time.monotonic()
    opened_before[1].write(connect() + command("releaseStream", TOKEN))
    assert await closed_by_server(opened_before[0], within=1) and time.monotonic() - started < 0.4
    assert sample("launchkit_auth_failures_total", credential="publish") == failures
    started = time.monotonic()
    reader, _ = await asyncio.open_connection("127.0.0.1", ingest.port, local_addr=("127.0.0.2", 0))
    assert await closed_by_server(reader, within=0.5) and time.monotonic() - started < 0.3
    assert rtmp_threads() == []
    publisher = await start_publisher(url(ingest, f"live/{TOKEN}"), seconds=3)  # 127.0.0.1 is not locked out
    try:
        assert await until(lambda: program.on_air == "primary", timeout=5)
    finally:
        await kill(publisher)
    assert sum("locked out" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records) == 1
    assert not any(wrong in r.getMessage() for r in caplog.records)


async def test_stop_ends_sessions_in_every_phase_without_errors(ingest, caplog):
    silent = await open_rtmp(ingest, handshake=False)
    negotiating = await open_rtmp(ingest, handshake=True)
    negotiating[1].write(connect())
    await asyncio.sleep(0.2)
    assert len(rtmp_threads()) == 1  # a thread only for the client whose connect passed the gate
    started = time.monotonic()
    await ingest.stop()
    assert time.monotonic() - started < 1.0
    for reader, _ in (silent, negotiating):
        assert await closed_by_server(reader, within=0.5)
    await asyncio.sleep(0.1)
    assert rtmp_threads() == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
