"""Real encoded media, once per module, for the stream tests (tests/support/media.py makes it)."""

from __future__ import annotations

import pytest

from stream.encoder import AudioEncoder, VideoEncoder
from stream.packet import EncodedPacket
from tests.support.media import encode_lavfi


@pytest.fixture(scope="module")
def encoded() -> tuple[VideoEncoder, AudioEncoder, list[EncodedPacket]]:
    return encode_lavfi(3.2)
