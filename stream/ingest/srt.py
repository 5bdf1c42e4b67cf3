"""SRT ingest: OBS, FFmpeg or a hardware encoder connects in caller mode to our listener, with
the publish token as the SRT passphrase.

Why a Debian `ffmpeg` subprocess: PyAV's bundled FFmpeg has no SRT protocol and PyPI has no
libsrt binding, while Debian's ffmpeg links libsrt. So ffmpeg terminates SRT (handshake,
passphrase check, AES decryption, retransmissions, latency buffer) and hands us the MPEG-TS the
caller sends, remuxed untouched (`-c copy`), on its stdout; we demux and decode that with PyAV
like every other ingest. The split also keeps the network-facing C code in its own process: if
it dies, the listener restarts and the origin stays up.

One ffmpeg process serves one publisher. Its listener accepts a single caller and then stops
listening, and it exits when that caller leaves; the supervisor loop then starts a new listener
(quickly after a session, with a growing delay after failures such as a port already in use).

Authentication happens in libsrt's handshake: a caller with a wrong or missing passphrase is
refused before any media flows, so nothing is claimed, decoded or put on air. libsrt says so only
on ffmpeg's stderr ("rsp(REJECT): 1010 - Incorrect passphrase"); we read those lines to log the
refusal and count it in INGEST_REJECTED. That relies on libsrt's log wording (Debian 12's
libsrt 1.5): if it changes, refusals still happen, only the log line and the metric go quiet.
libsrt passphrases must be 10-79 characters, so a publish token outside that range disables SRT.

The program slot is claimed when the first media packet arrives, so a refused or silent caller
never takes the role. Limits that come from ffmpeg's CLI: the caller's address and its stream id
are not reported (no per-role stream id check), and the passphrase is on ffmpeg's command line.
"""

from __future__ import annotations

import enum
import io
import logging
import re
import shutil
import subprocess
import threading
from collections import deque

import av

from launchkit import metrics
from stream.program import Program, ProgramInput, Role, SlotBusy
from stream.worker import Worker

log = logging.getLogger(__name__)

FFMPEG = "ffmpeg"  # Debian's, linked with libsrt
PASSPHRASE_LENGTHS = range(10, 80)  # libsrt refuses anything else
RESTART_DELAY = 0.1  # after a publisher leaves: be ready for the next one at once
FAILURE_DELAY, MAX_FAILURE_DELAY = 0.5, 10.0  # doubles per failed listener, e.g. port in use
STOP_GRACE = 0.5  # ffmpeg exits within ~0.1 s of SIGTERM; SIGKILL after this
STDERR_TAIL = 5  # last ffmpeg lines kept to explain an unexpected exit
PROBE_MICROSECONDS = 500_000  # enough to find H.264/AAC parameters in a live MPEG-TS

# libsrt's handshake rejection line and what its codes (1000 + SRT_REJ_*) mean for the operator.
_REJECTION = re.compile(r"rsp\(REJECT\): (\d+) - (.+)")
_REJECTION_REASONS = {
    1010: "bad_key",  # BADSECRET: wrong passphrase
    1011: "bad_key",  # UNSECURE: no passphrase
    1008: "unsupported",  # VERSION
    1012: "unsupported",  # MESSAGEAPI
    1013: "unsupported",  # CONGESTION
    1014: "unsupported",  # FILTER
    1015: "unsupported",  # GROUP
    1017: "unsupported",  # CRYPTO: e.g. another cipher mode
}


class _Outcome(enum.Enum):
    ON_AIR = "a publisher sent media"
    REFUSED = "a publisher was refused after its handshake"
    NO_MEDIA = "the listener ended without media"


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
        """PID of the current ffmpeg listener (diagnostics)."""
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
        if shutil.which(FFMPEG) is None:
            return f"{FFMPEG} not found: install Debian's ffmpeg package (PyAV's own FFmpeg has no SRT)"
        return None

    def request_stop(self) -> None:
        super().request_stop()
        # The worker is blocked reading ffmpeg's stdout: ending ffmpeg is what wakes it up.
        with self._process_lock:
            if self._process is not None and self._process.poll() is None:
                self._process.terminate()

    def stop(self, timeout: float = 1.0) -> None:
        super().stop(timeout)

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            failures = 0 if self._session() is _Outcome.ON_AIR else failures + 1
            delay = RESTART_DELAY if not failures else min(MAX_FAILURE_DELAY, FAILURE_DELAY * 2 ** (failures - 1))
            if self.stopping.wait(delay):
                return

    def _command(self) -> list[str]:
        # Options go before -i rather than into the URL's query, so they need no URL escaping and
        # ffmpeg's messages (which quote the URL) never contain the passphrase.
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [
            FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "warning",
            "-mode", "listener", "-passphrase", self._passphrase, "-pbkeylen", "16",
            "-latency", str(self.latency_ms * 1000),  # microseconds
            # Probing holds back the first frame for its whole duration (5 s by default).
            "-analyzeduration", str(PROBE_MICROSECONDS),
            "-i", f"srt://{host}:{self.port}",
            "-map", "0:v:0?", "-map", "0:a:0?", "-c", "copy",
            "-flush_packets", "1",  # hand each packet over now, not when a 32 KiB buffer fills
            "-f", "mpegts", "pipe:1",
        ]

    def _spawn(self) -> subprocess.Popen[bytes] | None:
        with self._process_lock:
            if self.stopping.is_set():
                return None
            # Unbuffered pipes: PyAV asks for 32 KiB reads and must get whatever has arrived.
            self._process = subprocess.Popen(self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, bufsize=0)
            return self._process

    def _session(self) -> _Outcome:
        """Runs one listener until its publisher leaves (or stop)."""
        process = self._spawn()
        if process is None:
            return _Outcome.NO_MEDIA
        tail: deque[str] = deque(maxlen=STDERR_TAIL)
        watcher = threading.Thread(target=self._watch_stderr, args=(process, tail), name=f"{self.name}-stderr",
                                   daemon=True)
        watcher.start()
        try:
            outcome = self._receive(process)
        finally:
            _end(process)
            watcher.join(STOP_GRACE)
            process.stdout.close()
            process.stderr.close()
        if outcome is _Outcome.NO_MEDIA and not self.stopping.is_set():
            log.warning("SRT listener on %s:%d exited (code %s) without a publisher: %s", self.host, self.port,
                        process.returncode, " | ".join(tail) or "no message")
        return outcome

    def _receive(self, process: subprocess.Popen[bytes]) -> _Outcome:
        program_input: ProgramInput | None = None
        try:
            # Blocks until a caller passes the handshake and sends media, or ffmpeg exits. ffmpeg
            # already probed the publisher's stream, so a short look at its remux is enough here.
            with av.open(process.stdout, format="mpegts", options={"analyzeduration": "100000"}) as container:
                video = container.streams.video[:1]
                if not video:
                    log.warning("SRT publisher refused: its stream has no video")
                    metrics.INGEST_REJECTED.labels("srt", "unsupported").inc()
                    return _Outcome.REFUSED
                streams = [*video, *container.streams.audio[:1]]
                for packet in container.demux(*streams):
                    if program_input is None:
                        program_input = self._claim(streams)
                        if program_input is None:
                            return _Outcome.REFUSED
                    _push(program_input, packet)
        except av.FFmpegError as error:
            # Before any media this is just ffmpeg ending (stop, restart); after, the stream broke.
            log.log(logging.WARNING if program_input is not None else logging.DEBUG, "SRT input ended: %s", error)
        finally:
            if program_input is not None:
                program_input.release()
        return _Outcome.ON_AIR if program_input is not None else _Outcome.NO_MEDIA

    def _claim(self, streams: list[av.stream.Stream]) -> ProgramInput | None:
        try:
            program_input = self._program.claim(self._role, "srt", f"caller via port {self.port}")
        except SlotBusy as busy:
            # The caller is dropped when this ffmpeg ends; it may retry once the role is free.
            log.warning("SRT publisher refused: %s", busy)
            metrics.INGEST_REJECTED.labels("srt", "busy").inc()
            return None
        codecs = {stream.type: stream.codec_context.name for stream in streams}
        program_input.set_codecs(video=codecs.get("video"), audio=codecs.get("audio"))
        return program_input

    def _watch_stderr(self, process: subprocess.Popen[bytes], tail: deque[str]) -> None:
        for raw in io.BufferedReader(process.stderr):
            line = raw.decode(errors="replace").rstrip().replace(self._passphrase, "***")
            tail.append(line)
            log.debug("ffmpeg (srt): %s", line)
            rejection = _REJECTION.search(line)
            if rejection:
                code, why = int(rejection[1]), rejection[2]
                reason = _REJECTION_REASONS.get(code, "bad_request")
                log.warning("SRT caller refused during the handshake: %s (SRT reject code %d)", why, code)
                metrics.INGEST_REJECTED.labels("srt", reason).inc()


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


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
