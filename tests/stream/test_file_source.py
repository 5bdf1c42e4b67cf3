import subprocess
import threading
import time
from pathlib import Path

import pytest

from stream.source import CapturedFrame
from stream.source.file import LoopedFile

FPS, SECONDS = 15, 2


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate={FPS}",
         "-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", str(SECONDS), "-c:v", "libx264", "-preset", "ultrafast",
         "-c:a", "aac", str(path)],
        check=True, timeout=30,
    )
    return path


def test_plays_in_real_time_and_loops_with_a_continuous_clock(clip):
    source = LoopedFile(clip)
    frames: list[CapturedFrame] = []
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(frames.append, stop))
    started = time.monotonic()
    thread.start()
    time.sleep(3.0)
    stop.set()
    stopped = time.monotonic()
    thread.join(1.0)
    assert not thread.is_alive() and time.monotonic() - stopped < 0.3  # stop is prompt
    elapsed = stopped - started
    video = [f for f in frames if f.is_video]
    audio = [f for f in frames if not f.is_video]
    assert len(video) > FPS * SECONDS  # went past the end of the file: it loops
    assert abs(len(video) - FPS * elapsed) <= 4  # paced by the clock, not decoded flat out
    assert len(audio) > 0 and audio[-1].wallclock > video[0].wallclock + SECONDS  # audio loops too
    stamps = [f.wallclock for f in video]
    steps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    assert all(abs(step - 1 / FPS) < 1e-3 for step in steps)  # monotonic and gapless, across the loop too
    audio_stamps = [f.wallclock for f in audio]
    assert audio_stamps == sorted(audio_stamps)


def test_a_missing_file_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="media file not found"):
        LoopedFile(tmp_path / "intro.mp4")


def test_a_file_without_video_is_refused(tmp_path):
    sound = tmp_path / "tone.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=sample_rate=48000",
                    "-t", "0.5", "-c:a", "aac", str(sound)], check=True, timeout=30)
    with pytest.raises(ValueError, match="no video stream"):
        LoopedFile(sound)


def test_a_file_that_is_not_media_is_refused(tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video")
    with pytest.raises(ValueError, match="not a media file"):
        LoopedFile(notes)
