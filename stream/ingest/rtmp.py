"""RTMP ingest: OBS or FFmpeg publish to `rtmp://HOST:PORT/live/<publish token>` (app `backup` for
the backup role), and a wrong key is refused before any media is accepted.

Why a gatekeeper proxy: PyAV's FFmpeg has an RTMP server (`listen=1`) that interoperates with OBS,
FFmpeg and hardware encoders, but it accepts any application and stream name. So the public port is
ours: an asyncio server that, per connection, answers the handshake, reads the publisher's side
(`PublishGate`) until its `publish` command, and once `connect` is valid starts FFmpeg's listener
on an ephemeral loopback port (`RtmpDemuxer`, one worker thread) and relays bytes both ways:

- the proxy answers the handshake exactly as FFmpeg's listener does (S1: C1's epoch, a zero version,
  random bytes; S2: C1 echoed; C2 not checked; no digests, which publishers then do not check
  either), and plays the client's side with FFmpeg itself. C0's version byte is checked, so RTMPE,
  RTMPS (TLS) and stray HTTP are refused at once, and a client that never sends a valid `connect`
  never costs a thread;
- RTMP chunks are parsed exactly as FFmpeg's reader parses them (basic header, message header
  types 0-3, extended timestamp, Set Chunk Size), so both sides always agree on message boundaries;
- protocol control messages pass; command messages are held until complete, decoded (AMF0), and
  forwarded only if valid: `connect` must name the app `live` or `backup`, and `releaseStream`,
  `FCPublish` and `publish` must name the publish token. Anything else before `publish` (media,
  metadata, `play`, oversized messages, a slow client) closes the connection;
- when `publish` is valid, the program slot is claimed *before* the command reaches FFmpeg, so a
  refused publisher (wrong key, busy slot) never gets a single media byte to the decoder. From then
  on the proxy only copies bytes.

Every refusal of a publisher is one WARNING line with the remote address (never the presented key)
and a count in INGEST_REJECTED{protocol="rtmp"}; what a flood repeats (evictions: INFO; connections
closed at once: DEBUG) is counted the same way but logged lower, so knocking cannot flood the log.
The thread decodes with PyAV and pushes frames into the `ProgramInput` as they arrive: RTMP
publishers send in real time.

Hostile clients (issue #12): nobody can keep a real publisher out, make us hold memory, or starve
the event loop. All of it rests on how little a real OBS or FFmpeg needs before `publish`: the
handshake, then ~450 bytes (five small commands) in ~5 reads and a few round trips, well under a
second.

- *Pending* sessions (not publishing yet) are accounted apart; publishing ones are never evicted
  and need no cap (the program's slots allow one primary and one backup). At most
  MAX_PENDING_PER_ADDRESS pending sessions per address and MAX_PENDING in all: a newcomer that
  finds no room evicts one (INGEST_REJECTED `busy`), taken from the address holding the most, and
  there silent sessions (no C0/C1 yet) before spoken ones, then the one heard from least recently.
  So idle and stalled connections go first and a publisher that is talking goes last; ranking
  silent ones first matters because a burst of new connections, each "heard" at its accept, would
  otherwise outrank a publisher waiting one round trip for an answer. A session that presents the
  right key (releaseStream does, before publish) is the operator's encoder and leaves the pool.
- New connections per address are rate-limited (CONNECTIONS_PER_ADDRESS, a token bucket): beyond
  it a connection is closed at once, takes nobody's place and starts nothing, so a reconnecting
  flood cannot churn the pool (measured: ~2,400 evictions/s from 113 addresses without it).
  "Address" here is an IPv4 address or an IPv6 /64, what one subscriber is given.
- Deadlines from the accept: the handshake (C0, C1, C2) within HANDSHAKE_DEADLINE, `publish`
  within PUBLISH_DEADLINE: a pending session lives a few seconds even when nobody evicts it.
- One budget bounds everything held before `publish`: PREPUBLISH_BYTES read after the handshake
  (30x what FFmpeg sends), so the parse buffer, the chunks held behind a half-sent command and the
  messages being reassembled cannot outgrow it; over it the client is refused (`bad_request`).
  With what the stream reader may hold (its `limit`, plus one socket read), a pending session
  holds a few hundred KB at most, and there are at most MAX_PENDING of them.
- Parsing work per client is bounded too: at most PREPUBLISH_BYTES and MAX_NEGOTIATION_READS reads
  per connection, chunk sizes below the protocol default of 128 (which no publisher lowers) refused
  so that a byte never costs a chunk header, and at most NEGOTIATION_READ_SIZE bytes parsed per turn
  of the event loop, handed back between reads so HTTP and the other sessions are served between.
- Wrong keys (or applications) go to the process-wide `FailedCredentials`, keyed by the client's IP
  address like every credential check: each is answered after its delay, FFmpeg's side already
  closed (the client holds only a socket), and an address that keeps failing is locked out: its
  connections are closed at once, before a thread is started, and keys presented on connections it
  opened before are refused without being compared (AUTH_LOCKED_OUT, INGEST_REJECTED `bad_key`).
  One WARNING when an address becomes locked out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Callable, Union

import av

from launchkit import metrics
from launchkit.auth import FailedCredentials, Tokens, address_group
from launchkit.web.ratelimit import Limit, RateLimiter
from stream.program import Program, ProgramInput, Role, SlotBusy
from stream.worker import Worker

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
RTMP_VERSION = 3  # C0; 6 and 8 are RTMPE, 0x16 a TLS ClientHello (RTMPS)
HANDSHAKE_PACKET_SIZE = 1536  # C1 and C2
DEFAULT_CHUNK_SIZE = 128
# Before `publish`: no publisher lowers the chunk size below the default (smaller chunks only multiply
# our parsing work per byte), and a size above the largest message allowed changes nothing.
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = DEFAULT_CHUNK_SIZE, 16 * 1024 * 1024
# Before `publish` nothing legitimate is bigger than a command message (FFmpeg's connect: ~250 bytes).
MAX_MESSAGE_SIZE = 8 * 1024
MAX_CHUNK_STREAMS = 16  # pre-publish
# What a client may send between the handshake and `publish`: FFmpeg sends ~450 bytes, OBS as much.
PREPUBLISH_BYTES = 16 * 1024
EXTENDED_TIMESTAMP = 0xFFFFFF
MESSAGE_HEADER_SIZES = (11, 7, 3, 0)  # by chunk type (the basic header's fmt)
MAX_AMF_DEPTH = 8

# Message type ids (RTMP 1.0 spec, 5.4 and 7.1). Abort is relayed but not acted on, as FFmpeg does.
SET_CHUNK_SIZE, ABORT, ACKNOWLEDGEMENT, USER_CONTROL, WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH = 1, 2, 3, 4, 5, 6
COMMAND_AMF3, COMMAND_AMF0 = 17, 20
CONTROL_MESSAGES = frozenset({SET_CHUNK_SIZE, ABORT, ACKNOWLEDGEMENT, USER_CONTROL, WINDOW_ACK_SIZE,
                              SET_PEER_BANDWIDTH})
COMMAND_MESSAGES = frozenset({COMMAND_AMF3, COMMAND_AMF0})

APP_ROLES: dict[str, Role] = {"live": "primary", "backup": "backup"}
# Commands that name the stream to publish; FFmpeg's server starts receiving on FCPublish already.
PUBLISH_COMMANDS = frozenset({"releaseStream", "FCPublish", "publish"})
# This endpoint only ingests; `play` would turn FFmpeg's listener into a sender.
PLAY_COMMANDS = frozenset({"play", "play2"})

# Seconds from the TCP accept: a publisher on the other side of the world needs a few round trips.
HANDSHAKE_DEADLINE = 3.0  # to the end of C2
PUBLISH_DEADLINE = 6.0  # to an accepted `publish`
# Sessions not publishing yet (each may hold a thread); legitimate publishers need 2 (primary + backup).
MAX_PENDING, MAX_PENDING_PER_ADDRESS = 32, 4
# New connections per address: an encoder reconnects every few seconds at most, a flood far faster.
CONNECTIONS_PER_ADDRESS = Limit(per_minute=30, burst=10)
READ_SIZE = 64 * 1024  # once publishing: plain copying
NEGOTIATION_READ_SIZE = 4096  # before `publish`: parsed in Python, so at most this much per loop turn
MAX_NEGOTIATION_READS = 64  # FFmpeg's negotiation arrives in ~6 reads; a byte-by-byte trickle costs a turn each
UPSTREAM_CONNECT_ATTEMPTS, UPSTREAM_CONNECT_INTERVAL = 50, 0.02  # FFmpeg's listener binds within ms
JOIN_TIMEOUT = 0.8  # stop() must be done within ~1 s
JOIN_POLL_INTERVAL = 0.005
# A publisher silent this long is gone: free its slot (the program shows the slate long before).
READ_TIMEOUT = 10.0
# FFmpeg's defaults wait ~20 frames to guess a frame rate we do not use: that is seconds on air late.
DEMUXER_OPTIONS = {"listen": "1", "fpsprobesize": "0", "analyzeduration": "1000000"}

AmfValue = Union[float, bool, str, None, dict[str, "AmfValue"], list["AmfValue"]]


class Refused(Exception):
    """The publisher is turned away; `reason` is the INGEST_REJECTED label."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason


def _malformed(why: str) -> Refused:
    return Refused("bad_request", why)


class Amf0Reader:
    """Decodes the AMF0 values of one command message (only the types RTMP commands use)."""

    NUMBER, BOOLEAN, STRING, OBJECT, NULL, UNDEFINED, ECMA_ARRAY, OBJECT_END, STRICT_ARRAY = 0, 1, 2, 3, 5, 6, 8, 9, 10

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 0

    def at_end(self) -> bool:
        return self._position >= len(self._data)

    def read_value(self, depth: int = 0) -> AmfValue:
        marker = self._take(1)[0]
        if marker == self.NUMBER:
            return struct.unpack(">d", self._take(8))[0]
        if marker == self.BOOLEAN:
            return self._take(1)[0] != 0
        if marker == self.STRING:
            return self._utf8(self._u16())
        if marker in (self.NULL, self.UNDEFINED):
            return None
        if depth >= MAX_AMF_DEPTH:
            raise _malformed("AMF0 values nested too deep")
        if marker == self.OBJECT:
            return self._properties(depth)
        if marker == self.ECMA_ARRAY:
            self._take(4)  # the count is only a hint; the object end marker ends the array
            return self._properties(depth)
        if marker == self.STRICT_ARRAY:
            return [self.read_value(depth + 1) for _ in range(self._u32())]
        raise _malformed(f"AMF0 type marker {marker} is not used by RTMP publishers")

    def _properties(self, depth: int) -> dict[str, AmfValue]:
        properties: dict[str, AmfValue] = {}
        while True:
            name = self._utf8(self._u16())
            if not name and self._data[self._position : self._position + 1] == bytes([self.OBJECT_END]):
                self._position += 1
                return properties
            properties[name] = self.read_value(depth + 1)

    def _take(self, size: int) -> bytes:
        end = self._position + size
        if end > len(self._data):
            raise _malformed("truncated AMF0 value")
        value = self._data[self._position : end]
        self._position = end
        return value

    def _u16(self) -> int:
        return int.from_bytes(self._take(2))

    def _u32(self) -> int:
        return int.from_bytes(self._take(4))

    def _utf8(self, size: int) -> str:
        # "replace" keeps a hostile name comparable (and never equal to a real token).
        return self._take(size).decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    command_object: AmfValue
    first_argument: AmfValue  # the stream name, for the publish commands


def decode_command(message_type_id: int, payload: bytes) -> Command:
    """Reads only as far as the checks need, so optional trailing arguments cannot trip us."""
    if message_type_id == COMMAND_AMF3:
        if not payload or payload[0] != 0:
            raise _malformed("AMF3 command without its AMF0 format byte")
        payload = payload[1:]
    reader = Amf0Reader(payload)
    name = reader.read_value()
    if not isinstance(name, str):
        raise _malformed("command message without a command name")
    reader.read_value()  # transaction id
    command_object = None if reader.at_end() else reader.read_value()
    first_argument = None if reader.at_end() else reader.read_value()
    return Command(name, command_object, first_argument)


def role_for_app(command_object: AmfValue) -> Role:
    """The role a `connect` asks for, by its `app` (clients may append a slash or a query)."""
    app = command_object.get("app") if isinstance(command_object, dict) else None
    role = APP_ROLES.get(app.partition("?")[0].rstrip("/")) if isinstance(app, str) else None
    if role is None:
        raise Refused("bad_key", "wrong application or stream key")
    return role


@dataclass
class _ChunkStream:
    """What the previous chunk of one chunk stream left for the next one's compressed header."""

    timestamp_field: int = 0  # the raw 3-byte field: 0xFFFFFF means an extended timestamp follows
    message_length: int = 0
    message_type_id: int = 0
    payload: bytearray | None = None  # the message being reassembled; None between messages


@dataclass(frozen=True, slots=True)
class PublishRequest:
    role: Role
    held: bytes  # client bytes from the publish command on: sent upstream once the slot is claimed


class PublishGate:
    """Reads the publisher's bytes from the end of the handshake to an accepted `publish` and says
    which may pass.

    Sans-IO: `feed()` takes what the client sent and returns what may be forwarded now, plus the
    `PublishRequest` once `publish` names the right key. It raises `Refused` instead of returning
    anything from a batch that breaks the rules, so a bad command never reaches FFmpeg.
    `is_publish_key` may raise `Refused` itself (a locked-out client's key is not even compared).
    """

    def __init__(self, is_publish_key: Callable[[str], bool]) -> None:
        self._is_publish_key = is_publish_key
        self._received = 0  # bounds all the state below: nothing here outgrows PREPUBLISH_BYTES
        self._buffer = bytearray()  # received, not parsed yet
        # Chunks since a command message began: forwarding them out of order could put them
        # behind a Set Chunk Size that did not apply to them.
        self._held = bytearray()
        self._chunk_size = DEFAULT_CHUNK_SIZE
        self._chunk_streams: dict[int, _ChunkStream] = {}
        self.role: Role | None = None  # set by a valid `connect`

    def feed(self, data: bytes) -> tuple[bytes, PublishRequest | None]:
        self._received += len(data)
        if self._received > PREPUBLISH_BYTES:
            raise _malformed(f"more than {PREPUBLISH_BYTES} bytes before publish")
        self._buffer += data
        forward = bytearray()
        while (chunk := self._take_chunk()) is not None:
            raw, message_type_id, message = chunk
            if message_type_id in COMMAND_MESSAGES or self._held:
                self._held += raw
            else:
                forward += raw
            if message is not None and message_type_id in COMMAND_MESSAGES:
                role = self._check_command(decode_command(message_type_id, message))
                if role is not None:
                    request = PublishRequest(role, bytes(self._held + self._buffer))
                    self._held.clear()
                    self._buffer.clear()
                    return bytes(forward), request
            elif message is not None and message_type_id == SET_CHUNK_SIZE:
                self._set_chunk_size(message)
            if self._held and not self._command_in_progress():
                forward += self._held
                self._held.clear()
        return bytes(forward), None

    def _take_chunk(self) -> tuple[bytes, int, bytes | None] | None:
        """One whole chunk off the buffer: (its bytes, message type id, the message it completed).

        Mirrors FFmpeg's `rtmp_packet_read_one_chunk`, the reader on the other side of the relay.
        """
        buffer = self._buffer
        if not buffer:
            return None
        fmt, chunk_stream_id = buffer[0] >> 6, buffer[0] & 0x3F
        position = 1 + {0: 1, 1: 2}.get(chunk_stream_id, 0)  # basic header of 1, 2 or 3 bytes
        header_end = position + MESSAGE_HEADER_SIZES[fmt]
        if len(buffer) < header_end:
            return None
        if chunk_stream_id == 0:
            chunk_stream_id = 64 + buffer[1]
        elif chunk_stream_id == 1:
            chunk_stream_id = 64 + buffer[1] + (buffer[2] << 8)
        stream = self._chunk_stream(chunk_stream_id, fmt)
        timestamp_field, length, type_id = stream.timestamp_field, stream.message_length, stream.message_type_id
        if fmt < 3:
            timestamp_field = int.from_bytes(buffer[position : position + 3])
        if fmt < 2:
            length, type_id = int.from_bytes(buffer[position + 3 : position + 6]), buffer[position + 6]
        if timestamp_field == EXTENDED_TIMESTAMP:
            header_end += 4
        payload = stream.payload
        if payload is None:
            _check_message_start(length, type_id)  # now, not once a huge payload has arrived
        elif (length, type_id) != (stream.message_length, stream.message_type_id):
            raise _malformed("message header changed in the middle of a message")
        chunk_end = header_end + min(self._chunk_size, length - (len(payload) if payload is not None else 0))
        if len(buffer) < chunk_end:
            return None
        if payload is None:
            stream.timestamp_field, stream.message_length, stream.message_type_id = timestamp_field, length, type_id
            payload = stream.payload = bytearray()
        payload += buffer[header_end:chunk_end]
        raw = bytes(buffer[:chunk_end])
        del buffer[:chunk_end]
        if len(payload) < length:
            return raw, type_id, None
        stream.payload = None
        return raw, type_id, bytes(payload)

    def _chunk_stream(self, chunk_stream_id: int, fmt: int) -> _ChunkStream:
        stream = self._chunk_streams.get(chunk_stream_id)
        if stream is not None:
            return stream
        if fmt != 0:
            raise _malformed("a chunk stream began without a full message header")
        if len(self._chunk_streams) >= MAX_CHUNK_STREAMS:
            raise _malformed("too many chunk streams before publish")
        stream = self._chunk_streams[chunk_stream_id] = _ChunkStream()
        return stream

    def _command_in_progress(self) -> bool:
        return any(s.payload is not None and s.message_type_id in COMMAND_MESSAGES
                   for s in self._chunk_streams.values())

    def _set_chunk_size(self, message: bytes) -> None:
        size = int.from_bytes(message[:4]) if len(message) >= 4 else 0
        if not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE:
            raise _malformed(f"chunk size {size} outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} before publish")
        self._chunk_size = size

    def _check_command(self, command: Command) -> Role | None:
        """Raises `Refused` for a command that must not reach FFmpeg; the role for a valid `publish`."""
        if self.role is None:
            if command.name != "connect":
                raise _malformed("a command before connect")
            self.role = role_for_app(command.command_object)
            return None
        if command.name == "connect":
            raise _malformed("a second connect")
        if command.name in PLAY_COMMANDS:
            raise _malformed("play on an ingest endpoint")
        if command.name in PUBLISH_COMMANDS:
            name = command.first_argument
            if not isinstance(name, str) or not self._is_publish_key(name.partition("?")[0]):
                raise Refused("bad_key", "wrong application or stream key")
        return self.role if command.name == "publish" else None


def _check_message_start(length: int, message_type_id: int) -> None:
    if message_type_id not in CONTROL_MESSAGES | COMMAND_MESSAGES:
        raise _malformed(f"message type {message_type_id} before publish")
    if length > MAX_MESSAGE_SIZE:
        raise _malformed(f"a {length}-byte message before publish")


class RtmpDemuxer(Worker):
    """FFmpeg's RTMP listener for one connection; decodes the accepted publisher into the program."""

    def __init__(self, name: str, remote: str, open_timeout: float) -> None:
        super().__init__(name)
        self.remote = remote
        self.port = _free_loopback_port()
        self.finished = threading.Event()
        self._open_timeout = open_timeout
        self._target: ProgramInput | None = None

    def attach(self, target: ProgramInput) -> None:
        """Called once the slot is claimed, before `publish` is forwarded (so before any media)."""
        self._target = target

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.finished.set()

    async def wait_ended(self, timeout: float) -> None:
        """join() without blocking the event loop, nor a worker of the default executor: a flood
        closes many sessions at once, and other parts of the server share that executor."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.is_alive():
            if loop.time() >= deadline:
                log.warning("%s did not stop within %.1f s", self.name, timeout)
                return
            await asyncio.sleep(JOIN_POLL_INTERVAL)

    def _run(self) -> None:
        try:
            container = av.open(f"rtmp://{LOOPBACK}:{self.port}/live/stream", format="flv",
                                options=DEMUXER_OPTIONS, timeout=(self._open_timeout, READ_TIMEOUT))
        except av.FFmpegError as error:  # refused or gone before publishing: the session logs why
            log.debug("RTMP listener for %s closed before media: %s", self.remote, error)
            return
        with container:
            if self._target is None:  # media passes the gate only after attach(): not reachable
                log.error("RTMP media from %s arrived before its slot was claimed; dropping it", self.remote)
                return
            self._decode(container, self._target)

    def _decode(self, container: av.container.InputContainer, target: ProgramInput) -> None:
        streams = [s for s in (*container.streams.video[:1], *container.streams.audio[:1]) if s.codec_context]
        if not streams:  # e.g. a codec this FFmpeg build cannot decode: free the slot rather than hold it silent
            log.warning("RTMP publisher from %s sent no audio or video we can decode; dropping it", self.remote)
            return
        target.set_codecs(video=next((s.codec_context.name for s in streams if s.type == "video"), None),
                          audio=next((s.codec_context.name for s in streams if s.type == "audio"), None))
        try:
            for packet in container.demux(streams):
                if self.stopping.is_set():
                    return
                if packet.size:
                    target.count_bytes(packet.size)
                for frame in _decode_packet(packet):
                    if isinstance(frame, av.VideoFrame):
                        target.push_video(frame)
                    else:
                        target.push_audio(frame)
        except av.FFmpegError as error:  # FFmpeg reports a closed RTMP connection as an I/O error
            log.info("RTMP stream from %s ended: %s", self.remote, error.strerror or error)


def _decode_packet(packet: av.Packet) -> list[av.VideoFrame | av.AudioFrame]:
    try:
        return packet.decode()
    except av.InvalidDataError:  # one damaged packet must not end the broadcast
        log.debug("undecodable %s packet skipped", packet.stream.type)
        return []


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


@dataclass(frozen=True, slots=True)
class _Peer:
    address: str  # the client's IP address: what failed keys count by, as every credential check does
    group: str  # what the pending caps and the connection rate count by
    remote: str  # address:port, for the log


def _peer(writer: asyncio.StreamWriter) -> _Peer:
    peer = writer.get_extra_info("peername")
    if not peer:
        return _Peer("unknown", "unknown", "unknown")
    host, port = peer[0], peer[1]
    return _Peer(host, address_group(host), f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies until EOF; drain() keeps a slow side from making us buffer without bound."""
    while data := await reader.read(READ_SIZE):
        writer.write(data)
        await writer.drain()


class _ListenerFailed(Exception):
    """FFmpeg's internal listener never accepted our connection (a server fault, not the client's)."""


class LockedOut(Refused):
    """The client's address failed too many keys lately: refused without looking at what it presents."""

    def __init__(self) -> None:
        super().__init__("bad_key", "locked out after repeated wrong keys")


class _Session:
    """One publisher connection: the handshake, gatekeeping until `publish`, then a plain relay."""

    def __init__(self, ingest: RtmpIngest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: _Peer, number: int) -> None:
        self._ingest = ingest
        self._closing = False
        self._client_reader, self._client_writer = reader, writer
        self.address, self.group, self.remote = peer.address, peer.group, peer.remote
        accepted = asyncio.get_running_loop().time()
        # Eviction order: silent before spoken (C0/C1 received), then least recently heard first.
        self.spoke, self.last_heard = False, accepted
        self._handshake_deadline = accepted + min(ingest.handshake_deadline, ingest.publish_deadline)
        self._publish_deadline = accepted + ingest.publish_deadline
        self._handshake_done = False
        self._number = number
        self._demuxer: RtmpDemuxer | None = None  # FFmpeg's side, started once `connect` is valid
        self._upstream_writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._input: ProgramInput | None = None
        # Its own task, not start_server's: Python 3.11 logs an error when that one ends cancelled.
        self.task = asyncio.create_task(self.run(), name=f"rtmp-session-{number}")

    def cancel(self) -> None:
        """Ends the session, unless it is already cleaning up: a cancelled cleanup could skip release()."""
        if not self._closing:
            self.task.cancel()

    def evict(self, why: str) -> None:
        """Ends a pending session to make room for a new connection (counted here: the task may
        be cancelled before it ever runs)."""
        log.info("evicted RTMP connection from %s (busy): %s", self.remote, why)
        metrics.INGEST_REJECTED.labels("rtmp", "busy").inc()
        self.cancel()

    async def run(self) -> None:
        try:
            await self._serve()
        except LockedOut:  # AUTH_LOCKED_OUT counted it; one WARNING was logged when the lockout began
            log.debug("refused RTMP publisher from %s (bad_key): locked out", self.remote)
            metrics.INGEST_REJECTED.labels("rtmp", "bad_key").inc()
        except Refused as refusal:
            log.warning("refused RTMP publisher from %s (%s): %s", self.remote, refusal.reason, refusal)
            metrics.INGEST_REJECTED.labels("rtmp", refusal.reason).inc()
            if refusal.reason == "bad_key":
                await self._slow_down()
        except TimeoutError:
            stage, seconds = (("publish", self._ingest.publish_deadline) if self._handshake_done
                              else ("handshake", min(self._ingest.handshake_deadline, self._ingest.publish_deadline)))
            log.warning("refused RTMP publisher from %s (bad_request): no %s within %g s", self.remote, stage, seconds)
            metrics.INGEST_REJECTED.labels("rtmp", "bad_request").inc()
        except asyncio.IncompleteReadError as error:
            if error.partial:  # nothing at all is a TCP health check, not worth a line
                log.info("RTMP connection from %s closed during the handshake", self.remote)
        except ConnectionError as error:
            log.info("RTMP connection from %s lost: %s", self.remote, error)
        except _ListenerFailed as error:
            log.error("RTMP publisher from %s dropped: %s", self.remote, error)
        finally:
            self._closing = True
            await self._close()

    async def _serve(self) -> None:
        async with asyncio.timeout_at(self._handshake_deadline):
            await self._handshake()
        self._handshake_done = True
        async with asyncio.timeout_at(self._publish_deadline):
            upstream = await self._negotiate()
        if upstream is None:
            log.info("RTMP publisher from %s left before publishing", self.remote)
            return
        self._tasks.append(asyncio.create_task(_relay(self._client_reader, upstream)))
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # raises what ended the session

    async def _handshake(self) -> None:
        """The server's side, as FFmpeg's listener answers it: S1 carries C1's epoch, a zero version
        and random bytes, S2 echoes C1 (publishers then skip digest checks, as they do with FFmpeg's
        server), and C2 is read but not checked (FFmpeg only warns when it differs)."""
        c0 = await self._client_reader.readexactly(1)
        if c0[0] != RTMP_VERSION:
            raise _malformed("not a plain RTMP handshake (RTMPS, RTMPE and other protocols are not served)")
        c1 = await self._client_reader.readexactly(HANDSHAKE_PACKET_SIZE)
        self.spoke, self.last_heard = True, asyncio.get_running_loop().time()
        epoch = c1[:4] + bytes(4)
        self._client_writer.write(c0 + epoch + os.urandom(HANDSHAKE_PACKET_SIZE - 8) + epoch + c1[8:])
        await self._client_writer.drain()
        await self._client_reader.readexactly(HANDSHAKE_PACKET_SIZE)  # C2
        self.last_heard = asyncio.get_running_loop().time()

    async def _negotiate(self) -> asyncio.StreamWriter | None:
        """Passes the client's bytes through the gate until an accepted `publish` (None: the client
        left). FFmpeg's side is opened only once `connect` is valid: the first point where a thread
        is worth starting."""
        gate = PublishGate(self._is_publish_key)
        loop = asyncio.get_running_loop()
        upstream: asyncio.StreamWriter | None = None
        waiting = bytearray()  # allowed to pass before FFmpeg's side is open; bounded by the gate's budget
        for _ in range(MAX_NEGOTIATION_READS):
            data = await self._client_reader.read(NEGOTIATION_READ_SIZE)
            if not data:
                return None
            self.last_heard = loop.time()
            forward, request = gate.feed(data)
            waiting += forward
            if upstream is None and gate.role is not None:
                upstream = await self._open_upstream()
            if upstream is not None:
                upstream.write(waiting)
                waiting.clear()
            if request is not None:
                self._claim(request.role)
                upstream.write(request.held)
                await upstream.drain()
                return upstream
            if upstream is not None:
                await upstream.drain()
            await asyncio.sleep(0)  # a read that was already buffered does not yield: hand the loop over
        raise _malformed(f"{MAX_NEGOTIATION_READS} reads and no publish")

    async def _open_upstream(self) -> asyncio.StreamWriter:
        """Starts FFmpeg's listener and plays the client's side of the handshake with it; from then
        on FFmpeg's answers go to the publisher, and FFmpeg closing ends the session in any phase."""
        demuxer = self._demuxer = RtmpDemuxer(f"ingest-rtmp-{self._number}", self.remote,
                                              self._ingest.publish_deadline + READ_TIMEOUT)
        demuxer.start()
        reader, writer = await self._connect_upstream(demuxer)
        writer.write(bytes([RTMP_VERSION]) + bytes(8) + os.urandom(HANDSHAKE_PACKET_SIZE - 8))
        try:
            s0_s1_s2 = await reader.readexactly(1 + 2 * HANDSHAKE_PACKET_SIZE)
        except asyncio.IncompleteReadError:
            raise _ListenerFailed("FFmpeg's RTMP listener closed during the handshake") from None
        writer.write(s0_s1_s2[1 : 1 + HANDSHAKE_PACKET_SIZE])  # C2 echoes S1
        downstream = asyncio.create_task(_relay(reader, self._client_writer))
        downstream.add_done_callback(self._upstream_ended)
        self._tasks.append(downstream)
        return writer

    def _upstream_ended(self, relay: asyncio.Task[None]) -> None:
        """FFmpeg closed its side: the client's pending read ends too (a cancelled relay is ours to end)."""
        if not relay.cancelled():
            self._client_writer.transport.abort()

    async def _connect_upstream(self, demuxer: RtmpDemuxer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for _ in range(UPSTREAM_CONNECT_ATTEMPTS):
            try:
                reader, self._upstream_writer = await asyncio.open_connection(LOOPBACK, demuxer.port)
                return reader, self._upstream_writer
            except ConnectionRefusedError:
                if demuxer.finished.is_set():
                    break
                await asyncio.sleep(UPSTREAM_CONNECT_INTERVAL)
        raise _ListenerFailed(f"FFmpeg's RTMP listener on port {demuxer.port} did not start")

    def _is_publish_key(self, presented: str) -> bool:
        """The gate's key check; a locked-out client's keys are not compared (nor counted as failures).
        A session that presents the right key (releaseStream and publish do) is the operator's encoder:
        from then on it is never evicted."""
        if self._ingest.failures.locked_out(self.address, "publish"):
            raise LockedOut()
        if not self._ingest.tokens.is_publish(presented):
            return False
        self._ingest.leave_pending(self)
        return True

    def _claim(self, role: Role) -> None:
        try:
            self._input = self._ingest.program.claim(role, "rtmp", self.remote)
        except SlotBusy as busy:
            raise Refused("busy", str(busy)) from None
        self._demuxer.attach(self._input)  # started by the `connect` that came before

    async def _slow_down(self) -> None:
        """Answers a wrong key only after the failure delay, FFmpeg's side already closed: meanwhile
        the client holds nothing but its socket (and still counts as pending)."""
        await self._stop_tasks()
        await self._close_upstream()
        failures = self._ingest.failures
        already_locked_out = failures.retry_after(self.address) > 0
        await failures.failed(self.address, "publish")
        if not already_locked_out and (seconds := failures.retry_after(self.address)):
            log.warning("RTMP publishers from %s locked out for %d s after repeated wrong keys", self.address,
                        seconds)

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close_upstream(self) -> None:
        """Ends FFmpeg's side of the session: its connection, then its thread (idempotent)."""
        demuxer = self._demuxer
        if demuxer is None:
            return
        if self._upstream_writer is None:  # FFmpeg still waits in accept(): only a connection ends that
            with contextlib.suppress(_ListenerFailed, OSError):
                await self._connect_upstream(demuxer)
        if self._upstream_writer is not None:
            self._upstream_writer.transport.abort()  # FFmpeg's read ends, so does the thread
        demuxer.request_stop()
        await demuxer.wait_ended(JOIN_TIMEOUT)

    async def _close(self) -> None:
        self._ingest.leave_pending(self)
        await self._stop_tasks()
        self._client_writer.transport.abort()
        await self._close_upstream()
        if self._input is not None:
            self._input.release()


class RtmpIngest:
    """The public RTMP port: one gatekept session per connection, publishers into `program`."""

    publish_deadline = PUBLISH_DEADLINE
    handshake_deadline = HANDSHAKE_DEADLINE

    def __init__(self, program: Program, tokens: Tokens, host: str, port: int,
                 failures: FailedCredentials | None = None) -> None:
        self.program, self.tokens = program, tokens
        self.failures = failures or FailedCredentials()
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None
        self.sessions: set[_Session] = set()
        self._pending: set[_Session] = set()  # not publishing yet: evictable
        self._connections = RateLimiter(CONNECTIONS_PER_ADDRESS)
        self._numbers = itertools.count(1)

    async def start(self) -> None:
        try:
            # A small read buffer per connection: nothing before `publish` needs more, media flows anyway.
            self._server = await asyncio.start_server(self._on_connection, self._host, self._port,
                                                      limit=PREPUBLISH_BYTES)
        except OSError as error:
            raise OSError(error.errno, f"RTMP ingest cannot listen on {self._host}:{self._port}: {error.strerror}"
                          " (is another RTMP server running? choose another --rtmp-port)") from error
        log.info("RTMP ingest listening on rtmp://%s:%d/live/<publish token>", self._host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        sessions = list(self.sessions)
        for session in sessions:
            session.cancel()
        if sessions:
            await asyncio.wait([s.task for s in sessions], timeout=1.0)

    @property
    def port(self) -> int:
        if self._server is not None and self._server.sockets:
            return self._server.sockets[0].getsockname()[1]
        return self._port

    @property
    def pending(self) -> int:
        """Sessions not publishing yet."""
        return len(self._pending)

    def leave_pending(self, session: _Session) -> None:
        """`session` presented the right key (never to be evicted) or is closing (its place is free)."""
        self._pending.discard(session)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        # Closed at once, before any thread, and without taking anyone's place. DEBUG only: a client
        # that keeps knocking must not flood the log (the metrics count each).
        if self.failures.locked_out(peer.address, "publish"):
            log.debug("refused RTMP publisher from %s (bad_key): locked out", peer.remote)
            metrics.INGEST_REJECTED.labels("rtmp", "bad_key").inc()
            writer.transport.abort()
            return
        if self._connections.take(peer.group):
            log.debug("refused RTMP connection from %s (busy): too many connections from its address", peer.remote)
            metrics.INGEST_REJECTED.labels("rtmp", "busy").inc()
            writer.transport.abort()
            return
        self._make_room(peer.group)
        session = _Session(self, reader, writer, peer, next(self._numbers))
        self.sessions.add(session)
        self._pending.add(session)
        try:
            await asyncio.wait([session.task])  # unlike `await`, does not raise when stop() cancels it
        finally:
            self.sessions.discard(session)
            self.leave_pending(session)
            writer.transport.abort()  # a session cancelled before its task ever ran did not close it

    def _make_room(self, group: str) -> None:
        """Evicts a pending session if a new one from `group` would exceed a cap."""
        from_group = [s for s in self._pending if s.group == group]
        if len(from_group) >= MAX_PENDING_PER_ADDRESS:
            candidates, why = from_group, f"{len(from_group)} connections from its address not publishing"
        elif len(self._pending) >= MAX_PENDING:
            load = collections.Counter(s.group for s in self._pending)
            most = max(load.values())
            candidates = [s for s in self._pending if load[s.group] == most]
            why = f"{len(self._pending)} connections not publishing"
        else:
            return
        victim = min(candidates, key=lambda s: (s.spoke, s.last_heard))
        self._pending.discard(victim)
        victim.evict(why)
