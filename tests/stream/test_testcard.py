import threading
import time

import av
import numpy as np

from stream.source import CapturedFrame, testcard
from stream.source.testcard import TextOverlay, clock_text


def _blank(width: int = 320, height: int = 180) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.full((height * 3 // 2, width), 128, np.uint8), format="yuv420p")


def test_overlay_burns_the_clock_into_the_picture():
    overlay = TextOverlay(320, 180, "Title")
    first, second = _blank(), _blank()
    overlay.draw(first, clock_text(1_700_000_000.0, 1))
    overlay.draw(second, clock_text(1_700_000_001.5, 46))
    luma_first, luma_second = first.to_ndarray()[:180], second.to_ndarray()[:180]
    assert (luma_first != 128).any()  # something was drawn
    assert (luma_first != luma_second).any()  # and it follows the clock


def test_clock_text_shows_milliseconds_and_frame_number():
    text = clock_text(1_700_000_000.25, 42)
    assert text.endswith("frame 000042")
    assert text.split()[0].endswith(".250")


def test_runs_in_real_time_with_video_and_audio_and_stops_promptly():
    card = testcard.TestCard(testcard.TestCardSettings(width=320, height=180, fps=30))
    frames: list[CapturedFrame] = []
    stop = threading.Event()
    thread = threading.Thread(target=card.run, args=(frames.append, stop))
    started = time.monotonic()
    thread.start()
    time.sleep(1.0)
    stop.set()
    thread.join(1.0)
    assert not thread.is_alive()
    elapsed = time.monotonic() - started
    video = [f for f in frames if f.is_video]
    audio = [f for f in frames if not f.is_video]
    assert abs(len(video) - 30 * elapsed) <= 4  # paced, not as fast as possible
    assert len(audio) >= 30
    assert video[0].frame.width == 320
    # Wall-clock stamps advance with the media timeline.
    assert abs((video[-1].wallclock - video[0].wallclock) - (len(video) - 1) / 30) < 1e-3
