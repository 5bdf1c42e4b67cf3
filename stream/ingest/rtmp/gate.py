"""The publisher's side of an RTMP connection from the end of the handshake to an accepted
`publish`: which bytes may pass to FFmpeg, and which publisher is let in.

Protocol control messages pass; command messages are held until complete, decoded (AMF0), and
forwarded only if valid: `connect` must name the app `live` or `backup`, and `releaseStream`,
`FCPublish` and `publish` must name the publish token. Anything else before `publish` (media,
metadata, `play`, oversized messages) refuses the publisher.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from stream.ingest.rtmp.chunk import ChunkReader
from stream.ingest.rtmp.message import (
    COMMAND_MESSAGES,
    PLAY_COMMANDS,
    PUBLISH_COMMANDS,
    SET_CHUNK_SIZE,
    Command,
    decode_command,
    role_for_app,
)
from stream.ingest.rtmp.refusal import Refused, malformed
from stream.program import Role

# What a client may send between the handshake and `publish`: FFmpeg sends ~450 bytes, OBS as much.
PREPUBLISH_BYTES = 16 * 1024


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
        self._chunks = ChunkReader()
        # Chunks since a command message began: forwarding them out of order could put them
        # behind a Set Chunk Size that did not apply to them.
        self._held = bytearray()
        self.role: Role | None = None  # set by a valid `connect`

    def feed(self, data: bytes) -> tuple[bytes, PublishRequest | None]:
        self._received += len(data)
        if self._received > PREPUBLISH_BYTES:
            raise malformed(f"more than {PREPUBLISH_BYTES} bytes before publish")
        self._chunks.feed(data)
        forward = bytearray()
        while (chunk := self._chunks.take()) is not None:
            raw, message_type_id, message = chunk
            if message_type_id in COMMAND_MESSAGES or self._held:
                self._held += raw
            else:
                forward += raw
            if message is not None and message_type_id in COMMAND_MESSAGES:
                role = self._check_command(decode_command(message_type_id, message))
                if role is not None:
                    request = PublishRequest(role, bytes(self._held) + self._chunks.rest())
                    self._held.clear()
                    return bytes(forward), request
            elif message is not None and message_type_id == SET_CHUNK_SIZE:
                self._chunks.set_chunk_size(message)
            if self._held and not self._chunks.command_in_progress():
                forward += self._held
                self._held.clear()
        return bytes(forward), None

    def _check_command(self, command: Command) -> Role | None:
        """Raises `Refused` for a command that must not reach FFmpeg; the role for a valid `publish`."""
        if self.role is None:
            if command.name != "connect":
                raise malformed("a command before connect")
            self.role = role_for_app(command.command_object)
            return None
        if command.name == "connect":
            raise malformed("a second connect")
        if command.name in PLAY_COMMANDS:
            raise malformed("play on an ingest endpoint")
        if command.name in PUBLISH_COMMANDS:
            name = command.first_argument
            if not isinstance(name, str) or not self._is_publish_key(name.partition("?")[0]):
                raise Refused("bad_key", "wrong application or stream key")
        return self.role if command.name == "publish" else None
