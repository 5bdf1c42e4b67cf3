"""SRT ingest against real processes: Debian's ffmpeg publishes in caller mode to our listener
on 127.0.0.1, and a real Program decides what goes on air."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import av
import numpy as np
import pytest
from prometheus_client import REGISTRY

from stream.ingest.srt import SrtIngest
from stream.program import Program
from stream.source import CapturedFrame

TOKEN = "k" * 16 + "publish-token-32"  # 32 characters, like a generated token
SLATE = av.VideoFrame.from_ndarray(np.full((270, 320), 128, np.uint8), format="yuv420p")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def publisher(port: int, passphrase: str | None, seconds: float) -> list[str]:
    url = f"srt://127.0.0.1:{port}?mode=caller&pbkeylen=16"
    if passphrase is not None:
        url += f"&passphrase={passphrase}"
    return [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=15", "-f", "lavfi", "-i", "sine=sample_rate=48000",
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "15", "-c:a", "aac",
        "-t", str(seconds), "-f", "mpegts", url,
    ]


def listening(port: int) -> bool:
    """Whether a UDP socket is bound to `port` (read from the kernel: probing by binding would race ffmpeg)."""
    with open("/proc/net/udp") as table:
        return any(int(line.split()[1].split(":")[1], 16) == port for line in list(table)[1:])


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def rejected(reason: str) -> float:
    return REGISTRY.get_sample_value("launchkit_ingest_rejected_total", {"protocol": "srt", "reason": reason}) or 0.0


def srt_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("ingest-srt")]


@pytest.fixture
def program() -> Iterator[tuple[Program, list[CapturedFrame]]]:
    frames: list[CapturedFrame] = []
    running = Program(320, 180, 15, frames.append, lambda wallclock: SLATE)
    running.start()
    yield running, frames
    running.stop(1.0)


@pytest.fixture
def ingest(program: tuple[Program, list[CapturedFrame]]) -> Iterator[SrtIngest]:
    srt = SrtIngest(program[0], TOKEN, "127.0.0.1", free_udp_port())
    srt.start()
    assert wait_for(lambda: listening(srt.port), 5)
    yield srt
    srt.stop()


def test_publisher_goes_on_air_and_can_reconnect(program, ingest):
    running, frames = program
    for session in range(2):
        with subprocess.Popen(publisher(ingest.port, TOKEN, 5 if session == 0 else 3)) as publish:
            try:
                assert wait_for(lambda: running.on_air == "primary", 8), f"session {session} never went on air"
                (live,) = running.inputs()
                assert publish.wait(15) == 0
            finally:
                publish.kill()
        assert (live.stats.protocol, live.stats.video_codec, live.stats.audio_codec) == ("srt", "h264", "aac")
        assert (live.stats.width, live.stats.height) == (320, 180)
        assert live.stats.bytes > 10_000
        if session == 0:
            assert live.stats.frames > 30
        # The publisher is gone: its slot is freed and the listener comes back for the next one.
        assert wait_for(lambda: not running.inputs() and listening(ingest.port), 5)
        assert live.closed
    assert wait_for(lambda: running.on_air == "slate", 2)
    assert any(f.is_video and f.frame is not SLATE for f in frames)  # decoded frames reached the program output


@pytest.mark.parametrize("passphrase", ["wrong-passphrase-of-32-characters", None], ids=["wrong", "missing"])
def test_a_caller_without_the_token_is_refused_in_the_handshake(program, ingest, passphrase):
    running, _ = program
    listener, refused_before = ingest.listener_pid, rejected("bad_key")
    result = subprocess.run(publisher(ingest.port, passphrase, 3), capture_output=True, text=True, timeout=15)
    assert result.returncode != 0
    assert wait_for(lambda: rejected("bad_key") == refused_before + 1, 2)
    assert running.inputs() == [] and running.on_air == "slate"
    assert ingest.listener_pid == listener  # a refusal does not disturb the listener


def test_a_publisher_for_a_busy_role_is_dropped(program, ingest):
    running, _ = program
    holder = running.claim("primary", "rtmp", "127.0.0.1")
    busy_before = rejected("busy")
    with subprocess.Popen(publisher(ingest.port, TOKEN, 4), stderr=subprocess.DEVNULL) as publish:
        try:
            assert wait_for(lambda: rejected("busy") == busy_before + 1, 8)
        finally:
            publish.kill()
    assert running.inputs() == [holder]
    holder.release()


def test_stop_ends_the_listener_and_releases_a_live_publisher(program, ingest):
    running, _ = program
    with subprocess.Popen(publisher(ingest.port, TOKEN, 10), stderr=subprocess.DEVNULL) as publish:
        try:
            assert wait_for(lambda: running.on_air == "primary", 8)
            listener = ingest.listener_pid
            started = time.monotonic()
            ingest.stop()
            assert time.monotonic() - started < 1.5
        finally:
            publish.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(listener, 0)  # gone and reaped, not a zombie
    assert srt_threads() == []
    assert running.inputs() == []


def test_a_token_srt_cannot_use_disables_srt_with_a_clear_log_line(program, caplog):
    srt = SrtIngest(program[0], "short", "127.0.0.1", free_udp_port())
    with caplog.at_level(logging.ERROR, logger="stream.ingest.srt"):
        srt.start()
    assert "SRT ingest disabled: the publish token has 5 characters" in caplog.text
    assert srt.listener_pid is None and srt_threads() == []
    srt.stop()
