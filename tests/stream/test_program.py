"""The program output: continuous frames whatever the publishers do."""

from __future__ import annotations

import time

import av
import numpy as np
import pytest

from stream.program import AUDIO_RATE, MAX_AUDIO_QUEUE_SECONDS, Program, SlotBusy
from stream.source import CapturedFrame

FPS = 20


def _frame(value: int) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.full((180 * 3 // 2, 320), value, np.uint8), format="yuv420p")


SLATE = _frame(16)


class Sink:
    def __init__(self) -> None:
        self.frames: list[CapturedFrame] = []

    def __call__(self, captured: CapturedFrame) -> None:
        self.frames.append(captured)

    def video(self) -> list[CapturedFrame]:
        return [f for f in self.frames if f.is_video]


@pytest.fixture
def program():
    sink = Sink()
    running = Program(320, 180, FPS, sink, lambda wallclock: SLATE, stall_timeout=0.3)
    running.sink = sink
    running.start()
    yield running
    running.stop(1.0)


def _publish(program_input, seconds: float, value: int = 200) -> None:
    for _ in range(int(seconds * FPS)):
        program_input.push_video(_frame(value))
        time.sleep(1 / FPS)


def test_slate_until_a_publisher_arrives_then_the_publisher(program):
    time.sleep(0.3)
    assert program.on_air == "slate"
    assert all(f.frame is SLATE for f in program.sink.video())
    primary = program.claim("primary", "test", "local")
    _publish(primary, 0.5)
    assert program.on_air == "primary"
    assert program.sink.video()[-1].frame is not SLATE


def test_publisher_loss_switches_to_slate_within_the_stall_timeout_and_back(program):
    primary = program.claim("primary", "test", "local")
    _publish(primary, 0.5)
    lost_at = time.monotonic()
    while program.on_air != "slate" and time.monotonic() - lost_at < 2:
        time.sleep(0.01)
    switch = time.monotonic() - lost_at
    assert program.on_air == "slate" and switch <= 0.3 + 2 / FPS + 0.1, switch
    resumed_at = time.monotonic()
    primary.push_video(_frame(200))
    while program.on_air != "primary" and time.monotonic() - resumed_at < 2:
        time.sleep(0.005)
    assert time.monotonic() - resumed_at <= 2 / FPS + 0.05


def test_output_is_continuous_whatever_the_input_does(program):
    primary = program.claim("primary", "test", "local")
    _publish(primary, 0.4)
    time.sleep(0.6)  # publisher silent: slate
    _publish(primary, 0.4)
    video = program.sink.video()
    stamps = [f.wallclock for f in video]
    gaps = {round(b - a, 6) for a, b in zip(stamps, stamps[1:])}
    assert gaps == {round(1 / FPS, 6)}  # one frame per tick, no gap, no burst
    audio = [f for f in program.sink.frames if not f.is_video]
    assert len(audio) == len(video) and all(f.frame.samples == AUDIO_RATE // FPS for f in audio)


def test_backup_takes_over_from_the_slate_and_primary_wins_back(program):
    primary = program.claim("primary", "test", "local")
    backup = program.claim("backup", "test", "local")
    _publish(backup, 0.3, value=100)
    assert program.on_air == "backup"
    _publish(primary, 0.3)
    assert program.on_air == "primary"


def test_one_publisher_per_role(program):
    program.claim("primary", "rtmp", "10.0.0.1")
    with pytest.raises(SlotBusy, match="already live"):
        program.claim("primary", "whip", "10.0.0.2")
    released = program.claim("backup", "whip", "10.0.0.2")
    released.release()
    program.claim("backup", "srt", "10.0.0.3")  # a released slot is free again


def test_audio_queue_is_bounded_when_the_publisher_runs_fast(program):
    primary = program.claim("primary", "test", "local")
    second = av.AudioFrame.from_ndarray(np.zeros((1, 2 * 48000), np.int16), format="s16", layout="stereo")
    second.sample_rate = 48000
    primary.push_audio(second)
    assert primary.audio_queued <= int(MAX_AUDIO_QUEUE_SECONDS * AUDIO_RATE)


def test_a_bursty_publisher_at_the_program_rate_loses_no_frame(program):
    primary = program.claim("primary", "test", "local")
    sent = [_frame(value) for value in range(40, 40 + 24)]
    for pair in range(0, len(sent), 2):  # two frames at once, every other tick: network bursts
        primary.push_video(sent[pair])
        primary.push_video(sent[pair + 1])
        time.sleep(2 / FPS)
    time.sleep(0.3)
    shown = [f.frame for f in program.sink.video()]
    assert all(any(frame is shown_frame for shown_frame in shown) for frame in sent)
    assert primary.stats.frames_dropped == 0


def test_a_faster_publisher_is_thinned_to_the_program_rate(program):
    primary = program.claim("primary", "test", "local")
    for value in range(60):  # twice the program rate for 1.5 s
        primary.push_video(_frame(value))
        time.sleep(0.5 / FPS)
    assert primary.stats.frames_dropped >= 20
