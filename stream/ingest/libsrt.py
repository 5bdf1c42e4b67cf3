"""ctypes binding to Debian's libsrt: the few calls an SRT listener needs, nothing more.

Why ctypes on the system library: PyPI has no maintained libsrt binding and PyAV's FFmpeg has
no SRT, while Debian ships libsrt 1.5 (package `libsrt1.5-gnutls`, the flavour its ffmpeg links,
so it is on every machine that has that ffmpeg). Only its stable C API is used (`srt.h` of
libsrt 1.5: option numbers, error codes, callback signatures); the soname pins the ABI, so a
libsrt 1.6 with other option numbers would not load silently.

The library is only ever loaded by the listener child process (`stream.ingest.srt_listener`),
never in the origin: a crash in network-facing C code then costs a listener restart, not the
broadcast. ctypes releases the GIL around every call, and libsrt's callbacks (listen hook,
log handler) run on libsrt's own threads, which ctypes lets into Python by taking the GIL.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from collections.abc import Callable

LIBRARY = "libsrt-gnutls.so.1.5"  # Debian 12's libsrt1.5-gnutls

# SRT_SOCKOPT values from srt.h (libsrt 1.5)
SRTO_RCVTIMEO = 14
SRTO_LATENCY = 23
SRTO_PASSPHRASE = 26
SRTO_PBKEYLEN = 27
SRTO_STREAMID = 46
SRTO_TRANSTYPE = 50
SRTO_IPV6ONLY = 54
SRTT_LIVE = 0

SRT_ETIMEOUT = 6003  # SRT_ERRNO of a wait that timed out: not a failure here

SRT_REJC_PREDEFINED = 1000  # reject codes an application sets: 1000 + an HTTP status
STREAMID_MAX = 512  # libsrt refuses longer stream ids
LOG_WARNING = 4  # syslog levels, as srt_setloglevel takes them
LOG_BARE = 1 | 2 | 4 | 8  # SRT_LOGF_DISABLE_TIME, _THREADNAME, _SEVERITY, _EOL: the message alone

INVALID = -1

LISTEN_HOOK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int, ctypes.c_void_p,
                               ctypes.c_char_p)
LOG_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                               ctypes.c_char_p)

_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "srt_startup": (ctypes.c_int, []),
    "srt_cleanup": (ctypes.c_int, []),
    "srt_create_socket": (ctypes.c_int32, []),
    "srt_bind": (ctypes.c_int, [ctypes.c_int32, ctypes.c_char_p, ctypes.c_int]),
    "srt_listen": (ctypes.c_int, [ctypes.c_int32, ctypes.c_int]),
    "srt_listen_callback": (ctypes.c_int, [ctypes.c_int32, LISTEN_HOOK, ctypes.c_void_p]),
    "srt_accept_bond": (ctypes.c_int32, [ctypes.POINTER(ctypes.c_int32), ctypes.c_int, ctypes.c_int64]),
    "srt_getpeername": (ctypes.c_int, [ctypes.c_int32, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]),
    "srt_setsockflag": (ctypes.c_int, [ctypes.c_int32, ctypes.c_int, ctypes.c_void_p, ctypes.c_int]),
    "srt_getsockflag": (ctypes.c_int, [ctypes.c_int32, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]),
    "srt_recvmsg": (ctypes.c_int, [ctypes.c_int32, ctypes.c_char_p, ctypes.c_int]),
    "srt_close": (ctypes.c_int, [ctypes.c_int32]),
    "srt_getlasterror": (ctypes.c_int, [ctypes.c_void_p]),
    "srt_getlasterror_str": (ctypes.c_char_p, []),
    "srt_setrejectreason": (ctypes.c_int, [ctypes.c_int32, ctypes.c_int]),
    "srt_rejectreason_str": (ctypes.c_char_p, [ctypes.c_int]),
    "srt_setloglevel": (None, [ctypes.c_int]),
    "srt_setloghandler": (None, [ctypes.c_void_p, LOG_HANDLER]),
    "srt_setlogflags": (None, [ctypes.c_int]),
}


class SrtError(Exception):
    """A libsrt call failed; `code` is its SRT_ERRNO."""

    def __init__(self, call: str, code: int, message: str) -> None:
        super().__init__(f"{call}: {message} (SRT error {code})")
        self.code = code


class Srt:
    """libsrt, loaded, started, with typed wrappers that raise SrtError on failure."""

    def __init__(self, library: str = LIBRARY) -> None:
        self._lib = ctypes.CDLL(library)
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(self._lib, name)
            function.restype, function.argtypes = restype, argtypes
        # Callbacks handed to C must outlive every call into it: ctypes frees them with the object.
        self._callbacks: list[object] = []
        self._check("srt_startup", self._lib.srt_startup())

    def cleanup(self) -> None:
        self._lib.srt_cleanup()

    def _check(self, call: str, result: int) -> int:
        if result == INVALID:
            raise SrtError(call, self._lib.srt_getlasterror(None), self._lib.srt_getlasterror_str().decode(errors="replace"))
        return result

    def set_log_handler(self, handler: Callable[[int, str, str], None], level: int = LOG_WARNING) -> None:
        """Routes libsrt's log lines (level, area, message) to `handler` instead of its stderr."""
        def call(_opaque: int, level: int, _file: bytes, _line: int, area: bytes, message: bytes) -> None:
            handler(level, (area or b"").decode(errors="replace"), (message or b"").decode(errors="replace"))

        callback = LOG_HANDLER(call)
        self._callbacks.append(callback)
        self._lib.srt_setloghandler(None, callback)
        self._lib.srt_setlogflags(LOG_BARE)
        self._lib.srt_setloglevel(level)

    def create_socket(self) -> int:
        return self._check("srt_create_socket", self._lib.srt_create_socket())

    def set_int(self, sock: int, option: int, value: int) -> None:
        number = ctypes.c_int(value)
        self._check("srt_setsockflag", self._lib.srt_setsockflag(sock, option, ctypes.byref(number), ctypes.sizeof(number)))

    def set_bytes(self, sock: int, option: int, value: bytes) -> None:
        buffer = ctypes.create_string_buffer(value, len(value))
        self._check("srt_setsockflag", self._lib.srt_setsockflag(sock, option, buffer, len(value)))

    def get_bytes(self, sock: int, option: int, size: int) -> bytes:
        buffer, length = ctypes.create_string_buffer(size + 1), ctypes.c_int(size + 1)
        self._check("srt_getsockflag", self._lib.srt_getsockflag(sock, option, buffer, ctypes.byref(length)))
        return buffer.raw[:length.value]

    def bind(self, sock: int, host: str, port: int) -> None:
        address = sockaddr(host, port)
        if struct.unpack_from("=H", address)[0] == socket.AF_INET6:
            # libsrt refuses to bind `::` without being told; take IPv4 callers there too, as ffmpeg's TCP listeners do.
            self.set_int(sock, SRTO_IPV6ONLY, 0)
        self._check("srt_bind", self._lib.srt_bind(sock, address, len(address)))

    def listen(self, sock: int, backlog: int) -> None:
        self._check("srt_listen", self._lib.srt_listen(sock, backlog))

    def listen_callback(self, sock: int, hook: Callable[[int, tuple[str, int] | None, str], bool]) -> None:
        """Calls `hook(new_socket, peer, stream_id)` before each handshake completes; False refuses."""
        def call(_opaque: int, new_socket: int, _version: int, peer: int, stream_id: bytes | None) -> int:
            return 0 if hook(new_socket, peer_address(peer), (stream_id or b"").decode(errors="replace")) else -1

        callback = LISTEN_HOOK(call)
        self._callbacks.append(callback)
        self._check("srt_listen_callback", self._lib.srt_listen_callback(sock, callback, None))

    def accept(self, listener: int, timeout_ms: int) -> int | None:
        """The next connected caller, or None after `timeout_ms` (srt_accept itself cannot time out)."""
        listeners = (ctypes.c_int32 * 1)(listener)
        accepted = self._lib.srt_accept_bond(listeners, 1, timeout_ms)
        if accepted == INVALID and self._lib.srt_getlasterror(None) == SRT_ETIMEOUT:
            return None
        return self._check("srt_accept_bond", accepted)

    def peer_name(self, sock: int) -> tuple[str, int] | None:
        buffer, length = ctypes.create_string_buffer(128), ctypes.c_int(128)
        self._check("srt_getpeername", self._lib.srt_getpeername(sock, buffer, ctypes.byref(length)))
        return parse_sockaddr(buffer.raw[:length.value])

    def receive(self, sock: int, buffer: ctypes.Array[ctypes.c_char]) -> int | None:
        """Bytes of the next message in `buffer`, or None when the receive timeout expired."""
        size = self._lib.srt_recvmsg(sock, buffer, len(buffer))
        if size == INVALID and self._lib.srt_getlasterror(None) == SRT_ETIMEOUT:
            return None
        return self._check("srt_recvmsg", size)

    def reject(self, sock: int, code: int) -> None:
        """Sets the code a listen hook's refusal sends the caller (SRT_REJC_PREDEFINED + HTTP status)."""
        self._lib.srt_setrejectreason(sock, code)

    def reject_reason(self, code: int) -> str:
        return (self._lib.srt_rejectreason_str(code) or b"").decode(errors="replace")

    def close(self, sock: int) -> None:
        self._lib.srt_close(sock)


def sockaddr(host: str, port: int) -> bytes:
    """A struct sockaddr_in/sockaddr_in6 (Linux layout) for `host`, resolved as a listener's would be."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)[0]
    packed = socket.inet_pton(family, address[0])
    if family == socket.AF_INET6:
        return struct.pack("=H", family) + struct.pack("!HI", port, address[2]) + packed + struct.pack("=I", address[3])
    return struct.pack("=H", family) + struct.pack("!H", port) + packed + bytes(8)


def parse_sockaddr(raw: bytes) -> tuple[str, int] | None:
    if len(raw) >= 16 and struct.unpack_from("=H", raw)[0] == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack_from("!H", raw, 2)[0]
    if len(raw) >= 24 and struct.unpack_from("=H", raw)[0] == socket.AF_INET6:
        address = ipaddress.IPv6Address(raw[8:24])
        # An IPv4 caller on a dual-stack listener is named as IPv4, as everywhere else in the logs.
        return str(address.ipv4_mapped or address), struct.unpack_from("!H", raw, 2)[0]
    return None


def peer_address(pointer: int | None) -> tuple[str, int] | None:
    """The address behind a `const struct sockaddr*` libsrt hands a callback."""
    if not pointer:
        return None
    family = struct.unpack("=H", ctypes.string_at(pointer, 2))[0]
    return parse_sockaddr(ctypes.string_at(pointer, 28 if family == socket.AF_INET6 else 16))
