"""An RTMP client's bytes, built by hand: AMF0 values, chunked messages in every header form, the
commands a publisher sends. The ingest tests feed them to the gate and the attack tests to a server."""

from __future__ import annotations

import struct

from stream.ingest.rtmp.message import COMMAND_AMF0, SET_CHUNK_SIZE


def amf0(*values: object) -> bytes:
    out = b""
    for value in values:
        if value is None:
            out += b"\x05"
        elif isinstance(value, str):
            out += b"\x02" + struct.pack(">H", len(value.encode())) + value.encode()
        elif isinstance(value, (int, float)):
            out += b"\x00" + struct.pack(">d", value)
        elif isinstance(value, dict):
            out += b"\x03"
            for name, item in value.items():
                out += struct.pack(">H", len(name)) + name.encode() + amf0(item)
            out += b"\x00\x00\x09"
    return out


def basic_header(fmt: int, chunk_stream_id: int) -> bytes:
    if chunk_stream_id < 64:
        return bytes([fmt << 6 | chunk_stream_id])
    if chunk_stream_id < 320:
        return bytes([fmt << 6, chunk_stream_id - 64])
    return bytes([fmt << 6 | 1, (chunk_stream_id - 64) & 0xFF, (chunk_stream_id - 64) >> 8])


def message(chunk_stream_id: int, type_id: int, payload: bytes, chunk_size: int = 128, timestamp: int = 0) -> bytes:
    """One message as a type 0 chunk and type 3 continuations, extended timestamps as librtmp and FFmpeg send them."""
    extended = struct.pack(">I", timestamp) if timestamp >= 0xFFFFFF else b""
    header = (min(timestamp, 0xFFFFFF).to_bytes(3) + len(payload).to_bytes(3) + bytes([type_id])
              + struct.pack("<I", 0))
    out = basic_header(0, chunk_stream_id) + header + extended + payload[:chunk_size]
    for start in range(chunk_size, len(payload), chunk_size):
        out += basic_header(3, chunk_stream_id) + extended + payload[start : start + chunk_size]
    return out


def command(name: str, *arguments: object, chunk_stream_id: int = 3, chunk_size: int = 128, timestamp: int = 0,
            command_object: object = None) -> bytes:
    return message(chunk_stream_id, COMMAND_AMF0, amf0(name, 1, command_object, *arguments), chunk_size, timestamp)


def connect(app: str = "live", timestamp: int = 0) -> bytes:
    # Padded like a real client's connect so that it spans several chunks.
    return command("connect", command_object={"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0",
                                               "tcUrl": f"rtmp://127.0.0.1/{app}", "swfUrl": "x" * 100},
                   timestamp=timestamp)


def set_chunk_size(size: int) -> bytes:
    return message(2, SET_CHUNK_SIZE, struct.pack(">I", size))
