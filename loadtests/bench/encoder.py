"""Side-by-side CPU benchmark of Launchkit's H.264 encoder against the ffmpeg CLI, 720p30.

What it measures
    The CPU time (user + sys) per second of video needed to generate and encode DURATION seconds
    of FFmpeg's lavfi `testsrc2=size=1280x720:rate=30,format=yuv420p` with libx264, decoded as fast
    as possible (no real-time pacing), on each side in its own child process:

    * Launchkit: `python -m loadtests.bench.encoder --worker` decodes the graph with PyAV
      (`av.open(graph, format="lavfi")`) and feeds every frame to `stream.encoder.VideoEncoder`
      as the product does: a `CapturedFrame` whose wallclock is the frame time in seconds.
    * ffmpeg CLI: /usr/bin/ffmpeg encodes the same graph to `-f null -` with the libx264 options of
      `stream.encoder.x264_options()` passed verbatim, `-g`/`-bf 0`/`-b:v` from the same
      `VideoSettings`, and IDRs forced on the same keyframe-interval boundaries.

    A side's CPU time is the RUSAGE_CHILDREN delta around its child, so the Python interpreter's
    start-up and imports count against Launchkit (they are also reported on their own). The sides
    alternate in ABBA order for RUNS runs; both must encode exactly DURATION * 30 frames. The verdict
    is the median of the per-run ratios Launchkit / ffmpeg against a target of 1.1.

    Both sides use libx264, but not the same build: the ffmpeg CLI links Debian's libx264 while PyAV
    bundles its own. The output names both versions and compares the option strings the two x264
    builds write into the stream.

How to run (from the repository root)
    .venv/bin/python -m loadtests.bench.encoder [--duration 20] [--runs 5] [--json PATH]

Exit status: 0 if the median ratio is <= 1.1, 1 if above, 2 if a measurement is invalid (wrong
frame count, a child failed or timed out).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av

from stream.encoder import VideoEncoder, VideoSettings, x264_options
from stream.source import CapturedFrame

FFMPEG = "/usr/bin/ffmpeg"
TARGET_RATIO = 1.1
# The product's 720p rendition at its default bitrate (3000 kbit/s) and segment duration (2 s).
SETTINGS = VideoSettings(rendition="720p", width=1280, height=720, fps=30, bitrate=3_000_000, keyframe_interval=2.0)
GRAPH = f"testsrc2=size={SETTINGS.width}x{SETTINGS.height}:rate={SETTINGS.fps},format=yuv420p"
REPO_ROOT = Path(__file__).resolve().parents[2]
# x264 writes its version and full option string as SEI text in the first access unit.
X264_BANNER = re.compile(rb"x264 - core [\x20-\x7e]*")


class InvalidMeasurement(RuntimeError):
    """A run that cannot be compared: wrong frame count, failed or hung child."""


@dataclass(frozen=True, slots=True)
class Side:
    cpu_s: float
    wall_s: float
    frames: int


@dataclass(frozen=True, slots=True)
class Run:
    index: int
    first: str
    launchkit: Side
    launchkit_startup_cpu_s: float
    ffmpeg: Side

    @property
    def ratio(self) -> float:
        return self.launchkit.cpu_s / self.ffmpeg.cpu_s

    @property
    def ratio_without_startup(self) -> float:
        return (self.launchkit.cpu_s - self.launchkit_startup_cpu_s) / self.ffmpeg.cpu_s


# --- Launchkit side (child process) ------------------------------------------------------------


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def encode_with_launchkit(duration: int) -> dict[str, Any]:
    """Runs in the worker child; what it returns is printed as one JSON line for the parent."""
    # Everything before this point is interpreter start-up and imports: the ffmpeg CLI has no
    # equivalent, so it is reported separately (it still counts in the measured total).
    startup_cpu_s = _own_cpu_seconds()
    encoder = VideoEncoder(SETTINGS)
    frames = packets = 0
    with av.open(GRAPH, format="lavfi") as container:
        for frame in itertools.islice(container.decode(video=0), duration * SETTINGS.fps):
            seconds = float(frame.pts * frame.time_base)
            packets += len(encoder.encode(CapturedFrame(frame, seconds), seconds))
            frames += 1
    return {"frames_in": frames, "packets_out": packets, "startup_cpu_s": startup_cpu_s}


# --- ffmpeg CLI side ---------------------------------------------------------------------------


def ffmpeg_x264_args(settings: VideoSettings) -> list[str]:
    """The ffmpeg CLI flags equivalent to what VideoEncoder sets on its libx264 context."""
    private = [arg for name, value in x264_options(settings).items() for arg in (f"-{name}", value)]
    return [
        "-c:v", "libx264", *private,
        "-g", str(settings.gop), "-bf", "0", "-b:v", str(settings.bitrate),
        # VideoEncoder forces an IDR on every keyframe_interval boundary; without this the CLI would
        # key only every 2 * gop frames (the keyint in x264-params overrides -g): another workload.
        "-force_key_frames", f"expr:gte(t,n_forced*{settings.keyframe_interval:g})",
        "-pix_fmt", "yuv420p",
    ]


def ffmpeg_input_args() -> list[str]:
    return [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", GRAPH]


def ffmpeg_bench_command(duration: int) -> list[str]:
    # -progress reports the encoded frame count even at -loglevel error.
    return [*ffmpeg_input_args(), "-t", str(duration), *ffmpeg_x264_args(SETTINGS),
            "-progress", "pipe:1", "-nostats", "-f", "null", "-"]


def ffmpeg_frames(progress: str) -> int:
    counts = re.findall(r"^frame=(\d+)$", progress, re.MULTILINE)
    if not counts:
        raise InvalidMeasurement(f"no frame count in ffmpeg -progress output: {progress[-500:]!r}")
    return int(counts[-1])


# --- Measurement -------------------------------------------------------------------------------


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(command: list[str], timeout_s: float) -> tuple[float, float, str]:
    """CPU seconds, wall seconds and stdout of one child (children run one at a time)."""
    cpu_before, wall_before = _children_cpu_seconds(), time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as error:
        raise InvalidMeasurement(f"timed out after {timeout_s:.0f} s: {command}") from error
    wall_s, cpu_s = time.perf_counter() - wall_before, _children_cpu_seconds() - cpu_before
    if done.returncode != 0:
        raise InvalidMeasurement(f"exit status {done.returncode} from {command}: {done.stderr[-2000:]}")
    return cpu_s, wall_s, done.stdout


def expect_frames(side: str, frames: int, expected: int) -> None:
    if frames != expected:
        raise InvalidMeasurement(f"{side} encoded {frames} frames, expected {expected}")


def run_launchkit(duration: int, timeout_s: float) -> tuple[Side, float]:
    command = [sys.executable, "-m", "loadtests.bench.encoder", "--worker", "--duration", str(duration)]
    cpu_s, wall_s, stdout = measure(command, timeout_s)
    result = json.loads(stdout.strip().splitlines()[-1])
    expected = duration * SETTINGS.fps
    expect_frames("Launchkit (frames fed)", result["frames_in"], expected)
    expect_frames("Launchkit (packets out)", result["packets_out"], expected)
    return Side(cpu_s, wall_s, result["packets_out"]), result["startup_cpu_s"]


def run_ffmpeg(duration: int, timeout_s: float) -> Side:
    cpu_s, wall_s, stdout = measure(ffmpeg_bench_command(duration), timeout_s)
    frames = ffmpeg_frames(stdout)
    expect_frames("ffmpeg CLI", frames, duration * SETTINGS.fps)
    return Side(cpu_s, wall_s, frames)


def run_pair(index: int, duration: int) -> Run:
    # Generous: both sides encode several times faster than real time even on a busy 2-core box.
    timeout_s = 60.0 + 10.0 * duration
    # ABBA order, so a drifting machine load (or a warming cache) does not favour one side.
    launchkit_first = index % 2 == 0
    if launchkit_first:
        launchkit, startup = run_launchkit(duration, timeout_s)
        ffmpeg = run_ffmpeg(duration, timeout_s)
    else:
        ffmpeg = run_ffmpeg(duration, timeout_s)
        launchkit, startup = run_launchkit(duration, timeout_s)
    return Run(index + 1, "Launchkit" if launchkit_first else "ffmpeg", launchkit, startup, ffmpeg)


# --- Versions and settings check ---------------------------------------------------------------


def x264_banner(bitstream: bytes) -> str:
    match = X264_BANNER.search(bitstream)
    if match is None:
        raise InvalidMeasurement("no x264 version SEI in the first access unit: is this libx264?")
    return match.group(0).decode()


def launchkit_x264_banner() -> str:
    encoder = VideoEncoder(SETTINGS)
    with av.open(GRAPH, format="lavfi") as container:
        frame = next(container.decode(video=0))
        packets = encoder.encode(CapturedFrame(frame, 0.0), 0.0)
    return x264_banner(b"".join(packet.data for packet in packets))


def ffmpeg_x264_banner() -> str:
    command = [*ffmpeg_input_args(), "-frames:v", "1", *ffmpeg_x264_args(SETTINGS), "-f", "h264", "-"]
    done = subprocess.run(command, capture_output=True, timeout=60, check=True)
    return x264_banner(done.stdout)


def versions() -> dict[str, Any]:
    ffmpeg_version = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True, timeout=30, check=True)
    return {
        "ffmpeg_cli": ffmpeg_version.stdout.splitlines()[0],
        "pyav": av.__version__,
        "pyav_libraries": {name: ".".join(map(str, version)) for name, version in av.library_versions.items()},
        "pyav_libx264_codec": av.codec.Codec("libx264", "w").long_name,
        "x264_banner_launchkit": launchkit_x264_banner(),
        "x264_banner_ffmpeg_cli": ffmpeg_x264_banner(),
    }


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    return {"cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": model, "loadavg_1m_at_start": os.getloadavg()[0]}


# --- Report ------------------------------------------------------------------------------------


def report(duration: int, runs: list[Run], info: dict[str, Any]) -> dict[str, Any]:
    ratio = statistics.median(run.ratio for run in runs)
    return {
        "duration_s": duration,
        "frames_per_side": duration * SETTINGS.fps,
        "source": GRAPH,
        "settings": asdict(SETTINGS),
        "ffmpeg_command": ffmpeg_bench_command(duration),
        "runs": [
            asdict(run) | {"ratio": run.ratio, "ratio_without_startup": run.ratio_without_startup} for run in runs
        ],
        "median": {
            "launchkit_cpu_s_per_video_s": statistics.median(r.launchkit.cpu_s / duration for r in runs),
            "ffmpeg_cpu_s_per_video_s": statistics.median(r.ffmpeg.cpu_s / duration for r in runs),
            "ratio": ratio,
            "ratio_without_startup": statistics.median(run.ratio_without_startup for run in runs),
        },
        "target_ratio": TARGET_RATIO,
        "passed": ratio <= TARGET_RATIO,
        **info,
        "loadavg_1m_at_end": os.getloadavg()[0],
    }


def x264_version(banner: str) -> str:
    return banner.partition(" - H.264")[0]


def x264_option_string(banner: str) -> str:
    return banner.partition("options: ")[2]


def x264_lines(launchkit: str, ffmpeg: str) -> list[str]:
    lines = [f"- x264 build: Launchkit (PyAV) `{x264_version(launchkit)}`, "
             f"ffmpeg CLI (Debian) `{x264_version(ffmpeg)}`."]
    if x264_option_string(launchkit) == x264_option_string(ffmpeg):
        return [*lines, f"- x264 option strings identical on both sides: `{x264_option_string(launchkit)}`"]
    return [*lines, "- **x264 option strings differ:**", f"  - Launchkit: `{x264_option_string(launchkit)}`",
            f"  - ffmpeg CLI: `{x264_option_string(ffmpeg)}`"]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(result: dict[str, Any]) -> str:
    duration = result["duration_s"]
    lines = [
        f"## Encoder CPU: Launchkit vs ffmpeg CLI ({SETTINGS.width}x{SETTINGS.height}@{SETTINGS.fps}, "
        f"{duration} s = {result['frames_per_side']} frames per side, {len(result['runs'])} runs)",
        "",
        _row(["run", "first", "Launchkit CPU s", "of which Python start-up", "Launchkit wall s",
              "ffmpeg CPU s", "ffmpeg wall s", "Launchkit CPU s / video s", "ffmpeg CPU s / video s", "ratio"]),
        _row(["---:", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:"]),
    ]
    for run in result["runs"]:
        lk, ff = run["launchkit"], run["ffmpeg"]
        lines.append(_row([
            str(run["index"]), run["first"], f"{lk['cpu_s']:.2f}", f"{run['launchkit_startup_cpu_s']:.2f}",
            f"{lk['wall_s']:.2f}", f"{ff['cpu_s']:.2f}", f"{ff['wall_s']:.2f}",
            f"{lk['cpu_s'] / duration:.3f}", f"{ff['cpu_s'] / duration:.3f}", f"{run['ratio']:.3f}",
        ]))
    median = result["median"]
    lines += [
        _row(["median", "", "", "", "", "", "", f"{median['launchkit_cpu_s_per_video_s']:.3f}",
              f"{median['ffmpeg_cpu_s_per_video_s']:.3f}", f"**{median['ratio']:.3f}**"]),
        "",
        f"- Verdict: median ratio {median['ratio']:.3f} {'<=' if result['passed'] else '>'} target "
        f"{result['target_ratio']} → {'PASS' if result['passed'] else 'FAIL'} "
        f"(without Python start-up: {median['ratio_without_startup']:.3f}).",
        f"- Source (both sides, unpaced): `{result['source']}`; frame counts verified equal.",
        f"- ffmpeg command: `{' '.join(result['ffmpeg_command'])}`",
        f"- ffmpeg CLI: {result['ffmpeg_cli']} (links Debian's libx264).",
        f"- PyAV {result['pyav']} bundles its own FFmpeg and libx264 "
        f"(libavcodec {result['pyav_libraries']['libavcodec']}, codec: {result['pyav_libx264_codec']}).",
        *x264_lines(result["x264_banner_launchkit"], result["x264_banner_ffmpeg_cli"]),
        f"- Machine: {result['cpus_usable']} CPUs, {result['cpu_model']}; 1-min load average "
        f"{result['loadavg_1m_at_start']:.2f} at start, {result['loadavg_1m_at_end']:.2f} at end.",
    ]
    return "\n".join(lines)


# --- CLI ---------------------------------------------------------------------------------------


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=positive_int, default=20,
                        help="seconds of video per side per run (default 20)")
    parser.add_argument("--runs", type=positive_int, default=5, help="alternating runs of both sides (default 5)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this path")
    # Internal: the parent starts this module again with --worker to encode Launchkit's side.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(encode_with_launchkit(args.duration)))
        return 0
    try:
        info = {**versions(), **machine()}
        runs = [run_pair(index, args.duration) for index in range(args.runs)]
    except InvalidMeasurement as error:
        print(f"INVALID MEASUREMENT: {error}", file=sys.stderr)
        return 2
    result = report(args.duration, runs, info)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
