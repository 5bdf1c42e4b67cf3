"""The RTMP handshake (RTMP 1.0 spec, 5.2) both ways: the server's answer to a publisher, and the
client's side the ingest plays with FFmpeg's listener.

The server answers exactly as FFmpeg's listener does: S1 carries C1's epoch, a zero version and
random bytes, S2 echoes C1 (publishers then skip digest checks, as they do with FFmpeg's server),
and C2 is read but not checked (FFmpeg only warns when it differs). C0's version byte is checked,
so RTMPE, RTMPS (TLS) and stray HTTP are refused at once.
"""

from __future__ import annotations

import os

from stream.ingest.rtmp.refusal import malformed

RTMP_VERSION = 3  # C0; 6 and 8 are RTMPE, 0x16 a TLS ClientHello (RTMPS)
HANDSHAKE_PACKET_SIZE = 1536  # C1 and C2


def check_version(c0: bytes) -> None:
    if c0[0] != RTMP_VERSION:
        raise malformed("not a plain RTMP handshake (RTMPS, RTMPE and other protocols are not served)")


def server_answer(c0: bytes, c1: bytes) -> bytes:
    """S0, S1 and S2 for the publisher's C0 and C1."""
    epoch = c1[:4] + bytes(4)
    return c0 + epoch + os.urandom(HANDSHAKE_PACKET_SIZE - 8) + epoch + c1[8:]


def client_hello() -> bytes:
    """C0 and C1, as the client of FFmpeg's listener."""
    return bytes([RTMP_VERSION]) + bytes(8) + os.urandom(HANDSHAKE_PACKET_SIZE - 8)


def client_ack(s0_s1_s2: bytes) -> bytes:
    """C2: S1 echoed."""
    return s0_s1_s2[1 : 1 + HANDSHAKE_PACKET_SIZE]
