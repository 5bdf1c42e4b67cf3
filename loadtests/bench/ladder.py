"""The default 3-rendition ABR ladder from a 720p30 source: CPU side by side with the ffmpeg CLI, and
real-time encoder lag on the production path.

What it measures
    1. Side-by-side CPU (unpaced: as fast as possible, each side in its own child process, ABBA).
       Both sides generate DURATION seconds of the lavfi graph
       `testsrc2=size=1280x720:rate=30,format=yuv420p` + `sine=frequency=1000:sample_rate=48000`
       and encode it into the default ladder (720p 3 Mbit/s, 854x480 1.2 Mbit/s, 640x360
       0.6 Mbit/s, libx264, IDR every 2 s) plus AAC 128 kbit/s stereo once:

       * Launchkit: `python -m loadtests.bench.ladder --worker ladder` decodes the graph with PyAV
         and submits every frame to a real `stream.ladder.Ladder` (DEFAULT_LADDER, fps 30,
         keyframe_interval 2.0, AudioSettings()): one EncoderWorker thread per rendition plus the
         audio worker, scaling with the encoder's own bicubic swscale, publishing to a real
         `PacketBus` on an asyncio loop whose subscriber counts packets per rendition. The child
         waits until every video packet has been published.
         No frame may be dropped here (each rendition must emit exactly DURATION * 30 frames, as
         the CLI does), but the workers drop the oldest queued frame when their queue is full. The
         feeder therefore applies back-pressure: before `Ladder.submit` it waits, on the
         worker queue's own `not_full` condition (notified by every `get`), until every target
         queue has room. The production path (Ladder.submit, worker threads, per-thread scalers,
         bus hand-off) is exercised unchanged, the encoders still run in parallel up to
         `max_queued` frames apart, and the wait costs one condition wake-up per frame. Feeding
         each encoder directly would have measured a different threading model (no worker
         threads, no bus hand-off), so it was not chosen. Dropped-frame counters must stay 0.
       * ffmpeg CLI: one /usr/bin/ffmpeg command reading the same graph (`-t DURATION`), with
         `split=3` and `scale=W:H:flags=bicubic` (Launchkit's scaler flags) in a filter_complex,
         three `-map` outputs each with `loadtests.bench.encoder.ffmpeg_x264_args()` for that
         rendition's VideoSettings, and `-c:a aac -b:a 128k -ac 2` once, all to `-f null -`.

       A side's CPU time is the RUSAGE_CHILDREN delta around its child (Python start-up and
       imports count against Launchkit and are also reported on their own). Frame counts per
       rendition must match on both sides. Verdict: median of per-run ratios Launchkit / ffmpeg
       <= 1.1.

    2. Real-time lag and CPU (paced, production path). A child runs the whole
       `stream.pipeline.Pipeline` (default settings: Program at 30 fps → Ladder → PacketBus →
       HlsPackager) on an asyncio loop with `TestCard(TestCardSettings())` added as the primary
       local source, for DURATION seconds. Every video frame's encoder lag (time.time() minus the
       program frame's wallclock, taken on the worker thread right after `encode`, which is what
       `launchkit_encoder_lag_seconds` holds for the last frame only) is recorded by wrapping each
       EncoderWorker's encoder; the lag at bus delivery on the loop (what the packager sees) is
       recorded by a bus subscriber. Dropped frames come from
       `launchkit_encoder_frames_dropped_total`; CPU is the child's own getrusage over the run
       (start to stop), split per thread from /proc/self/task. This CPU includes the test card
       (lavfi testsrc2 + sine + text overlay), the program thread, the HLS packager and the
       event loop: the whole process, not the encoders alone. Verdicts (medians over runs):
       worst rendition's lag p99 < 100 ms, 0 frames dropped, CPU <= 1.0 core.

How to run (from the repository root)
    .venv/bin/python -m loadtests.bench.ladder [--duration 20] [--runs 3] [--json PATH]

Exit status: 0 if every target holds, 1 if one is missed, 2 if a measurement is invalid (wrong
frame count, dropped frame in the unpaced mode, a child failed or timed out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
from prometheus_client import REGISTRY

import launchkit.metrics  # noqa: F401  (installs the Prometheus telemetry the dropped-frame count is read from)
from loadtests.bench.encoder import (
    FFMPEG,
    REPO_ROOT,
    TARGET_RATIO,
    InvalidMeasurement,
    _children_cpu_seconds,
    _own_cpu_seconds,
    _row,
    ffmpeg_x264_args,
    machine,
    measure,
    positive_int,
    x264_banner,
    x264_option_string,
    x264_version,
)
from stream.bus import PacketBus
from stream.encoder import AudioSettings, VideoEncoder, VideoSettings
from stream.ladder import DEFAULT_LADDER, EncoderWorker, Ladder
from stream.source import CapturedFrame

FPS = 30
KEYFRAME_INTERVAL = 2.0
AUDIO = AudioSettings()
VIDEO_SETTINGS = tuple(
    VideoSettings(r.name, r.width, r.height, FPS, r.bitrate, KEYFRAME_INTERVAL) for r in DEFAULT_LADDER
)
SOURCE = VIDEO_SETTINGS[0]
VIDEO_GRAPH = f"testsrc2=size={SOURCE.width}x{SOURCE.height}:rate={FPS},format=yuv420p"
AUDIO_GRAPH = f"sine=frequency=1000:sample_rate={AUDIO.sample_rate}"
GRAPH = f"{VIDEO_GRAPH}[out0];{AUDIO_GRAPH}[out1]"
SCALER_FLAGS = "bicubic"  # VideoEncoder reformats with interpolation="BICUBIC"
TARGET_LAG_P99_S = 0.100
TARGET_CORES = 1.0
MAX_RUNS, MAX_DURATION = 20, 600  # every loop below is bounded by these
NATIVE = "native threads (x264, swscale, lavfi)"
EXITED = "not attributed (exited threads e.g. the lavfi reader, shutdown, tick rounding)"


# --- Per-thread CPU (both children) --------------------------------------------------------------


def thread_cpu_seconds() -> dict[int, tuple[str, float]]:
    """Name and CPU seconds of each live thread of this process, by native thread id. Threads not
    started by Python (x264's slice/lookahead threads, swscale and lavfi threads) are named NATIVE."""
    names = {thread.native_id: thread.name for thread in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    result = {}
    for entry in os.scandir("/proc/self/task"):
        try:
            fields = Path(entry.path, "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the thread exited meanwhile
        tid = int(entry.name)
        result[tid] = (names.get(tid, NATIVE), (int(fields[11]) + int(fields[12])) / ticks)  # utime + stime
    return result


def thread_groups(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                  total: float) -> dict[str, float]:
    """CPU seconds per thread name between two snapshots; `total` is the process's own CPU delta."""
    groups: defaultdict[str, float] = defaultdict(float)
    for tid, (name, cpu) in after.items():
        groups[name] += cpu - before.get(tid, (name, 0.0))[1]
    groups[EXITED] = total - sum(groups.values())
    return {name: round(cpu, 3) for name, cpu in sorted(groups.items(), key=lambda item: -item[1])}


# --- 1. Launchkit side of the side-by-side (child process) ---------------------------------------


def wait_for_room(worker: EncoderWorker, deadline: float) -> None:
    """Back-pressure: block until `worker` can take one more item without dropping one.

    Only this thread puts and the worker only removes, so room cannot vanish before the submit.
    """
    pending = worker._queue  # the worker's bounded queue; its `get` notifies `not_full`
    with pending.not_full:
        while len(pending.queue) >= pending.maxsize:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{worker.name} made no room before the deadline")
            pending.not_full.wait(remaining)


def feed_ladder(ladder: Ladder, duration: int, deadline: float) -> dict[str, int]:
    """Runs on a feeder thread: decode the lavfi graph and submit every frame to the ladder."""
    video_target, audio_target = duration * FPS, duration * AUDIO.sample_rate
    video_in = audio_frames_in = audio_samples_in = 0
    max_frames = 4 * (video_target + audio_target // 256 + 10)  # hard bound on the loop
    with av.open(GRAPH, format="lavfi") as container:
        for count, frame in enumerate(container.decode(*container.streams)):
            if count >= max_frames or time.monotonic() > deadline:
                raise TimeoutError("feeder did not reach its frame counts")
            is_video = isinstance(frame, av.VideoFrame)
            if (video_in >= video_target if is_video else audio_samples_in >= audio_target):
                if video_in >= video_target and audio_samples_in >= audio_target:
                    break
                continue
            for worker in (ladder.workers if is_video else [ladder.all_workers[-1]]):
                wait_for_room(worker, deadline)
            ladder.submit(CapturedFrame(frame, float(frame.pts * frame.time_base)))
            if is_video:
                video_in += 1
            else:
                audio_frames_in += 1
                audio_samples_in += frame.samples
    return {"video_frames_in": video_in, "audio_frames_in": audio_frames_in, "audio_samples_in": audio_samples_in}


def dropped_frames(rendition: str) -> float:
    return REGISTRY.get_sample_value("launchkit_encoder_frames_dropped_total", {"rendition": rendition}) or 0.0


async def ladder_unpaced(duration: int) -> dict[str, Any]:
    bus = PacketBus(asyncio.get_running_loop())
    ladder = Ladder(DEFAULT_LADDER, FPS, KEYFRAME_INTERVAL, AUDIO, bus)
    expected = duration * FPS
    published: Counter[str] = Counter()
    all_video = asyncio.Event()

    def on_packet(packet: Any) -> None:
        published[packet.rendition] += 1
        if packet.kind == "video" and all(published[s.rendition] >= expected for s in VIDEO_SETTINGS):
            all_video.set()

    bus.subscribe(on_packet)
    deadline = time.monotonic() + 30.0 + 10.0 * duration
    threads_before, cpu_before, wall_before = thread_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
    for worker in ladder.all_workers:
        worker.start()
    try:
        fed = await asyncio.to_thread(feed_ladder, ladder, duration, deadline)
        await asyncio.wait_for(all_video.wait(), max(0.1, deadline - time.monotonic()))
        # Audio has no count to wait for (AAC holds one frame back): wait until its queue is empty
        # and nothing more was published for 0.2 s (bounded).
        audio_worker, stable_since, last = ladder.all_workers[-1], time.monotonic(), -1
        for _ in range(200):
            if published["audio"] != last or not audio_worker._queue.empty():
                last, stable_since = published["audio"], time.monotonic()
            elif time.monotonic() - stable_since >= 0.2:
                break
            await asyncio.sleep(0.02)
        wall_s, cpu_s = time.perf_counter() - wall_before, _own_cpu_seconds() - cpu_before
        threads = thread_groups(threads_before, thread_cpu_seconds(), cpu_s)
    finally:
        for worker in ladder.all_workers:
            worker.request_stop()
        for worker in ladder.all_workers:
            worker.join(2.0)
    return {
        **fed,
        "packets_out": dict(published),
        "frames_encoded": {w.rendition: w.frames_encoded for w in ladder.workers},
        "dropped": {s.rendition: dropped_frames(s.rendition) for s in VIDEO_SETTINGS},
        "encode_cpu_s": cpu_s, "encode_wall_s": wall_s, "threads_cpu_s": threads,
    }


# --- 2. Real-time child: the whole pipeline, paced -----------------------------------------------


class LagRecorder:
    """Wraps a worker's encoder: records, per frame, what EncoderWorker stores as `lag`."""

    def __init__(self, encoder: VideoEncoder) -> None:
        self.encoder, self.settings = encoder, encoder.settings
        self.lags: list[float] = []  # wallclock → encoded: the lag
        self.waits: list[float] = []  # wallclock → encode starts (program thread lateness + queue wait)
        self.encodes: list[float] = []  # encode starts → encoded (scale + x264 + packet copies)

    def encode(self, captured: CapturedFrame, frame_seconds: float) -> list:
        started = time.time()
        packets = self.encoder.encode(captured, frame_seconds)
        done = time.time()
        self.lags.append(max(0.0, done - captured.wallclock))
        self.waits.append(started - captured.wallclock)
        self.encodes.append(done - started)
        return packets


async def pipeline_paced(duration: int) -> dict[str, Any]:
    from stream.pipeline import Pipeline, PipelineSettings
    from stream.source.testcard import TestCard, TestCardSettings

    settings = PipelineSettings()
    pipeline = Pipeline(settings, asyncio.get_running_loop())
    recorders = {}
    for worker in pipeline.ladder.workers:
        recorders[worker.rendition] = worker.encoder = LagRecorder(worker.encoder)
    bus_lags: defaultdict[str, list[float]] = defaultdict(list)
    stopping = threading.Event()

    def on_packet(packet: Any) -> None:
        # Pipeline.stop() joins the threads on the loop's thread (up to the workers' 0.1 s poll), so
        # packets delivered after it are late because of the benchmark's shutdown: not counted.
        if packet.kind == "video" and not stopping.is_set():
            bus_lags[packet.rendition].append(time.time() - packet.wallclock)

    subscription = pipeline.bus.subscribe(on_packet)
    pipeline.add_local_source(TestCard(TestCardSettings(fps=settings.fps)))
    threads_before, cpu_before, wall_before = thread_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
    pipeline.start()
    try:
        await asyncio.sleep(duration)
        threads_after = thread_cpu_seconds()  # before the threads exit and their /proc entries go
        running_s = time.perf_counter() - wall_before
    finally:
        stopping.set()
        pipeline.stop(timeout=2.0)
    wall_s, cpu_s = time.perf_counter() - wall_before, _own_cpu_seconds() - cpu_before
    await asyncio.sleep(0.2)  # deliver what the workers published before stopping
    subscription.close()
    return {
        "wall_s": wall_s, "cpu_s": cpu_s,
        "threads_cpu_s": thread_groups(threads_before, threads_after, cpu_s),
        "program_ticks_expected": math.floor(running_s * settings.fps) + 1,
        "unencoded_at_stop": {w.rendition: w._queue.qsize() for w in pipeline.ladder.workers},
        "frames_encoded": {name: len(r.lags) for name, r in recorders.items()},
        "dropped": {name: dropped_frames(name) for name in recorders},
        "encoder_lags": {name: r.lags for name, r in recorders.items()},
        "waits": {name: r.waits for name, r in recorders.items()},
        "encodes": {name: r.encodes for name, r in recorders.items()},
        "bus_lags": dict(bus_lags),
    }


def child_main(kind: str, duration: int) -> dict[str, Any]:
    """Runs in a child; what it returns is printed as one JSON line for the parent."""
    startup_cpu_s = _own_cpu_seconds()  # interpreter start-up and imports
    result = asyncio.run(ladder_unpaced(duration) if kind == "ladder" else pipeline_paced(duration))
    return {"startup_cpu_s": startup_cpu_s, **result}


# --- 1. ffmpeg CLI side --------------------------------------------------------------------------


def filter_complex() -> tuple[str, list[str]]:
    """`split` into one branch per rendition, bicubic `scale` where the size differs."""
    count = len(VIDEO_SETTINGS)
    parts, labels = [f"[0:v]split={count}" + "".join(f"[v{i}]" for i in range(count))], []
    for index, settings in enumerate(VIDEO_SETTINGS):
        if (settings.width, settings.height) == (SOURCE.width, SOURCE.height):
            labels.append(f"[v{index}]")
        else:
            parts.append(f"[v{index}]scale={settings.width}:{settings.height}:flags={SCALER_FLAGS}[s{index}]")
            labels.append(f"[s{index}]")
    return ";".join(parts), labels


def ffmpeg_ladder_command(duration: int) -> list[str]:
    graph, labels = filter_complex()
    # -loglevel verbose: the final per-output-stream "N frames encoded" lines (stderr).
    command = [FFMPEG, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "verbose",
               "-t", str(duration), "-f", "lavfi", "-i", GRAPH, "-filter_complex", graph]
    for label, settings in zip(labels, VIDEO_SETTINGS, strict=True):
        command += ["-map", label, *ffmpeg_x264_args(settings), "-f", "null", "-"]
    return [*command, "-map", "0:a", "-c:a", "aac", "-b:a", str(AUDIO.bitrate), "-ac", str(AUDIO.channels),
            "-ar", str(AUDIO.sample_rate), "-f", "null", "-"]


FINAL_STATS = re.compile(r"Output stream #(\d+):\d+ \((video|audio)\): (\d+) frames encoded.*?; (\d+) packets muxed")


def ffmpeg_counts(log: str) -> dict[str, int]:
    """Packets muxed per output (outputs are the renditions in ladder order, then audio)."""
    names = [s.rendition for s in VIDEO_SETTINGS] + ["audio"]
    counts = {names[int(output)]: int(packets) for output, _, _, packets in FINAL_STATS.findall(log)}
    if set(counts) != set(names):
        raise InvalidMeasurement(f"no per-output counts in the ffmpeg log: {log[-1500:]!r}")
    return counts


def measure_with_log(command: list[str], timeout_s: float) -> tuple[float, float, str]:
    """Like encoder.measure, but returns stderr (where ffmpeg writes its final statistics)."""
    cpu_before, wall_before = _children_cpu_seconds(), time.perf_counter()
    try:  # subprocess.run kills the child on timeout
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as error:
        raise InvalidMeasurement(f"timed out after {timeout_s:.0f} s: {command}") from error
    wall_s, cpu_s = time.perf_counter() - wall_before, _children_cpu_seconds() - cpu_before
    if done.returncode != 0:
        raise InvalidMeasurement(f"exit status {done.returncode} from {command}: {done.stderr[-2000:]}")
    return cpu_s, wall_s, done.stderr


# --- Parent: runs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SideRun:
    cpu_s: float
    wall_s: float
    packets: dict[str, int]


@dataclass(frozen=True, slots=True)
class PairRun:
    index: int
    first: str
    launchkit: SideRun
    launchkit_startup_cpu_s: float
    launchkit_threads_cpu_s: dict[str, float]
    ffmpeg: SideRun

    @property
    def ratio(self) -> float:
        return self.launchkit.cpu_s / self.ffmpeg.cpu_s

    @property
    def ratio_without_startup(self) -> float:
        return (self.launchkit.cpu_s - self.launchkit_startup_cpu_s) / self.ffmpeg.cpu_s


def child_command(kind: str, duration: int) -> list[str]:
    return [sys.executable, "-m", "loadtests.bench.ladder", "--worker", kind, "--duration", str(duration)]


def run_child(kind: str, duration: int, timeout_s: float) -> tuple[float, float, dict[str, Any]]:
    cpu_s, wall_s, stdout = measure(child_command(kind, duration), timeout_s)
    return cpu_s, wall_s, json.loads(stdout.strip().splitlines()[-1])


def check_video_counts(side: str, packets: dict[str, int], expected: int) -> None:
    for settings in VIDEO_SETTINGS:
        if packets.get(settings.rendition) != expected:
            raise InvalidMeasurement(f"{side}: {settings.rendition} emitted {packets.get(settings.rendition)} "
                                     f"frames, expected {expected}")


def run_launchkit(duration: int, timeout_s: float) -> tuple[SideRun, float, dict[str, float]]:
    cpu_s, wall_s, result = run_child("ladder", duration, timeout_s)
    expected = duration * FPS
    if result["video_frames_in"] != expected:
        raise InvalidMeasurement(f"Launchkit fed {result['video_frames_in']} frames, expected {expected}")
    if any(result["dropped"].values()):
        raise InvalidMeasurement(f"Launchkit dropped frames in the unpaced mode: {result['dropped']}")
    check_video_counts("Launchkit", result["packets_out"], expected)
    return SideRun(cpu_s, wall_s, result["packets_out"]), result["startup_cpu_s"], result["threads_cpu_s"]


def run_ffmpeg(duration: int, timeout_s: float) -> SideRun:
    cpu_s, wall_s, log = measure_with_log(ffmpeg_ladder_command(duration), timeout_s)
    packets = ffmpeg_counts(log)
    check_video_counts("ffmpeg CLI", packets, duration * FPS)
    return SideRun(cpu_s, wall_s, packets)


def run_pair(index: int, duration: int) -> PairRun:
    timeout_s = 60.0 + 15.0 * duration  # both sides run faster than real time even on a busy box
    if index % 2 == 0:  # ABBA: a drifting load does not favour one side
        launchkit, startup, threads = run_launchkit(duration, timeout_s)
        ffmpeg = run_ffmpeg(duration, timeout_s)
    else:
        ffmpeg = run_ffmpeg(duration, timeout_s)
        launchkit, startup, threads = run_launchkit(duration, timeout_s)
    audio_gap = abs(launchkit.packets.get("audio", 0) - ffmpeg.packets["audio"])
    if audio_gap > 3:  # AAC priming/flush differ by a packet or two; more means lost audio
        raise InvalidMeasurement(f"audio packets differ: Launchkit {launchkit.packets}, ffmpeg {ffmpeg.packets}")
    return PairRun(index + 1, "Launchkit" if index % 2 == 0 else "ffmpeg", launchkit, startup, threads, ffmpeg)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def lag_stats(lags: list[float]) -> dict[str, float]:
    if not lags:
        return {"frames": 0, "p50": math.inf, "p99": math.inf, "max": math.inf}
    return {"frames": len(lags), "p50": percentile(lags, 0.50), "p99": percentile(lags, 0.99), "max": max(lags)}


def run_realtime(index: int, duration: int) -> dict[str, Any]:
    cpu_s, wall_s, result = run_child("realtime", duration, duration + 90.0)
    renditions = {}
    for settings in VIDEO_SETTINGS:
        name = settings.rendition
        renditions[name] = {
            "encoder_lag": lag_stats(result["encoder_lags"].get(name, [])),
            "bus_lag": lag_stats(result["bus_lags"].get(name, [])),
            "wait_before_encode": lag_stats(result["waits"].get(name, [])),
            "encode_time": lag_stats(result["encodes"].get(name, [])),
            "frames_encoded": result["frames_encoded"].get(name, 0),
            "dropped": result["dropped"].get(name, 0.0),
            "queued_at_stop": result["unencoded_at_stop"].get(name, 0),
        }
    return {
        "index": index + 1,
        "child_cpu_s_total": cpu_s, "child_wall_s_total": wall_s, "startup_cpu_s": result["startup_cpu_s"],
        "cpu_s": result["cpu_s"], "wall_s": result["wall_s"], "cores": result["cpu_s"] / result["wall_s"],
        "program_ticks_expected": result["program_ticks_expected"],
        "threads_cpu_s": result["threads_cpu_s"],
        "renditions": renditions,
        "worst_p99": max(r["encoder_lag"]["p99"] for r in renditions.values()),
        "dropped_total": sum(r["dropped"] for r in renditions.values()),
    }


# --- Versions and settings check ---------------------------------------------------------------------


def launchkit_banners() -> dict[str, str]:
    banners = {}
    with av.open(VIDEO_GRAPH, format="lavfi") as container:
        frame = next(container.decode(video=0))
    for settings in VIDEO_SETTINGS:
        packets = VideoEncoder(settings).encode(CapturedFrame(frame, 0.0), 0.0)
        banners[settings.rendition] = x264_banner(b"".join(packet.data for packet in packets))
    return banners


def ffmpeg_banners() -> dict[str, str]:
    banners = {}
    for settings in VIDEO_SETTINGS:
        command = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", VIDEO_GRAPH,
                   "-frames:v", "1", "-vf", f"scale={settings.width}:{settings.height}:flags={SCALER_FLAGS}",
                   *ffmpeg_x264_args(settings), "-f", "h264", "-"]
        banners[settings.rendition] = x264_banner(subprocess.run(command, capture_output=True, timeout=60,
                                                                 check=True).stdout)
    return banners


def versions() -> dict[str, Any]:
    ffmpeg_version = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True, timeout=30, check=True)
    return {
        "ffmpeg_cli": ffmpeg_version.stdout.splitlines()[0],
        "pyav": av.__version__,
        "pyav_libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
        "x264_banners_launchkit": launchkit_banners(),
        "x264_banners_ffmpeg_cli": ffmpeg_banners(),
    }


def machine_info() -> dict[str, Any]:
    return {**machine(), "nproc": os.cpu_count(), "loadavg_at_start": os.getloadavg()}


# --- Report ------------------------------------------------------------------------------------------


def report(args: argparse.Namespace, pairs: list[PairRun], realtime: list[dict[str, Any]],
           info: dict[str, Any]) -> dict[str, Any]:
    duration = args.duration
    ratio = statistics.median(pair.ratio for pair in pairs)
    median_p99 = statistics.median(run["worst_p99"] for run in realtime)
    median_cores = statistics.median(run["cores"] for run in realtime)
    median_dropped = statistics.median(run["dropped_total"] for run in realtime)
    verdicts = {
        "cpu_ratio": ratio <= TARGET_RATIO,
        "lag_p99": median_p99 < TARGET_LAG_P99_S,
        "real_time_no_drops": median_dropped == 0,
        "cores": median_cores <= TARGET_CORES,
    }
    return {
        "duration_s": duration,
        "frames_per_rendition": duration * FPS,
        "source": GRAPH,
        "ladder": [asdict(s) for s in VIDEO_SETTINGS],
        "audio": asdict(AUDIO),
        "commands": {
            "benchmark": " ".join([".venv/bin/python", "-m", "loadtests.bench.ladder", "--runs", str(args.runs),
                                   "--duration", str(duration)] + (["--json", str(args.json)] if args.json else [])),
            "launchkit_child": " ".join(child_command("ladder", duration)),
            "realtime_child": " ".join(child_command("realtime", duration)),
            "ffmpeg": ffmpeg_ladder_command(duration),
        },
        "side_by_side": [
            asdict(pair) | {"ratio": pair.ratio, "ratio_without_startup": pair.ratio_without_startup} for pair in pairs
        ],
        "side_by_side_median": {
            "launchkit_cpu_s_per_video_s": statistics.median(p.launchkit.cpu_s / duration for p in pairs),
            "ffmpeg_cpu_s_per_video_s": statistics.median(p.ffmpeg.cpu_s / duration for p in pairs),
            "ratio": ratio,
            "ratio_without_startup": statistics.median(p.ratio_without_startup for p in pairs),
        },
        "realtime": realtime,
        "realtime_median": {"worst_p99_s": median_p99, "cores": median_cores, "dropped_total": median_dropped},
        "targets": {"cpu_ratio": TARGET_RATIO, "lag_p99_s": TARGET_LAG_P99_S, "cores": TARGET_CORES},
        "verdicts": verdicts,
        "passed": all(verdicts.values()),
        **info,
        "loadavg_at_end": os.getloadavg(),
    }


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _loadavg(values: list[float] | tuple[float, ...]) -> str:
    return " / ".join(f"{value:.2f}" for value in values)


def markdown(result: dict[str, Any]) -> str:
    duration, names = result["duration_s"], [s["rendition"] for s in result["ladder"]]
    verdicts, median = result["verdicts"], result["side_by_side_median"]
    ladder_text = ", ".join(f"{s['rendition']} {s['width']}x{s['height']} {s['bitrate'] // 1000} kbit/s"
                            for s in result["ladder"])
    lines = [
        f"## ABR ladder CPU: Launchkit vs ffmpeg CLI (720p30 source → {ladder_text} + AAC "
        f"{result['audio']['bitrate'] // 1000} kbit/s; {duration} s = {result['frames_per_rendition']} frames "
        f"per rendition per side, {len(result['side_by_side'])} runs, unpaced)",
        "",
        _row(["run", "first", "Launchkit CPU s", "of which Python start-up", "Launchkit wall s", "ffmpeg CPU s",
              "ffmpeg wall s", "Launchkit CPU s / video s", "ffmpeg CPU s / video s", "ratio",
              "video frames per rendition (LK = ff)", "audio packets LK / ff"]),
        _row(["---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---", "---"]),
    ]
    for pair in result["side_by_side"]:
        lk, ff = pair["launchkit"], pair["ffmpeg"]
        frames = " / ".join(str(lk["packets"][name]) for name in names)
        lines.append(_row([
            str(pair["index"]), pair["first"], f"{lk['cpu_s']:.2f}", f"{pair['launchkit_startup_cpu_s']:.2f}",
            f"{lk['wall_s']:.2f}", f"{ff['cpu_s']:.2f}", f"{ff['wall_s']:.2f}", f"{lk['cpu_s'] / duration:.3f}",
            f"{ff['cpu_s'] / duration:.3f}", f"{pair['ratio']:.3f}", frames,
            f"{lk['packets'].get('audio', 0)} / {ff['packets']['audio']}",
        ]))
    lines += [
        _row(["median", "", "", "", "", "", "", f"{median['launchkit_cpu_s_per_video_s']:.3f}",
              f"{median['ffmpeg_cpu_s_per_video_s']:.3f}", f"**{median['ratio']:.3f}**", "", ""]),
        "",
        f"- Verdict (CPU): median ratio {median['ratio']:.3f} {'<=' if verdicts['cpu_ratio'] else '>'} target "
        f"{result['targets']['cpu_ratio']} → **{_verdict(verdicts['cpu_ratio'])}** "
        f"(without Python start-up: {median['ratio_without_startup']:.3f}).",
        "- Launchkit CPU by thread (run 1, encode phase, s): " + ", ".join(
            f"{name} {cpu:.2f}" for name, cpu in result["side_by_side"][0]["launchkit_threads_cpu_s"].items()),
        "",
        f"## ABR ladder in real time: Pipeline + TestCard at {FPS} fps ({duration} s per run, "
        f"{len(result['realtime'])} runs, paced)",
        "",
        _row(["run", "rendition", "frames encoded / program ticks", "dropped", "queued at stop", "encoder lag p50 ms",
              "**p99 ms**", "max ms", "wait before encode p99 ms", "encode time p99 ms", "lag at bus p50 ms", "p99 ms",
              "max ms"]),
        _row(["---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]),
    ]
    for run in result["realtime"]:
        for name in names:
            r = run["renditions"][name]
            enc, bus, wait, encode = r["encoder_lag"], r["bus_lag"], r["wait_before_encode"], r["encode_time"]
            lines.append(_row([
                str(run["index"]), name, f"{r['frames_encoded']} / {run['program_ticks_expected']}",
                f"{r['dropped']:.0f}", str(r["queued_at_stop"]), _ms(enc["p50"]), f"**{_ms(enc['p99'])}**",
                _ms(enc["max"]), _ms(wait["p99"]), _ms(encode["p99"]),
                _ms(bus["p50"]), _ms(bus["p99"]), _ms(bus["max"]),
            ]))
    lines += [
        "",
        _row(["run", "CPU s (run window)", "wall s", "**cores**", "worst p99 ms", "dropped",
              "child CPU s incl. start-up", "CPU by thread (s)"]),
        _row(["---:", "---:", "---:", "---:", "---:", "---:", "---:", "---"]),
    ]
    for run in result["realtime"]:
        lines.append(_row([
            str(run["index"]), f"{run['cpu_s']:.2f}", f"{run['wall_s']:.2f}", f"**{run['cores']:.3f}**",
            _ms(run["worst_p99"]), f"{run['dropped_total']:.0f}", f"{run['child_cpu_s_total']:.2f}",
            ", ".join(f"{name} {cpu:.2f}" for name, cpu in run["threads_cpu_s"].items() if abs(cpu) >= 0.005),
        ]))
    rt = result["realtime_median"]
    lines += [
        "",
        f"- Verdict (lag): median over runs of the worst rendition's encoder-lag p99 = {_ms(rt['worst_p99_s'])} ms "
        f"{'<' if verdicts['lag_p99'] else '>='} {_ms(result['targets']['lag_p99_s'])} ms → "
        f"**{_verdict(verdicts['lag_p99'])}**.",
        f"- Verdict (real time): median frames dropped per run = {rt['dropped_total']:.0f} → "
        f"**{_verdict(verdicts['real_time_no_drops'])}**.",
        f"- Verdict (CPU): median {rt['cores']:.3f} cores {'<=' if verdicts['cores'] else '>'} "
        f"{result['targets']['cores']} → **{_verdict(verdicts['cores'])}**. This is the whole process: test card "
        "(lavfi testsrc2 + sine + text overlay), program thread, 3 video + 1 audio encoder workers, bus, HLS "
        "packager and event loop.",
        "- Encoder lag = time.time() on the worker thread right after `encode` minus the program frame's wallclock "
        "(the value `launchkit_encoder_lag_seconds` shows for the last frame), every frame; lag at bus = the same "
        "at delivery on the event loop (what the HLS packager sees), excluding deliveries after `Pipeline.stop()`, "
        "which joins the threads on the loop's thread and so delays the last packets by up to ~0.1 s.",
        "",
        f"**Overall: {_verdict(result['passed'])}**",
        "",
        f"- Benchmark: `{result['commands']['benchmark']}`",
        f"- Launchkit child (side by side): `{result['commands']['launchkit_child']}`; real-time child: "
        f"`{result['commands']['realtime_child']}`",
        "- ffmpeg command: `" + " ".join(_quote(arg) for arg in result["commands"]["ffmpeg"]) + "`",
        f"- Source (both sides): `{result['source']}`; video frame counts verified equal per rendition.",
        f"- ffmpeg CLI: {result['ffmpeg_cli']} (Debian libx264); PyAV {result['pyav']} "
        f"(bundled libavcodec {result['pyav_libavcodec']} and libx264).",
        *banner_lines(result["x264_banners_launchkit"], result["x264_banners_ffmpeg_cli"]),
        f"- Machine: nproc {result['nproc']} ({result['cpus_usable']} usable), {result['cpu_model']}; load average "
        f"(1/5/15 min) {_loadavg(result['loadavg_at_start'])} at start, {_loadavg(result['loadavg_at_end'])} at end.",
    ]
    return "\n".join(lines)


def _quote(arg: str) -> str:
    return f'"{arg}"' if re.search(r"[\s;\[\]()*,]", arg) else arg


def banner_lines(launchkit: dict[str, str], ffmpeg: dict[str, str]) -> list[str]:
    first = next(iter(launchkit))
    lines = [f"- x264 build: Launchkit (PyAV) `{x264_version(launchkit[first])}`, "
             f"ffmpeg CLI (Debian) `{x264_version(ffmpeg[first])}`."]
    for name in launchkit:
        ours, theirs = x264_option_string(launchkit[name]), x264_option_string(ffmpeg[name])
        if ours == theirs:
            lines.append(f"- {name}: x264 option strings identical: `{ours}`")
        else:
            lines += [f"- {name}: **x264 option strings differ:**", f"  - Launchkit: `{ours}`",
                      f"  - ffmpeg CLI: `{theirs}`"]
    return lines


# --- CLI ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=positive_int, default=20,
                        help="seconds of video per side per run, and of each real-time run "
                             f"(default 20, max {MAX_DURATION})")
    parser.add_argument("--runs", type=positive_int, default=3,
                        help=f"side-by-side pairs (ABBA) and real-time runs (default 3, max {MAX_RUNS})")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this path")
    # Internal: the parent starts this module again as a child to measure one Launchkit run.
    parser.add_argument("--worker", choices=("ladder", "realtime"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration > MAX_DURATION or args.runs > MAX_RUNS:
        parser.error(f"--duration <= {MAX_DURATION} and --runs <= {MAX_RUNS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(child_main(args.worker, args.duration)))
        return 0
    try:
        info = machine_info()
        info |= versions()
        pairs = [run_pair(index, args.duration) for index in range(args.runs)]
        realtime = [run_realtime(index, args.duration) for index in range(args.runs)]
    except (InvalidMeasurement, subprocess.SubprocessError, json.JSONDecodeError) as error:
        print(f"INVALID MEASUREMENT: {error}", file=sys.stderr)
        return 2
    result = report(args, pairs, realtime, info)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
