"""AMF0, as far as RTMP command messages use it (Adobe's AMF0 specification): numbers, booleans,
strings, null/undefined, objects, ECMA and strict arrays. Nesting is bounded."""

from __future__ import annotations

import struct
from typing import Union

from stream.ingest.rtmp.refusal import malformed

MAX_AMF_DEPTH = 8

AmfValue = Union[float, bool, str, None, dict[str, "AmfValue"], list["AmfValue"]]


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
            raise malformed("AMF0 values nested too deep")
        if marker == self.OBJECT:
            return self._properties(depth)
        if marker == self.ECMA_ARRAY:
            self._take(4)  # the count is only a hint; the object end marker ends the array
            return self._properties(depth)
        if marker == self.STRICT_ARRAY:
            return [self.read_value(depth + 1) for _ in range(self._u32())]
        raise malformed(f"AMF0 type marker {marker} is not used by RTMP publishers")

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
            raise malformed("truncated AMF0 value")
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
