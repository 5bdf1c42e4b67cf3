"""RTMP ingest: OBS or FFmpeg publish to `rtmp://HOST:PORT/live/<publish token>` (app `backup` for
the backup role), and a wrong key is refused before any media is accepted.

Why a gatekeeper proxy: PyAV's FFmpeg has an RTMP server (`listen=1`) that interoperates with OBS,
FFmpeg and hardware encoders, but it accepts any application and stream name. So the public port is
ours: an asyncio server that, per connection, starts FFmpeg's listener on an ephemeral loopback port
(`RtmpDemuxer`, one worker thread), relays bytes both ways, and reads the publisher's side
passively (`PublishGate`) until its `publish` command:

- the handshake is relayed untouched (FFmpeg and the publisher negotiate it, FP9 digests included);
  only its version byte is checked, so RTMPE, RTMPS (TLS) and stray HTTP are refused at once;
- RTMP chunks are parsed exactly as FFmpeg's reader parses them (basic header, message header
  types 0-3, extended timestamp, Set Chunk Size), so both sides always agree on message boundaries;
- protocol control messages pass; command messages are held until complete, decoded (AMF0), and
  forwarded only if valid: `connect` must name the app `live` or `backup`, and `releaseStream`,
  `FCPublish` and `publish` must name the publish token. Anything else before `publish` (media,
  metadata, `play`, oversized messages, a slow client) closes the connection;
- when `publish` is valid, the program slot is claimed *before* the command reaches FFmpeg, so a
  refused publisher (wrong key, busy slot) never gets a single media byte to the decoder. From then
  on the proxy only copies bytes.

Every refusal is one WARNING line with the remote address (never the presented key) and a count in
INGEST_REJECTED{protocol="rtmp"}. The thread decodes with PyAV and pushes frames into the
`ProgramInput` as they arrive: RTMP publishers send in real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
import threading
from dataclasses import dataclass
from typing import Callable, Union

import av

from launchkit import metrics
from launchkit.auth import Tokens
from stream.program import Program, ProgramInput, Role, SlotBusy
from stream.worker import Worker

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
RTMP_VERSION = 3  # C0; 6 and 8 are RTMPE, 0x16 a TLS ClientHello (RTMPS)
HANDSHAKE_PACKET_SIZE = 1536  # C1 and C2
DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 16 * 1024 * 1024
# Before `publish` nothing legitimate is bigger than a command message.
MAX_MESSAGE_SIZE = 64 * 1024
MAX_CHUNK_STREAMS = 16  # pre-publish; with MAX_MESSAGE_SIZE this bounds what one client can make us hold
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

PUBLISH_DEADLINE = 10.0  # seconds from TCP accept to an accepted `publish`
MAX_CONNECTIONS = 8  # each holds a thread; legitimate publishers need 2 (primary + backup)
READ_SIZE = 64 * 1024
UPSTREAM_CONNECT_ATTEMPTS, UPSTREAM_CONNECT_INTERVAL = 50, 0.02  # FFmpeg's listener binds within ms
JOIN_TIMEOUT = 0.8  # stop() must be done within ~1 s
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
    """Reads the publisher's bytes from C2 to an accepted `publish` and says which may pass.

    Sans-IO: `feed()` takes what the client sent and returns what may be forwarded now, plus the
    `PublishRequest` once `publish` names the right key. It raises `Refused` instead of returning
    anything from a batch that breaks the rules, so a bad command never reaches FFmpeg.
    """

    def __init__(self, is_publish_key: Callable[[str], bool]) -> None:
        self._is_publish_key = is_publish_key
        self._handshake_left = HANDSHAKE_PACKET_SIZE  # C2 (the session reads C0 and C1 itself)
        self._buffer = bytearray()  # received, not parsed yet
        # Chunks since a command message began: forwarding them out of order could put them
        # behind a Set Chunk Size that did not apply to them.
        self._held = bytearray()
        self._chunk_size = DEFAULT_CHUNK_SIZE
        self._chunk_streams: dict[int, _ChunkStream] = {}
        self.role: Role | None = None  # set by a valid `connect`

    def feed(self, data: bytes) -> tuple[bytes, PublishRequest | None]:
        self._buffer += data
        forward = bytearray(self._take_handshake())
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

    def _take_handshake(self) -> bytes:
        size = min(self._handshake_left, len(self._buffer))
        c2 = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._handshake_left -= size
        return c2

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
        if not 1 <= size <= MAX_CHUNK_SIZE:
            raise _malformed(f"chunk size {size} outside 1..{MAX_CHUNK_SIZE}")
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
        self.started = False
        self.finished = threading.Event()
        self._open_timeout = open_timeout
        self._target: ProgramInput | None = None

    def start(self) -> None:
        self.started = True
        super().start()

    def attach(self, target: ProgramInput) -> None:
        """Called once the slot is claimed, before `publish` is forwarded (so before any media)."""
        self._target = target

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.finished.set()

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


def _remote(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if not peer:
        return "unknown"
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies until EOF; drain() keeps a slow side from making us buffer without bound."""
    while data := await reader.read(READ_SIZE):
        writer.write(data)
        await writer.drain()


class _ListenerFailed(Exception):
    """FFmpeg's internal listener never accepted our connection (a server fault, not the client's)."""


class _Session:
    """One publisher connection: gatekeeping until `publish`, then a plain relay."""

    def __init__(self, ingest: RtmpIngest, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 number: int) -> None:
        self._ingest = ingest
        self._closing = False
        self._client_reader, self._client_writer = reader, writer
        self.remote = _remote(writer)
        self._deadline = asyncio.get_running_loop().time() + ingest.publish_deadline
        self._demuxer = RtmpDemuxer(f"ingest-rtmp-{number}", self.remote, ingest.publish_deadline + READ_TIMEOUT)
        self._upstream_writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._input: ProgramInput | None = None
        # Its own task, not start_server's: Python 3.11 logs an error when that one ends cancelled.
        self.task = asyncio.create_task(self.run(), name=f"rtmp-session-{number}")

    def cancel(self) -> None:
        """Ends the session, unless it is already cleaning up: a cancelled cleanup could skip release()."""
        if not self._closing:
            self.task.cancel()

    async def run(self) -> None:
        try:
            await self._serve()
        except Refused as refusal:
            log.warning("refused RTMP publisher from %s (%s): %s", self.remote, refusal.reason, refusal)
            metrics.INGEST_REJECTED.labels("rtmp", refusal.reason).inc()
        except TimeoutError:
            log.warning("refused RTMP publisher from %s (bad_request): no publish within %g s",
                        self.remote, self._ingest.publish_deadline)
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
        if len(self._ingest.sessions) > MAX_CONNECTIONS:
            raise Refused("busy", f"more than {MAX_CONNECTIONS} RTMP connections at once")
        async with asyncio.timeout_at(self._deadline):
            c0_c1 = await self._read_c0_c1()
            self._demuxer.start()
            upstream_reader, upstream = await self._connect_upstream()
        upstream.write(c0_c1)
        self._tasks = [asyncio.create_task(_relay(upstream_reader, self._client_writer)),
                       asyncio.create_task(self._publisher_to_upstream(upstream))]
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # raises what ended the session

    async def _read_c0_c1(self) -> bytes:
        c0 = await self._client_reader.readexactly(1)
        if c0[0] != RTMP_VERSION:
            raise _malformed("not a plain RTMP handshake (RTMPS, RTMPE and other protocols are not served)")
        return c0 + await self._client_reader.readexactly(HANDSHAKE_PACKET_SIZE)

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        for _ in range(UPSTREAM_CONNECT_ATTEMPTS):
            try:
                reader, self._upstream_writer = await asyncio.open_connection(LOOPBACK, self._demuxer.port)
                return reader, self._upstream_writer
            except ConnectionRefusedError:
                if self._demuxer.finished.is_set():
                    break
                await asyncio.sleep(UPSTREAM_CONNECT_INTERVAL)
        raise _ListenerFailed(f"FFmpeg's RTMP listener on port {self._demuxer.port} did not start")

    async def _publisher_to_upstream(self, upstream: asyncio.StreamWriter) -> None:
        async with asyncio.timeout_at(self._deadline):
            if not await self._negotiate(upstream):
                log.info("RTMP publisher from %s left before publishing", self.remote)
                return
        await _relay(self._client_reader, upstream)

    async def _negotiate(self, upstream: asyncio.StreamWriter) -> bool:
        gate = PublishGate(self._ingest.tokens.is_publish)
        while data := await self._client_reader.read(READ_SIZE):
            forward, request = gate.feed(data)
            upstream.write(forward)
            if request is not None:
                self._claim(request.role)
                upstream.write(request.held)
                await upstream.drain()
                return True
            await upstream.drain()
        return False

    def _claim(self, role: Role) -> None:
        try:
            self._input = self._ingest.program.claim(role, "rtmp", self.remote)
        except SlotBusy as busy:
            raise Refused("busy", str(busy)) from None
        self._demuxer.attach(self._input)

    async def _close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._client_writer.transport.abort()
        if self._demuxer.started:
            if self._upstream_writer is None:  # FFmpeg still waits in accept(): only a connection ends that
                with contextlib.suppress(_ListenerFailed, OSError):
                    await self._connect_upstream()
            if self._upstream_writer is not None:
                self._upstream_writer.transport.abort()  # FFmpeg's read ends, so does the thread
            self._demuxer.request_stop()
            await asyncio.to_thread(self._demuxer.join, JOIN_TIMEOUT)
        if self._input is not None:
            self._input.release()


class RtmpIngest:
    """The public RTMP port: one gatekept session per connection, publishers into `program`."""

    publish_deadline = PUBLISH_DEADLINE

    def __init__(self, program: Program, tokens: Tokens, host: str, port: int) -> None:
        self.program, self.tokens = program, tokens
        self._host, self._port = host, port
        self._server: asyncio.Server | None = None
        self.sessions: set[_Session] = set()
        self._numbers = itertools.count(1)

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._on_connection, self._host, self._port)
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

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(self, reader, writer, next(self._numbers))
        self.sessions.add(session)
        try:
            await asyncio.wait([session.task])  # unlike `await`, does not raise when stop() cancels it
        finally:
            self.sessions.discard(session)
