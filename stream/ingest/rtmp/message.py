"""RTMP messages (RTMP 1.0 spec, 5.4 and 7.1): the type ids the ingest tells apart, and the command
messages a publisher sends before `publish`, decoded as far as the checks need."""

from __future__ import annotations

from dataclasses import dataclass

from stream.ingest.rtmp.amf0 import Amf0Reader, AmfValue
from stream.ingest.rtmp.refusal import Refused, malformed
from stream.program import Role

# Abort is relayed but not acted on, as FFmpeg does.
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


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    command_object: AmfValue
    first_argument: AmfValue  # the stream name, for the publish commands


def decode_command(message_type_id: int, payload: bytes) -> Command:
    """Reads only as far as the checks need, so optional trailing arguments cannot trip us."""
    if message_type_id == COMMAND_AMF3:
        if not payload or payload[0] != 0:
            raise malformed("AMF3 command without its AMF0 format byte")
        payload = payload[1:]
    reader = Amf0Reader(payload)
    name = reader.read_value()
    if not isinstance(name, str):
        raise malformed("command message without a command name")
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
