"""SRT ingest: OBS, FFmpeg or a hardware encoder connects in caller mode to our listener, with
the publish token as the SRT passphrase.

Why a child process binding Debian's libsrt: PyAV's bundled FFmpeg has no SRT protocol and PyPI
has no maintained libsrt binding, while Debian ships libsrt 1.5 (`libsrt1.5-gnutls`, what its
ffmpeg links). The listener runs as `python -m stream.ingest.srt_listener`, which drives libsrt
through ctypes (`stream.ingest.libsrt`): libsrt terminates SRT (handshake, passphrase check, AES
decryption, retransmissions, latency buffer) and the child writes the caller's MPEG-TS to its
stdout; we demux and decode that with PyAV like every other ingest. Keeping the network-facing
C code in its own process means a crash in it costs a listener restart, not the origin.

Why not Debian's ffmpeg CLI as the listener any more (it was, before): its only way to take the
passphrase is its command line, which every local user reads in /proc/PID/cmdline (`ps`), and
it inherited the origin's environment, token included. FFmpeg 5.1 cannot read an option from a
file or a pipe (7.0's `-/option file` is not in Debian 12; the concat demuxer's `option
passphrase` applied to the handshake but then could not open the input). The child gets the
passphrase on its stdin, an allow-listed environment without any LAUNCHKIT_ variable, and only
the address, port and latency on its command line.

Authentication happens in libsrt's handshake: a caller with a wrong or missing passphrase is
refused before any media flows, so nothing is claimed, decoded or put on air. The child reports
each refusal as a JSON event on stderr with the caller's address and stream id (never the
passphrase); we log it and count it in INGEST_REJECTED (`bad_key` for a wrong or missing
passphrase; how the child learns the reason is in its docstring). libsrt passphrases must be
10-79 characters, so a publish token outside that range disables SRT.

One child serves one publisher: it accepts a single caller, refuses any other caller while that
session lasts (`busy`, in the handshake), and exits when the caller leaves; the supervisor loop
then starts a new listener (quickly after a session, with a growing delay after failures such as
a port already in use). The program slot is claimed when the first media packet arrives, so a
refused or silent caller never takes the role, and the slot names the caller's address.

Stopping: closing the child's stdin is its stop signal (it is also what the child sees if the
origin dies, so no listener outlives its origin); it exits within ~0.1 s, SIGKILL after STOP_GRACE.
"""

from __future__ import annotations

import enum
import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field

import av

from stream import telemetry
from stream.program import Program, ProgramInput, Role, SlotBusy
from stream.worker import Worker

log = logging.getLogger(__name__)

LISTENER = "stream.ingest.srt_listener"  # run with this interpreter: `python -m LISTENER`
# All the child needs from the environment: where Python, its modules and libraries are, and the locale.
CHILD_ENVIRONMENT = ("PATH", "PYTHONPATH", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "LC_CTYPE")
PASSPHRASE_LENGTHS = range(10, 80)  # libsrt refuses anything else
RESTART_DELAY = 0.1  # after a publisher leaves: be ready for the next one at once
FAILURE_DELAY, MAX_FAILURE_DELAY = 0.5, 10.0  # doubles per failed listener, e.g. port in use
STOP_GRACE = 0.5  # the child exits within ~0.1 s of its stdin closing; SIGKILL after this
STDERR_TAIL = 5  # last child lines kept to explain an unexpected exit
PROBE_MICROSECONDS = 500_000  # enough to find H.264/AAC parameters in a live MPEG-TS
CALLER_WAIT = 1.0  # the child reports its caller before the first byte; its stderr may lag a little
REASONS = frozenset({"bad_key", "busy", "bad_request", "unsupported"})  # INGEST_REJECTED's labels
STREAM_ID_LOGGED = 64  # characters of a caller's stream id in a log line


class _Outcome(enum.Enum):
    ON_AIR = "a publisher sent media"
    REFUSED = "a publisher was refused after its handshake"
    NO_MEDIA = "the listener ended without media"
    UNAVAILABLE = "libsrt cannot be loaded"


@dataclass
class _Session:
    """What one listener child reported, shared by its stderr reader and the worker."""

    accepted: threading.Event = field(default_factory=threading.Event)
    remote: str = "unknown"
    failure: str | None = None
    unavailable: str | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL))


class SrtIngest(Worker):
    """Keeps an SRT listener on `host:port` and feeds its publisher into `program` as `role`."""

    def __init__(self, program: Program, passphrase: str, host: str, port: int, role: Role = "primary",
                 latency_ms: int = 200) -> None:
        super().__init__(f"ingest-srt-{role}")
        self._program, self._passphrase, self._role = program, passphrase, role
        self.host, self.port, self.latency_ms = host, port, latency_ms
        self._process: subprocess.Popen[bytes] | None = None
        self._process_lock = threading.Lock()

    @property
    def listener_pid(self) -> int | None:
        """PID of the current listener child (diagnostics)."""
        with self._process_lock:
            return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self) -> None:
        problem = self._problem()
        if problem:
            log.error("SRT ingest disabled: %s", problem)
            return
        log.info("SRT ingest listening on %s:%d for the %s publisher", self.host, self.port, self._role)
        super().start()

    def _problem(self) -> str | None:
        if len(self._passphrase) not in PASSPHRASE_LENGTHS:
            return (
                f"the publish token has {len(self._passphrase)} characters but an SRT passphrase needs "
                f"{PASSPHRASE_LENGTHS.start}-{PASSPHRASE_LENGTHS.stop - 1}; set LAUNCHKIT_PUBLISH_TOKEN to such a "
                "token (generated tokens have 32)"
            )
        return None

    def request_stop(self) -> None:
        super().request_stop()
        # The worker is blocked reading the child's stdout: ending the child is what wakes it up.
        with self._process_lock:
            if self._process is not None:
                _close(self._process.stdin)

    def stop(self, timeout: float = 1.0) -> None:
        super().stop(timeout)

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            outcome = self._session()
            if outcome is _Outcome.UNAVAILABLE:
                return
            failures = 0 if outcome is _Outcome.ON_AIR else failures + 1
            delay = RESTART_DELAY if not failures else min(MAX_FAILURE_DELAY, FAILURE_DELAY * 2 ** (failures - 1))
            if self.stopping.wait(delay):
                return

    def _command(self) -> list[str]:
        # Nothing secret here: any local user can read it in /proc/PID/cmdline.
        return [sys.executable, "-m", LISTENER, "--host", self.host, "--port", str(self.port),
                "--latency-ms", str(self.latency_ms)]

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._process_lock:
            if self.stopping.is_set():
                return None
            environment = {name: os.environ[name] for name in CHILD_ENVIRONMENT if name in os.environ}
            # Unbuffered pipes: PyAV asks for 32 KiB reads and must get whatever has arrived.
            self._process = subprocess.Popen(self._command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, bufsize=0, env=environment)
            try:
                # One write below PIPE_BUF: whole, and never blocking. stdin then stays open until stop.
                self._process.stdin.write(self._passphrase.encode() + b"\n")
            except OSError:
                pass  # the child died at once: its stdout ends and its stderr says why
            return self._process

    def _session(self) -> _Outcome:
        """Runs one listener child until its publisher leaves (or stop)."""
        process = self._spawn()
        if process is None:
            return _Outcome.NO_MEDIA
        session = _Session()
        watcher = threading.Thread(target=self._watch_stderr, args=(process, session), name=f"{self.name}-stderr",
                                   daemon=True)
        watcher.start()
        try:
            outcome = self._receive(process, session)
        finally:
            self._end(process)
            watcher.join(STOP_GRACE)
            process.stderr.close()
        if session.unavailable is not None:
            log.error("SRT ingest disabled: %s", session.unavailable)
            return _Outcome.UNAVAILABLE
        if outcome is _Outcome.NO_MEDIA and not self.stopping.is_set() and (session.failure or process.returncode):
            log.warning("SRT listener on %s:%d exited (code %s) without a publisher: %s", self.host, self.port,
                        process.returncode, session.failure or " | ".join(session.tail) or "no message")
        return outcome

    def _receive(self, process: subprocess.Popen[bytes], session: _Session) -> _Outcome:
        program_input: ProgramInput | None = None
        try:
            # Blocks until a caller passes the handshake and sends media, or the child exits.
            with av.open(process.stdout, format="mpegts", options={"analyzeduration": str(PROBE_MICROSECONDS)}) \
                    as container:
                video = container.streams.video[:1]
                if not video:
                    log.warning("refused SRT publisher from %s (unsupported): its stream has no video", session.remote)
                    telemetry.counter("ingest_rejected", "srt", "unsupported").inc()
                    return _Outcome.REFUSED
                streams = [*video, *container.streams.audio[:1]]
                for packet in container.demux(*streams):
                    if program_input is None:
                        program_input = self._claim(streams, session)
                        if program_input is None:
                            return _Outcome.REFUSED
                    _push(program_input, packet)
        except av.FFmpegError as error:
            # Before any media this is just the child ending (stop, restart); after, the stream broke.
            log.log(logging.WARNING if program_input is not None else logging.DEBUG, "SRT input ended: %s", error)
        finally:
            if program_input is not None:
                program_input.release()
        return _Outcome.ON_AIR if program_input is not None else _Outcome.NO_MEDIA

    def _claim(self, streams: list[av.stream.Stream], session: _Session) -> ProgramInput | None:
        session.accepted.wait(CALLER_WAIT)
        try:
            program_input = self._program.claim(self._role, "srt", session.remote)
        except SlotBusy as busy:
            # The caller is dropped when this child ends; it may retry once the role is free.
            log.warning("refused SRT publisher from %s (busy): %s", session.remote, busy)
            telemetry.counter("ingest_rejected", "srt", "busy").inc()
            return None
        codecs = {stream.type: stream.codec_context.name for stream in streams}
        program_input.set_codecs(video=codecs.get("video"), audio=codecs.get("audio"))
        return program_input

    def _watch_stderr(self, process: subprocess.Popen[bytes], session: _Session) -> None:
        for raw in io.BufferedReader(process.stderr):
            # A caller may choose any stream id, even the token itself: it never reaches the log.
            line = raw.decode(errors="replace").rstrip().replace(self._passphrase, "***")
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if isinstance(event, dict):
                self._on_event(event, session)
            else:
                session.tail.append(line)  # not one of the child's events: e.g. a Python traceback
                log.debug("SRT listener: %s", line)

    def _end(self, process: subprocess.Popen[bytes]) -> None:
        # stdin's end of file tells the child to stop (under the lock: request_stop closes it too);
        # closing our end of its stdout unblocks a child stuck writing media nobody reads (EPIPE).
        with self._process_lock:
            _close(process.stdin)
        _close(process.stdout)
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _on_event(self, event: dict[str, object], session: _Session) -> None:
        kind, remote = event.get("event"), str(event.get("remote", "unknown"))
        stream_id = str(event.get("stream_id", ""))[:STREAM_ID_LOGGED]
        if kind == "accepted":
            session.remote = remote
            session.accepted.set()
            log.info("SRT caller %s connected (stream id %r)", remote, stream_id)
        elif kind == "refused":
            reason = str(event.get("reason"))
            reason = reason if reason in REASONS else "bad_request"
            log.warning("refused SRT publisher from %s, stream id %r (%s): %s (SRT reject code %s)", remote, stream_id,
                        reason, event.get("why"), event.get("code"))
            telemetry.counter("ingest_rejected", "srt", reason).inc()
        elif kind == "ended":
            log.info("SRT caller %s left: %s", remote, event.get("why"))
        elif kind == "failed":
            session.failure = str(event.get("error"))
        elif kind == "unavailable":
            session.unavailable = str(event.get("error"))
        else:  # listening, libsrt's own errors
            log.debug("SRT listener: %s", event)


def _push(program_input: ProgramInput, packet: av.Packet) -> None:
    program_input.count_bytes(packet.size)
    try:
        frames = packet.decode()
    except av.error.InvalidDataError:
        return  # a packet broken by network loss: the decoder resyncs on the next keyframe
    for frame in frames:
        if isinstance(frame, av.VideoFrame):
            program_input.push_video(frame)
        else:
            program_input.push_audio(frame)


def _close(pipe: io.RawIOBase | None) -> None:
    if pipe is not None and not pipe.closed:
        pipe.close()
