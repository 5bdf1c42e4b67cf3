"""The RTMP chunk stream before `publish`, parsed exactly as FFmpeg's reader parses it (basic
header, message header types 0-3, extended timestamp, Set Chunk Size), so the ingest and the
FFmpeg listener behind it always agree on message boundaries.

Only the publisher's first few hundred bytes go through here, so the limits are tight: no message
but control and command messages, none over MAX_MESSAGE_SIZE, at most MAX_CHUNK_STREAMS chunk
streams, and no chunk size below the protocol default (which no publisher lowers) so that a byte
never costs a chunk header.
"""

from __future__ import annotations

from dataclasses import dataclass

from stream.ingest.rtmp.message import COMMAND_MESSAGES, CONTROL_MESSAGES
from stream.ingest.rtmp.refusal import malformed

DEFAULT_CHUNK_SIZE = 128
# Before `publish`: no publisher lowers the chunk size below the default (smaller chunks only multiply
# our parsing work per byte), and a size above the largest message allowed changes nothing.
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = DEFAULT_CHUNK_SIZE, 16 * 1024 * 1024
# Before `publish` nothing legitimate is bigger than a command message (FFmpeg's connect: ~250 bytes).
MAX_MESSAGE_SIZE = 8 * 1024
MAX_CHUNK_STREAMS = 16  # pre-publish
EXTENDED_TIMESTAMP = 0xFFFFFF
MESSAGE_HEADER_SIZES = (11, 7, 3, 0)  # by chunk type (the basic header's fmt)


@dataclass
class _ChunkStream:
    """What the previous chunk of one chunk stream left for the next one's compressed header."""

    timestamp_field: int = 0  # the raw 3-byte field: 0xFFFFFF means an extended timestamp follows
    message_length: int = 0
    message_type_id: int = 0
    payload: bytearray | None = None  # the message being reassembled; None between messages


class ChunkReader:
    """Whole chunks off the bytes fed so far, with the messages they complete. Sans-IO; raises
    `Refused` (bad_request) on anything outside the limits above."""

    def __init__(self) -> None:
        self._buffer = bytearray()  # received, not parsed yet
        self._chunk_size = DEFAULT_CHUNK_SIZE
        self._chunk_streams: dict[int, _ChunkStream] = {}

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def rest(self) -> bytes:
        """Everything fed and not parsed yet, which the reader forgets."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    def take(self) -> tuple[bytes, int, bytes | None] | None:
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
            raise malformed("message header changed in the middle of a message")
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
            raise malformed("a chunk stream began without a full message header")
        if len(self._chunk_streams) >= MAX_CHUNK_STREAMS:
            raise malformed("too many chunk streams before publish")
        stream = self._chunk_streams[chunk_stream_id] = _ChunkStream()
        return stream

    def command_in_progress(self) -> bool:
        return any(s.payload is not None and s.message_type_id in COMMAND_MESSAGES
                   for s in self._chunk_streams.values())

    def set_chunk_size(self, message: bytes) -> None:
        size = int.from_bytes(message[:4]) if len(message) >= 4 else 0
        if not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE:
            raise malformed(f"chunk size {size} outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} before publish")
        self._chunk_size = size


def _check_message_start(length: int, message_type_id: int) -> None:
    if message_type_id not in CONTROL_MESSAGES | COMMAND_MESSAGES:
        raise malformed(f"message type {message_type_id} before publish")
    if length > MAX_MESSAGE_SIZE:
        raise malformed(f"a {length}-byte message before publish")
