"""SRT ingest against real processes: Debian's ffmpeg publishes in caller mode to our listener
(a `python -m stream.ingest.srt_listener` child binding Debian's libsrt) on 127.0.0.1, and a real
Program decides what goes on air."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import av
import numpy as np
import pytest
from prometheus_client import REGISTRY

import launchkit.metrics  # noqa: F401  (installs the Prometheus telemetry these tests read back)
from stream.ingest.srt import LISTENER, SrtIngest
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
        assert re.fullmatch(r"127\.0\.0\.1:\d+", live.stats.remote), live.stats.remote  # the caller's address
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
            stopped = time.monotonic() - started
            assert stopped < 1.5
        finally:
            publish.kill()
    with pytest.raises(ProcessLookupError):
        os.kill(listener, 0)  # gone and reaped, not a zombie
    assert srt_threads() == []
    assert running.inputs() == []
    print(f"\nstop() returned after {stopped:.2f} s with a publisher live")


def test_a_token_srt_cannot_use_disables_srt_with_a_clear_log_line(program, caplog):
    srt = SrtIngest(program[0], "short", "127.0.0.1", free_udp_port())
    with caplog.at_level(logging.ERROR, logger="stream.ingest.srt"):
        srt.start()
    assert "SRT ingest disabled: the publish token has 5 characters" in caplog.text
    assert srt.listener_pid is None and srt_threads() == []
    srt.stop()


def test_a_second_caller_during_a_session_is_refused_as_busy_in_its_handshake(program, ingest):
    running, _ = program
    with subprocess.Popen(publisher(ingest.port, TOKEN, 10), stderr=subprocess.DEVNULL) as first:
        try:
            assert wait_for(lambda: running.on_air == "primary", 8)
            (live,) = running.inputs()
            busy_before, started = rejected("busy"), time.monotonic()
            second = subprocess.run(publisher(ingest.port, TOKEN, 2), capture_output=True, text=True, timeout=15)
            refused_after = time.monotonic() - started
            assert second.returncode != 0
            assert wait_for(lambda: rejected("busy") == busy_before + 1, 2)
            assert running.inputs() == [live] and not live.closed  # the first publisher stays on air
        finally:
            first.kill()
    print(f"\nsecond caller refused {refused_after:.2f} s after it started (ffmpeg's own startup included)")


def test_a_port_in_use_is_retried_with_backoff_until_it_frees(program, caplog):
    port = free_udp_port()
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", port))
    srt = SrtIngest(program[0], TOKEN, "127.0.0.1", port)
    try:
        with caplog.at_level(logging.WARNING, logger="stream.ingest.srt"):
            srt.start()
            assert wait_for(lambda: "exited (code 1) without a publisher: srt_bind" in caplog.text, 5), caplog.text
        holder.close()
        freed = time.monotonic()
        assert wait_for(lambda: srt.listener_pid is not None and listening(port), 5)
        print(f"\nlistening {time.monotonic() - freed:.2f} s after the port freed")
    finally:
        holder.close()
        srt.stop()


def test_the_listener_child_stops_when_its_stdin_ends_as_when_the_origin_dies():
    port = free_udp_port()
    child = subprocess.Popen([sys.executable, "-m", LISTENER, "--host", "127.0.0.1", "--port", str(port)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        child.stdin.write(TOKEN.encode() + b"\n")
        child.stdin.flush()
        assert wait_for(lambda: listening(port), 5)
        started = time.monotonic()
        child.stdin.close()  # what the kernel does to the pipe when the origin is killed
        assert child.wait(2) == 0
        stopped = time.monotonic() - started
        assert stopped < 1.0 and not listening(port)
        events = [json.loads(line) for line in child.stderr.read().splitlines()]
        assert events == [{"event": "listening", "remote": f"127.0.0.1:{port}"}]
        print(f"\nlistener gone {stopped:.2f} s after its stdin closed")
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        child.stderr.close()
