"""The program output: a frame synchronizer and switcher in front of the ladder encoder.

Ingests (RTMP, WHIP, SRT, a looped file, the test card) push decoded frames into a
`ProgramInput` at whatever rate and timing the network gives them. The `Program` runs its own
clock: every 1/fps it emits exactly one video frame and 1/fps worth of audio from the best input
that is fresh (primary, else backup, else the slate). The encoder therefore sees one continuous
timeline whatever happens upstream, so playlists keep advancing with no discontinuity, and a
publisher that drops out is replaced by the slate within `stall_timeout`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Literal

import av

from stream import telemetry
from stream.source import CapturedFrame, FrameSink
from stream.worker import Worker

log = logging.getLogger(__name__)

Role = Literal["primary", "backup"]
ROLES: tuple[Role, ...] = ("primary", "backup")
AUDIO_RATE, AUDIO_LAYOUT, AUDIO_FORMAT = 48000, "stereo", "s16"
# Audio queued beyond this is dropped: publisher and program clocks drift, and a deep queue
# would put the sound behind the picture.
MAX_AUDIO_QUEUE_SECONDS = 0.25
# Video frames kept to absorb network bursts (a jitter buffer of ~100 ms at 30 fps): every frame
# of a publisher at the program rate is shown even when frames arrive two at a time; beyond this
# depth (a faster publisher, or a backlog) the oldest frames are dropped.
VIDEO_JITTER_FRAMES = 3


class SlotBusy(RuntimeError):
    """The role already has a live publisher (HTTP 409 for WHIP)."""


@dataclass
class IngestStats:
    """What the operator console and metrics show about one publisher."""

    protocol: str
    role: Role
    remote: str
    connected_at: float = field(default_factory=time.time)
    video_codec: str | None = None
    audio_codec: str | None = None
    width: int = 0
    height: int = 0
    frames: int = 0
    keyframes: int = 0
    bytes: int = 0
    frames_dropped: int = 0
    last_frame_at: float | None = None
    last_keyframe_at: float | None = None
    keyframe_interval: float | None = None


class ProgramInput:
    """Where one publisher's decoded frames land. `push_*` may be called from any thread."""

    def __init__(self, program: Program, role: Role, protocol: str, remote: str) -> None:
        self._program = program
        self.stats = IngestStats(protocol, role, remote)
        self._lock = threading.Lock()
        self._video_queue: deque[av.VideoFrame] = deque()
        self._video: av.VideoFrame | None = None  # the frame on air, repeated while none is queued
        self._video_fresh_at = 0.0
        self._resampler = av.AudioResampler(format=AUDIO_FORMAT, layout=AUDIO_LAYOUT, rate=AUDIO_RATE)
        self._audio = av.AudioFifo()
        self._recent_frames: deque[float] = deque(maxlen=120)
        self.closed = False
        # Set by ingests that can ask their publisher for a keyframe (WHIP: PLI).
        self.request_keyframe: Callable[[], None] | None = None
        # Looked up once: frames and bytes are counted as they arrive.
        self._frames_counted = telemetry.counter("ingest_frames", role)
        self._bytes_counted = telemetry.counter("ingest_bytes", role)
        self._drops_counted = telemetry.counter("ingest_frames_dropped", role)

    @property
    def role(self) -> Role:
        return self.stats.role

    def push_video(self, frame: av.VideoFrame) -> None:
        now = time.monotonic()
        with self._lock:
            self._video_queue.append(frame)
            self._video_fresh_at = now
            self._recent_frames.append(now)
            stats = self.stats
            stats.frames += 1
            self._frames_counted.inc()
            stats.width, stats.height = frame.width, frame.height
            stats.last_frame_at = time.time()
            if frame.key_frame:
                if stats.last_keyframe_at is not None:
                    stats.keyframe_interval = stats.last_frame_at - stats.last_keyframe_at
                stats.keyframes += 1
                stats.last_keyframe_at = stats.last_frame_at

    def push_audio(self, frame: av.AudioFrame) -> None:
        frame.pts = None  # the FIFO re-times samples on the program clock
        with self._lock:
            for resampled in self._resampler.resample(frame):
                self._audio.write(resampled)
            excess = self._audio.samples - int(MAX_AUDIO_QUEUE_SECONDS * AUDIO_RATE)
            if excess > 0:
                self._audio.read(excess)

    def count_bytes(self, count: int) -> None:
        with self._lock:
            self.stats.bytes += count
        self._bytes_counted.inc(count)

    def set_codecs(self, video: str | None = None, audio: str | None = None) -> None:
        with self._lock:
            self.stats.video_codec = video or self.stats.video_codec
            self.stats.audio_codec = audio or self.stats.audio_codec

    @property
    def audio_queued(self) -> int:
        """Samples waiting for the program clock."""
        with self._lock:
            return self._audio.samples

    def fps(self) -> float:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._recent_frames if now - t <= 1.0]
        return float(len(recent))

    def is_fresh(self, now: float, stall_timeout: float) -> bool:
        return not self.closed and self._video_fresh_at > 0 and now - self._video_fresh_at <= stall_timeout

    def take(self, samples: int) -> tuple[av.VideoFrame | None, av.AudioFrame | None]:
        """The next frame for the program's tick (the last one again if none arrived) and audio."""
        with self._lock:
            while len(self._video_queue) > VIDEO_JITTER_FRAMES:
                self._video_queue.popleft()
                self.stats.frames_dropped += 1
                self._drops_counted.inc()
            if self._video_queue:
                self._video = self._video_queue.popleft()
            audio = self._audio.read(samples) if self._audio.samples >= samples else None
            return self._video, audio

    def release(self) -> None:
        """The publisher is gone; its slot is free for the next one."""
        self.closed = True
        self._program._release(self)


class Program(Worker):
    """Emits one continuous, paced stream of frames from the best available input."""

    def __init__(self, width: int, height: int, fps: int, sink: FrameSink, slate: Callable[[float], av.VideoFrame],
                 stall_timeout: float = 0.5) -> None:
        super().__init__("program")
        self.width, self.height, self.fps = width, height, fps
        self._sink = sink
        self._slate = slate
        self.stall_timeout = stall_timeout
        self._slots: dict[Role, ProgramInput | None] = {role: None for role in ROLES}
        self._slots_lock = threading.Lock()
        self.on_air: str = "slate"
        self.on_air_changed_at = time.time()
        self.on_switch: Callable[[str, str], None] | None = None
        for role in ROLES:
            telemetry.gauge("ingest_connected", role).set_function(lambda role=role: float(self._slot(role) is not None))
            telemetry.gauge("ingest_fps", role).set_function(lambda role=role: self._slot_value(role, ProgramInput.fps))
            telemetry.gauge("ingest_keyframe_interval", role).set_function(
                lambda role=role: self._slot_value(role, lambda i: i.stats.keyframe_interval or 0.0)
            )
        self._publish_on_air()

    def claim(self, role: Role, protocol: str, remote: str) -> ProgramInput:
        with self._slots_lock:
            current = self._slots[role]
            if current is not None and not current.closed:
                raise SlotBusy(
                    f"a {role} publisher ({current.stats.protocol} from {current.stats.remote}) is already live; "
                    "stop it first or publish as the other role"
                )
            program_input = ProgramInput(self, role, protocol, remote)
            self._slots[role] = program_input
        log.info("%s publisher connected over %s from %s", role, protocol, remote)
        telemetry.counter("ingest_connections", protocol, role).inc()
        return program_input

    def _slot(self, role: Role) -> ProgramInput | None:
        with self._slots_lock:
            current = self._slots[role]
        return current if current is not None and not current.closed else None

    def _slot_value(self, role: Role, read: Callable[[ProgramInput], float]) -> float:
        current = self._slot(role)
        return read(current) if current is not None else 0.0

    def inputs(self) -> list[ProgramInput]:
        with self._slots_lock:
            return [i for i in self._slots.values() if i is not None]

    def _release(self, program_input: ProgramInput) -> None:
        with self._slots_lock:
            if self._slots[program_input.role] is program_input:
                self._slots[program_input.role] = None
        log.info("%s publisher (%s) disconnected", program_input.role, program_input.stats.protocol)

    def _active(self, now: float) -> ProgramInput | None:
        with self._slots_lock:
            candidates = [self._slots[role] for role in ROLES]
        return next((i for i in candidates if i is not None and i.is_fresh(now, self.stall_timeout)), None)

    def run(self) -> None:
        start_wall, start_mono = time.time(), time.monotonic()
        samples_per_tick = AUDIO_RATE // self.fps
        silence = _silence(samples_per_tick)
        tick = 0
        while True:
            offset = tick / self.fps
            if self.stopping.wait(max(0.0, start_mono + offset - time.monotonic())):
                return
            wallclock = start_wall + offset
            active = self._active(time.monotonic())
            video, audio = active.take(samples_per_tick) if active else (None, None)
            if video is None:
                video = self._slate(wallclock)
            self._note_on_air(active.role if active else "slate", active)
            self._sink(CapturedFrame(video, wallclock))
            self._sink(CapturedFrame(audio if audio is not None else silence, wallclock))
            tick += 1

    def _note_on_air(self, source: str, active: ProgramInput | None) -> None:
        if source != self.on_air:
            if active is not None and active.request_keyframe is not None:
                # A publisher coming back on air: a fresh keyframe resynchronizes its decoder sooner.
                active.request_keyframe()
            previous, self.on_air = self.on_air, source
            self.on_air_changed_at = time.time()
            log.info("on air: %s (was %s)", source, previous)
            self._publish_on_air()
            if source == "slate":
                telemetry.counter("slate_switches").inc()
            if self.on_switch:
                self.on_switch(previous, source)


    def _publish_on_air(self) -> None:
        for source in (*ROLES, "slate"):
            telemetry.gauge("program_on_air", source).set(1.0 if source == self.on_air else 0.0)


def _silence(samples: int) -> av.AudioFrame:
    frame = av.AudioFrame(format=AUDIO_FORMAT, layout=AUDIO_LAYOUT, samples=samples)
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    frame.sample_rate = AUDIO_RATE
    return frame
