"""FFmpeg's RTMP listener for one accepted publisher: PyAV decodes what the ingest relays to it on
loopback into the program, on one worker thread per publisher."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import av

from stream.program import ProgramInput
from stream.worker import Worker

log = logging.getLogger(__package__)  # one logger for the whole RTMP ingest

LOOPBACK = "127.0.0.1"
JOIN_POLL_INTERVAL = 0.005
# A publisher silent this long is gone: free its slot (the program shows the slate long before).
READ_TIMEOUT = 10.0
# FFmpeg's defaults wait ~20 frames to guess a frame rate we do not use: that is seconds on air late.
DEMUXER_OPTIONS = {"listen": "1", "fpsprobesize": "0", "analyzeduration": "1000000"}


class RtmpDemuxer(Worker):
    """FFmpeg's RTMP listener for one connection; decodes the accepted publisher into the program."""

    def __init__(self, name: str, remote: str, open_timeout: float) -> None:
        super().__init__(name)
        self.remote = remote
        self.port = _free_loopback_port()
        self.finished = threading.Event()
        self._open_timeout = open_timeout
        self._target: ProgramInput | None = None

    def attach(self, target: ProgramInput) -> None:
        """Called once the slot is claimed, before `publish` is forwarded (so before any media)."""
        self._target = target

    def run(self) -> None:
        try:
            self._run()
        finally:
            self.finished.set()

    async def wait_ended(self, timeout: float) -> None:
        """join() without blocking the event loop, nor a worker of the default executor: a flood
        closes many sessions at once, and other parts of the server share that executor."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.is_alive():
            if loop.time() >= deadline:
                log.warning("%s did not stop within %.1f s", self.name, timeout)
                return
            await asyncio.sleep(JOIN_POLL_INTERVAL)

    def _run(self) -> None:
        try:
            container = av.open(f"rtmp://{LOOPBACK}:{self.port}/live/stream", format="flv",
                                options=DEMUXER_OPTIONS, timeout=(self._open_timeout, READ_TIMEOUT))
        except av.FFmpegError as error:  # refused or gone before publishing: the session logs why
            log.debug("RTMP listener for %s closed before media: %s", self.remote, error)
            return
        with container:
            if self._target is None:  # media passes the gate only after attach(): not reachable
                log.error("RTMP media from %s arrived before its slot was claimed; dropping it", self.remote)
                return
            self._decode(container, self._target)

    def _decode(self, container: av.container.InputContainer, target: ProgramInput) -> None:
        streams = [s for s in (*container.streams.video[:1], *container.streams.audio[:1]) if s.codec_context]
        if not streams:  # e.g. a codec this FFmpeg build cannot decode: free the slot rather than hold it silent
            log.warning("RTMP publisher from %s sent no audio or video we can decode; dropping it", self.remote)
            return
        target.set_codecs(video=next((s.codec_context.name for s in streams if s.type == "video"), None),
                          audio=next((s.codec_context.name for s in streams if s.type == "audio"), None))
        try:
            for packet in container.demux(streams):
                if self.stopping.is_set():
                    return
                if packet.size:
                    target.count_bytes(packet.size)
                for frame in _decode_packet(packet):
                    if isinstance(frame, av.VideoFrame):
                        target.push_video(frame)
                    else:
                        target.push_audio(frame)
        except av.FFmpegError as error:  # FFmpeg reports a closed RTMP connection as an I/O error
            log.info("RTMP stream from %s ended: %s", self.remote, error.strerror or error)


def _decode_packet(packet: av.Packet) -> list[av.VideoFrame | av.AudioFrame]:
    try:
        return packet.decode()
    except av.InvalidDataError:  # one damaged packet must not end the broadcast
        log.debug("undecodable %s packet skipped", packet.stream.type)
        return []


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]
