"""The SRT listener process: `python -m stream.ingest.srt_listener --host H --port P --latency-ms N`.

`stream.ingest.srt.SrtIngest` runs this as a child of the origin; it terminates SRT through
Debian's libsrt (`stream.ingest.libsrt`) and hands the caller's MPEG-TS to the origin. Its
contract with the parent:

- argv: where to listen and the latency, nothing secret (argv is world-readable in /proc).
- stdin: the passphrase on the first line, then held open by the parent: end of file means
  stop (the parent asked, or died), so a listener never outlives its origin.
- stdout: the accepted caller's payload, each SRT message as it is delivered (MPEG-TS).
- stderr: one JSON object per line, `{"event": ..., ...}`: `listening`, `accepted` (remote,
  stream_id), `refused` (remote, stream_id, reason, code, why), `ended` (remote, why), `failed`
  (error), `unavailable` (error), `libsrt` (message: libsrt's own errors).
- exit status: 0 after a session or a stop, EXIT_FAILED when the listener could not be set up
  (e.g. port in use), EXIT_UNAVAILABLE when libsrt cannot be loaded here.

One process serves one caller, as the parent's supervisor expects: once a caller is accepted,
further callers are refused during their handshake (`busy`, SRT reject code 1409) until the
session ends and the process exits.

Why refusals are read from libsrt's log: a listener's application is not told about callers
libsrt rejects (its own comment: "listener has no functionality of giving the app insight into
rejected callers"); the passphrase is checked after the listen callback has already let the
caller through. libsrt does log each rejection with its code ("rsp(REJECT): 1010 - Incorrect
passphrase"), so a log handler parses that line. It runs on the thread that ran the listen
callback for the same handshake, which is how the refusal gets the caller's address and stream
id. That relies on libsrt 1.5's wording: if it changed, callers would still be refused, only the
event (and the parent's metric) would go quiet; the tests would say so.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import signal
import threading

from stream.ingest import libsrt

POLL_MS = 100  # how often the accept and receive waits look at the stop flag
MESSAGE_BYTES = 1500  # above libsrt's largest live payload (1456)
PASSPHRASE_MAX_BYTES = 80  # libsrt takes 10-79 characters
STREAM_ID_SHOWN = 128  # characters of a caller's stream id put into an event
EXIT_FAILED, EXIT_UNAVAILABLE = 1, 3
BUSY = libsrt.SRT_REJC_PREDEFINED + 409  # SRT_REJX_CONFLICT: the one session is taken

# libsrt's handshake rejection log line, and what its codes (1000 + SRT_REJ_*) mean for the operator.
REJECTION = re.compile(r"rsp\(REJECT\): (\d+) - (.+)")
REJECTION_REASONS = {
    1010: "bad_key",  # BADSECRET: wrong passphrase
    1011: "bad_key",  # UNSECURE: no passphrase
    1008: "unsupported",  # VERSION
    1012: "unsupported",  # MESSAGEAPI
    1013: "unsupported",  # CONGESTION
    1014: "unsupported",  # FILTER
    1015: "unsupported",  # GROUP
    1017: "unsupported",  # CRYPTO: e.g. another cipher mode
}
APPLICATION_CODES = 2000  # 1000 + SRT_REJC_PREDEFINED and above: set by our own listen callback
LOG_ERROR = 3


class Events:
    """JSON lines on stderr, whole lines even when libsrt's threads report at the same time."""

    def __init__(self, fd: int = 2) -> None:
        self._fd, self._lock = fd, threading.Lock()

    def emit(self, event: str, **fields: object) -> None:
        line = (json.dumps({"event": event, **fields}) + "\n").encode()
        with self._lock:
            try:
                os.write(self._fd, line)
            except OSError:
                pass  # the parent is gone; stdin's end of file stops us next


class Listener:
    """One listener socket, one accepted caller relayed to stdout, refusals reported."""

    def __init__(self, srt: libsrt.Srt, events: Events, stop: threading.Event) -> None:
        self._srt, self._events, self._stop = srt, events, stop
        # libsrt thread -> (socket, remote, stream id) of the handshake its listen callback last let through
        self._handshakes: dict[int, tuple[int, str, str]] = {}
        self._handshakes_lock = threading.Lock()
        self._busy = False

    def run(self, host: str, port: int, latency_ms: int, passphrase: bytes) -> int:
        self._srt.set_log_handler(self._on_log)
        listener: int | None = None
        try:
            listener = self._srt.create_socket()
            self._configure(listener, latency_ms, passphrase)
            self._srt.bind(listener, host, port)
            self._srt.listen_callback(listener, self._on_handshake)
            self._srt.listen(listener, 1)
            self._events.emit("listening", remote=remote(host, port))
            caller = self._accept(listener)
            if caller is not None:
                self._session(caller)
            return 0
        except (libsrt.SrtError, OSError) as error:  # OSError: the host does not resolve
            self._events.emit("failed", error=str(error))
            return EXIT_FAILED
        finally:
            if listener is not None:
                self._srt.close(listener)

    def _configure(self, sock: int, latency_ms: int, passphrase: bytes) -> None:
        # Inherited by the accepted socket. TRANSTYPE first: it resets the options that follow.
        self._srt.set_int(sock, libsrt.SRTO_TRANSTYPE, libsrt.SRTT_LIVE)
        self._srt.set_bytes(sock, libsrt.SRTO_PASSPHRASE, passphrase)
        self._srt.set_int(sock, libsrt.SRTO_PBKEYLEN, 16)  # what callers default to and the console's URL says
        self._srt.set_int(sock, libsrt.SRTO_LATENCY, latency_ms)
        self._srt.set_int(sock, libsrt.SRTO_RCVTIMEO, POLL_MS)

    def _accept(self, listener: int) -> int | None:
        while not self._stop.is_set():
            caller = self._srt.accept(listener, POLL_MS)
            if caller is not None:
                self._busy = True
                with self._handshakes_lock:  # done: a later refusal on that thread is not this caller's
                    self._handshakes = {k: v for k, v in self._handshakes.items() if v[0] != caller}
                return caller
        return None

    def _session(self, caller: int) -> None:
        try:
            peer = describe(self._srt.peer_name(caller))
            stream_id = self._srt.get_bytes(caller, libsrt.SRTO_STREAMID, libsrt.STREAMID_MAX)
            self._events.emit("accepted", remote=peer,
                              stream_id=stream_id.decode(errors="replace")[:STREAM_ID_SHOWN])
            self._events.emit("ended", remote=peer, why=self._relay(caller))
        finally:
            self._srt.close(caller)

    def _relay(self, caller: int) -> str:
        """Copies the caller's messages to stdout until it leaves; returns why it ended."""
        buffer = ctypes.create_string_buffer(MESSAGE_BYTES)
        view = memoryview(buffer).cast("B")
        while not self._stop.is_set():
            try:
                size = self._srt.receive(caller, buffer)
            except libsrt.SrtError as error:
                return str(error)
            if size is None:
                continue
            try:
                write_all(1, view[:size])
            except BrokenPipeError:
                return "the origin stopped reading"
        return "the listener was stopped"

    def _on_handshake(self, sock: int, peer: tuple[str, int] | None, stream_id: str) -> bool:
        """libsrt's listen callback, before the passphrase check: refuses callers past the first."""
        caller, shown = describe(peer), stream_id[:STREAM_ID_SHOWN]
        if self._busy:
            self._srt.reject(sock, BUSY)
            self._events.emit("refused", remote=caller, stream_id=shown, reason="busy", code=BUSY,
                              why="another caller is being served")
            return False
        with self._handshakes_lock:
            self._handshakes[threading.get_ident()] = (sock, caller, shown)
        return True

    def _on_log(self, level: int, _area: str, message: str) -> None:
        rejection = REJECTION.search(message)
        if rejection is None:
            if level <= LOG_ERROR:
                self._events.emit("libsrt", message=message.strip(": \n")[:200])
            return
        code = int(rejection[1])
        if code >= APPLICATION_CODES:
            return  # our own listen callback refused it, and said so
        with self._handshakes_lock:
            _, caller, stream_id = self._handshakes.pop(threading.get_ident(), (0, "unknown", ""))
        self._events.emit("refused", remote=caller, stream_id=stream_id, reason=REJECTION_REASONS.get(code, "bad_request"),
                          code=code, why=rejection[2].strip())


def describe(peer: tuple[str, int] | None) -> str:
    return remote(*peer) if peer is not None else "unknown"


def remote(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


def read_passphrase(fd: int = 0) -> bytes | None:
    """The first line on stdin, without its newline; None if stdin ends before one."""
    data = b""
    while b"\n" not in data and len(data) <= PASSPHRASE_MAX_BYTES:
        chunk = os.read(fd, PASSPHRASE_MAX_BYTES + 1)
        if not chunk:
            return None
        data += chunk
    line, newline, _ = data.partition(b"\n")
    return line if newline else None


def wait_for_end_of_input(stop: threading.Event, fd: int = 0) -> None:
    while os.read(fd, 64):
        pass
    stop.set()


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stream.ingest.srt_listener",
                                     description="SRT listener; passphrase on stdin (see the module docstring)")
    parser.add_argument("--host", required=True, help="numeric IPv4 or IPv6 address to listen on")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=int, default=200)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the origin decides
    args = arguments(argv)
    events = Events()
    passphrase = read_passphrase()
    if passphrase is None:
        events.emit("failed", error="no passphrase line on stdin")
        return EXIT_FAILED
    stop = threading.Event()
    threading.Thread(target=wait_for_end_of_input, args=(stop,), name="stdin", daemon=True).start()
    try:
        srt = libsrt.Srt()
    except OSError as error:
        events.emit("unavailable", error=f"{error}: install Debian's libsrt1.5-gnutls (PyAV's FFmpeg has no SRT)")
        return EXIT_UNAVAILABLE
    except libsrt.SrtError as error:
        events.emit("failed", error=str(error))
        return EXIT_FAILED
    try:
        return Listener(srt, events, stop).run(args.host, args.port, args.latency_ms, passphrase)
    finally:
        srt.cleanup()


if __name__ == "__main__":
    raise SystemExit(main())
