"""Real-pace 3 Mbit/s HLS viewers one core sustains: Launchkit vs nginx serving the same live HLS.

What it measures
    The number of simulated viewers (`loadtests.player`: hls.js-like, real pace, one 720p
    rendition at 3 Mbit/s, 2 s segments) a server sustains with p99 TTFB < 500 ms and zero errors,
    side by side with Debian's nginx serving the same HLS objects from disk, on the same core.

    * One `launchkit demo --ladder 720p:1280x720:3000` is the live source for both sides (same
      segments, same sizes).
    * nginx side: a mirror process polls the origin's live media playlist every 0.2 s and copies
      every new init/segment, then the playlist, into a temporary directory (written to a
      temporary name, then renamed: nginx never serves a partial file), keeping the same window
      plus 3 segments like the origin. LL-HLS tags are dropped (nginx cannot hold a blocking
      reload). nginx serves that directory with 1 worker process, sendfile, no access log,
      keep-alive, the same Cache-Control/CORS headers as Launchkit.
    * Launchkit side: what serves viewers today. When `launchkit edge` exists (`launchkit --help`
      lists it), the edge in front of the origin; otherwise the origin itself (`/hls/...` from
      memory). `--launchkit origin|edge` forces one.
    * Same CPU budget: every server process (nginx master + worker, the Launchkit origin or edge
      and the origin's encoder) is pinned to core 1 with the scheduler affinity (`taskset` would do
      the same); the load generator and the mirror run on core 0. The origin's encoder (~25 % of
      that core) is background load on the server core for both sides alike.
    * Same load generator, same request mix: each step is a fresh swarm of N viewers arriving
      evenly over `--ramp-seconds` (5 s), each playing `--step-seconds` (15 s) from its arrival;
      viewers poll the playlist (hls.js classic live: once per target duration, half when
      unchanged) on both sides unless `--ll`, which lets Launchkit viewers use LL-HLS (parts and
      blocking reloads) while nginx viewers cannot.
    * A step passes when no request failed in the whole step (HTTP error, timeout, reset, a
      waiting-room answer: an admitted viewer was not served) and the p99 TTFB of requests sent
      while all N viewers were present (from the last arrival to the first departure) is below
      500 ms. Both sides ramp through the same steps, interleaved (at each N each side still
      passing runs once, the order alternating), doubling N from `--first-step` (25) up to
      `--max-viewers`; a failed step is repeated once (a burst of other work on a shared machine
      must not decide alone: N passes if either attempt passes); after the first failure, one step
      halfway between the last pass and it. Sustained = the largest passing N below the first
      failure. `--budget` bounds the whole ramp in time.
    * During every step, from /proc: CPU of each server process (Launchkit: its event-loop thread
      vs its other threads), busy share of each core (user, system, softirq, steal), CPU of every
      other process on the machine (shared machines), the load generator's own CPU and event-loop
      lag, RSS of each server process; from Launchkit's /metrics once a second: its own event-loop
      lag, cache size, admitted viewers. A failure is blamed on the load generator when its loop
      lagged ≥ 100 ms or its core was full, and the server's own loop was not late: the server's
      figure is then only a lower bound, and the ratio proves ≥ 1.0× only if nginx reached its own
      limit. Server CPU per viewer (µs of CPU per viewer-second above idle) is reported for both.
    * Memory: RSS per admitted viewer is the least-squares slope of steady-state RSS against N
      (for a caching edge, with its cache size as a second variable); memory per cached minute of
      stream is the origin's RSS slope while its segment window fills at start-up and, for the
      edge, RSS per cached byte × the stream's bytes per minute.
    * `--profile` (default when py-spy is installed): one more Launchkit step at the first failing
      N (or the largest N tried) under `py-spy record`, summarised by function.
    * `--from-json PATH` renders a saved run again with this version's analysis.

How to run (from the repository root; needs 2+ cores, Debian nginx)
    .venv/bin/python -m loadtests.bench.edge [--first-step 25] [--max-viewers 3200] [--step-seconds 15]
        [--json PATH]

Exit status: 0 if Launchkit sustains at least as many viewers as nginx (ratio ≥ 1.0) and nginx
reached its own limit, 1 if not (or not demonstrated), 2 if the measurement could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy

from loadtests.player import PlayerConfig, Swarm, parse_media_playlist
from loadtests.target import LocalDemo, free_port, launchkit_command, metrics_auth, start_launchkit

REPO_ROOT = Path(__file__).resolve().parents[2]
NGINX = "/usr/sbin/nginx"
PY_SPY = Path(sys.executable).parent / "py-spy"
LADDER = "720p:1280x720:3000"
SEGMENT_DURATION = 2.0
TTFB_P99_LIMIT = 0.5
CLIENT_CORE, SERVER_CORE = 0, 1
DEFAULT_MAX_VIEWERS = 3200
FIRST_STEP = 25
MIRROR_POLL = 0.2
SAMPLE_PERIOD = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")
# LL-HLS tags a static file server cannot honour (blocking reloads, parts it would have to hold).
LL_TAGS = ("#EXT-X-PART:", "#EXT-X-PART-INF", "#EXT-X-SERVER-CONTROL", "#EXT-X-PRELOAD-HINT",
           "#EXT-X-RENDITION-REPORT", "#EXT-X-SKIP")


# --------------------------------------------------------------------------------------------
# /proc
# --------------------------------------------------------------------------------------------

def _stat_fields(path: str) -> list[str]:
    with open(path) as handle:
        return handle.read().rsplit(")", 1)[1].split()


def _stat_cpu_seconds(path: str) -> float:
    """utime + stime from a /proc stat file, seconds (0 once the process is gone)."""
    try:
        fields = _stat_fields(path)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all its threads), seconds."""
    return _stat_cpu_seconds(f"/proc/{pid}/stat")


def main_thread_cpu_seconds(pid: int) -> float:
    """utime + stime of the thread whose id is the process id: Python's main thread, which runs
    the asyncio event loop of a Launchkit server."""
    return _stat_cpu_seconds(f"/proc/{pid}/task/{pid}/stat")


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat_fields(f"/proc/{entry}/stat")[1]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return found


def core_times() -> dict[int, dict[str, int]]:
    """Per core, jiffies since boot: busy (user+nice+system+irq+softirq), its parts, steal, total."""
    cores = {}
    with open("/proc/stat") as handle:
        for line in handle:
            if re.match(r"cpu\d+ ", line):
                name, *values = line.split()
                user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in values[:8])
                cores[int(name[3:])] = {
                    "busy": user + nice + system + irq + softirq, "user": user + nice, "system": system,
                    "softirq": irq + softirq, "steal": steal,
                    "total": user + nice + system + idle + iowait + irq + softirq + steal,
                }
    return cores


def all_process_cpu() -> dict[int, tuple[str, float]]:
    """Every process on the machine: (command name, CPU seconds); to see who else uses the cores."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    text = handle.read()
                name = text[text.index("(") + 1:text.rindex(")")]
                fields = text.rsplit(")", 1)[1].split()
                found[int(entry)] = (name, (int(fields[11]) + int(fields[12])) / CLK_TCK)
            except (OSError, ValueError, IndexError):
                continue
    return found


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                      if line.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        pass
    with open("/proc/meminfo") as handle:
        memory_kb = int(handle.readline().split()[1])
    nginx_version = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr.strip()
    return {"nproc": os.cpu_count(), "usable_cores": sorted(os.sched_getaffinity(0)), "cpu_model": model,
            "memory_gib": round(memory_kb / 1024 / 1024, 1), "python": platform.python_version(),
            "nginx": nginx_version.replace("nginx version: ", ""), "kernel": platform.release()}


@contextmanager
def affinity(cores: set[int]):
    """Run the block (and every process it starts) on `cores` only; children inherit it."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# --------------------------------------------------------------------------------------------
# The live copy on disk (child process) and nginx
# --------------------------------------------------------------------------------------------

def plain_playlist(text: str) -> str:
    """The media playlist without LL-HLS tags: what a packager writing files for nginx writes."""
    return "".join(line + "\n" for line in text.splitlines() if not line.startswith(LL_TAGS))


def _fetch(url: str) -> bytes:
    headers = metrics_auth() if url.endswith("/metrics") else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
        return response.read()


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def run_mirror(origin: str, root: Path, seconds: float) -> int:
    """Copy the origin's live HLS (multivariant, media playlists, init, segments) into `root/hls/`
    until `seconds` have passed or the parent process is gone."""
    parent = os.getppid()
    hls = root / "hls"
    hls.mkdir(parents=True, exist_ok=True)
    multivariant = _fetch(f"{origin}/hls/index.m3u8")
    renditions = [line.rsplit("/", 1)[0] for line in multivariant.decode().splitlines()
                  if line and not line.startswith("#")]
    written: dict[str, collections.deque[str]] = {r: collections.deque() for r in renditions}
    last_text: dict[str, str] = {}
    for rendition in renditions:
        (hls / rendition).mkdir(exist_ok=True)
    _write_atomically(hls / "index.m3u8", multivariant)
    for _ in range(int(seconds / MIRROR_POLL)):
        if os.getppid() != parent:
            return 0
        for rendition in renditions:
            base = f"{origin}/hls/{rendition}/"
            try:
                text = plain_playlist(_fetch(base + "index.m3u8").decode())
                if text == last_text.get(rendition):
                    continue
                playlist = parse_media_playlist(text, base)
                names = [s.uri[len(base):] for s in playlist.segments if s.complete]
                maps = {s.map_uri[len(base):] for s in playlist.segments if s.map_uri}
                for name in [*maps, *names]:
                    target = hls / rendition / name
                    if not target.exists():
                        _write_atomically(target, _fetch(base + name))
                        if name not in maps:
                            written[rendition].append(name)
                _write_atomically(hls / rendition / "index.m3u8", text.encode())
                last_text[rendition] = text
                # Keep the window plus 3 segments (the origin's RETAINED_AFTER_WINDOW), drop older.
                while len(written[rendition]) > len(names) + 3:
                    (hls / rendition / written[rendition].popleft()).unlink(missing_ok=True)
            except (OSError, ValueError) as error:
                print(f"mirror: {rendition}: {error!r}", file=sys.stderr, flush=True)
        time.sleep(MIRROR_POLL)
    return 0


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 16384;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    types {{
        application/vnd.apple.mpegurl m3u8;
        video/mp4 mp4 m4s;
    }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        root {root};
        location ~ \\.m3u8$ {{
            add_header Cache-Control "public, max-age=1";
            add_header Access-Control-Allow-Origin "*";
        }}
        location ~ \\.(m4s|mp4)$ {{
            add_header Cache-Control "public, max-age=31536000, immutable";
            add_header Access-Control-Allow-Origin "*";
        }}
    }}
}}
"""


def start_nginx(root: Path, prefix: Path, port: int, template: str = NGINX_CONF, **values: str) -> subprocess.Popen:
    """nginx serving `root` on 127.0.0.1:`port` with `template` (formatted with prefix, root, port, **values)."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(template.format(prefix=prefix, root=root, port=port, **values))
    process = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf)],
                               stdout=subprocess.DEVNULL, stderr=open(prefix / "stderr.log", "wb"))
    for _ in range(100):
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited: {(prefix / 'stderr.log').read_text()}"
                               f"{(prefix / 'error.log').read_text() if (prefix / 'error.log').exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("nginx did not listen within 10 s")


def stop(process: subprocess.Popen | None, signum: int = signal.SIGTERM, timeout: float = 10) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
CGROUP_PERIOD_US = 10_000  # short periods: a throttled server waits at most 10 ms, not 100 ms


def cpu_budget_group(name: str, fraction: float) -> Path:
    """A cgroup whose processes share `fraction` of one core (CFS quota), cgroup v1 `cpu` or v2
    `cpu.max`: the same budget for each server, small enough that a server reaches its own limit
    before the one-core load generator does. Raises RuntimeError where cgroups cannot be written."""
    quota = max(1000, int(fraction * CGROUP_PERIOD_US))
    if (CGROUP_V1_CPU / "cpu.cfs_quota_us").exists():
        group = CGROUP_V1_CPU / f"launchkit-bench-{os.getpid()}-{name}"
        settings = {"cpu.cfs_period_us": str(CGROUP_PERIOD_US), "cpu.cfs_quota_us": str(quota)}
    else:
        group = CGROUP_V2 / f"launchkit-bench-{os.getpid()}-{name}"
        settings = {"cpu.max": f"{quota} {CGROUP_PERIOD_US}"}
    try:
        group.mkdir(exist_ok=True)
        for file, value in settings.items():
            (group / file).write_text(value)
    except OSError as error:
        raise RuntimeError(f"cannot set a CPU budget with cgroups ({error}); run as root or without --cpu-budget") \
            from None
    return group


def join_group(group: Path, pids: list[int]) -> None:
    for pid in pids:
        (group / "cgroup.procs").write_text(str(pid))


def remove_group(group: Path) -> None:
    """Once its processes have exited (cgroup directories are removed with rmdir, never recursively)."""
    for _ in range(50):
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# Servers under test
# --------------------------------------------------------------------------------------------

@dataclass
class Server:
    name: str  # table label
    url: str  # multivariant playlist
    serving_pid: int  # the process whose CPU/RSS is "the server"
    background: dict[str, int] = field(default_factory=dict)  # other processes on the server core
    event_loop: bool = False  # a Python server: split main thread (event loop) from other threads
    with_children: bool = False  # count the serving process's children too (nginx worker, edge workers)
    idle: dict[str, float] = field(default_factory=dict)  # CPU with no viewers (measure_idle)
    metrics_url: str | None = None  # Launchkit's /metrics: server-side loop lag, cache, admissions
    budget_group: Path | None = None  # the cgroup holding the server to --cpu-budget of a core

    def serving_pids(self) -> list[int]:
        return [self.serving_pid, *children(self.serving_pid)] if self.with_children else [self.serving_pid]


def launchkit_roles() -> set[str]:
    help_text = subprocess.run(launchkit_command("--help"), capture_output=True, text=True, cwd=REPO_ROOT,
                               timeout=60).stdout
    return set(re.findall(r"^\s{4}(\w+)\s", help_text, re.M))


def launchkit_options(role: str) -> str:
    return subprocess.run(launchkit_command(role, "--help"), capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=60).stdout


# --------------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------------

def snapshot(server: Server, full: bool = False) -> dict[str, Any]:
    pids = server.serving_pids()
    return {
        "processes": all_process_cpu() if full else None,
        "at": time.monotonic(),
        "serving": sum(cpu_seconds(pid) for pid in pids),
        "main_thread": main_thread_cpu_seconds(server.serving_pid) if server.event_loop else 0.0,
        "background": {name: cpu_seconds(pid) for name, pid in server.background.items()},
        "generator": time.process_time(),
        "cores": core_times(),
        "rss": sum(rss_bytes(pid) for pid in pids),
    }


def window_usage(first: dict[str, Any], last: dict[str, Any], ours: set[int]) -> dict[str, Any]:
    wall = max(last["at"] - first["at"], 1e-6)
    cores = {}
    for core, now in last["cores"].items():
        before = first["cores"].get(core, now)
        span = max(now["total"] - before["total"], 1)
        cores[core] = {key: round((now[key] - before[key]) / span, 3)
                       for key in ("busy", "user", "system", "softirq", "steal")}
    others: dict[str, float] = collections.Counter()
    if first.get("processes") and last.get("processes"):
        for pid, (name, seconds) in last["processes"].items():
            if pid in ours or pid not in first["processes"]:
                continue
            used = seconds - first["processes"][pid][1]
            if used > 0:
                others[name] += used / wall
    usage = {
        "seconds": round(wall, 2),
        "server_cores": round((last["serving"] - first["serving"]) / wall, 3),
        "generator_cores": round((last["generator"] - first["generator"]) / wall, 3),
        "background_cores": {name: round((last["background"][name] - first["background"][name]) / wall, 3)
                             for name in last["background"]},
        "core_busy": cores,
        # CPU of every other process on the machine (other people's work on a shared machine).
        "other_processes_cores": round(sum(others.values()), 3),
        "other_processes_top": [(name, round(cores_used, 3)) for name, cores_used in others.most_common(4)],
    }
    if last["main_thread"]:
        usage["event_loop_cores"] = round((last["main_thread"] - first["main_thread"]) / wall, 3)
    return usage


async def run_step(server: Server, viewers: int, args: argparse.Namespace, *,
                   on_sample: Callable[[], None] | None = None) -> dict[str, Any]:
    config = PlayerConfig(duration=args.step_seconds, rendition="top", low_latency=args.ll and server.event_loop,
                          blocking_reload=args.ll and server.event_loop, request_timeout=args.request_timeout)
    swarm = Swarm(server.url, viewers, config, spread=args.ramp_seconds, connections_per_viewer=2)
    steady_from, steady_until = args.ramp_seconds, args.step_seconds
    samples: list[tuple[float, dict[str, Any]]] = []
    loop = asyncio.get_running_loop()
    started = loop.time()

    marks = {"first": None, "last": None}  # the two full snapshots that bound the steady window

    async def sample() -> None:
        for tick in range(int((args.ramp_seconds + args.step_seconds + 5) / SAMPLE_PERIOD)):
            at = loop.time() - started
            mark = None
            if marks["first"] is None and at >= steady_from:
                mark = "first"
            elif marks["first"] is not None and marks["last"] is None and at >= steady_until:
                mark = "last"
            samples.append((at, snapshot(server, full=mark is not None)))
            if mark:
                marks[mark] = samples[-1][1]
            if on_sample:
                on_sample()
            await asyncio.sleep(max(0.0, started + (tick + 1) * SAMPLE_PERIOD - loop.time()))

    scraped: list[dict[str, float]] = []

    async def scrape() -> None:
        """The server's own view once a second while all viewers are present: its event-loop lag
        (is the server late, or the client?), cache size, admitted viewers."""
        await asyncio.sleep(steady_from)
        for _ in range(int(steady_until - steady_from)):
            try:
                scraped.append(parse_metrics((await asyncio.to_thread(_fetch, server.metrics_url)).decode()))
            except OSError:
                pass
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample())
    scraper = asyncio.create_task(scrape()) if server.metrics_url else None
    try:
        result = await swarm.run()
    finally:
        sampler.cancel()
        if scraper:
            scraper.cancel()
        await asyncio.gather(sampler, *([scraper] if scraper else []), return_exceptions=True)
    steady_samples = [s for t, s in samples if steady_from <= t <= steady_until]
    first = marks["first"] or min(samples, key=lambda item: abs(item[0] - steady_from))[1]
    last = marks["last"] or samples[-1][1]
    ours = {os.getpid(), *server.serving_pids(), *server.background.values(), *args.helper_pids}
    whole = result.summary()
    steady = result.summary(since=steady_from, until=steady_until)
    errors = whole["errors"]
    p99 = steady["ttfb"]["p99"]
    reasons = []
    if whole["error_count"]:
        reasons.append("errors " + ", ".join(f"{kind}×{count}" for kind, count in sorted(errors.items())))
    if whole["waiting_room"]["answers"]:
        reasons.append(f"waiting room ×{whole['waiting_room']['answers']}")
    if p99 is None or p99 >= TTFB_P99_LIMIT:
        reasons.append(f"p99 TTFB {p99 if p99 is None else round(p99 * 1000)} ms ≥ {TTFB_P99_LIMIT * 1000:g}")
    if whole["never_started"]:
        reasons.append(f"{whole['never_started']} never started")
    return {
        "server": server.name,
        "viewers": viewers,
        "passed": not reasons,
        "reasons": reasons,
        "steady": {"ttfb": steady["ttfb"], "by_kind": {k: {"count": v["count"], "ttfb_p99": v["ttfb"]["p99"],
                                                           "download_p99": v["download"]["p99"]}
                                                       for k, v in steady["by_kind"].items()},
                   "requests": steady["requests"], "throughput_bps": steady["throughput_bps"],
                   "client_loop_lag": steady["client_loop_lag"]},
        "whole": {"ttfb": whole["ttfb"], "download": whole["download"], "errors": errors,
                  "error_count": whole["error_count"], "stalls": whole["stalls"],
                  "viewers_with_stalls": whole["viewers_with_stalls"], "rebuffer_ratio": whole["rebuffer_ratio"],
                  "startup_seconds": whole["startup_seconds"], "waiting_room": whole["waiting_room"],
                  "never_started": whole["never_started"], "duplicate_fetches": whole["duplicate_fetches"],
                  "requests": whole["requests"], "bytes": whole["bytes"], "client_loop_lag": whole["client_loop_lag"],
                  "wall_seconds": whole["wall_seconds"], "cancelled": whole["cancelled"]},
        "usage": window_usage(first, last, ours),
        "rss_bytes": round(sum(s["rss"] for s in steady_samples) / max(len(steady_samples), 1)),
        "rss_max_bytes": max((s["rss"] for _, s in samples), default=0),
        "ended_at": time.monotonic(),
        "server_metrics": {
            "event_loop_lag_max": max((m[LOOP_LAG] for m in scraped if LOOP_LAG in m), default=None),
            "cache_bytes": next((m[CACHE_BYTES] for m in reversed(scraped) if CACHE_BYTES in m), None),
            "cache_objects": next((m[CACHE_OBJECTS] for m in reversed(scraped) if CACHE_OBJECTS in m), None),
            "admitted_viewers": max((m[ADMITTED] for m in scraped if ADMITTED in m), default=None),
        },
    }


def step_plan(max_viewers: int, first: int = FIRST_STEP) -> list[int]:
    plan, viewers = [], first
    while viewers <= max_viewers:
        plan.append(viewers)
        viewers *= 2
    if plan and plan[-1] < max_viewers:
        plan.append(max_viewers)
    return plan


def ramps(servers: list[Server], args: argparse.Namespace, deadline: float,
          log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Ramp every server through the same steps, interleaved (at each N every side still passing
    runs once, the order alternating), so slow drifts of the machine's load hit both sides alike.
    A failed step is repeated once (a transient burst of other work on a shared machine must not
    decide the result alone): N passes if either attempt passes. Then one step halfway between the
    last pass and the first failure."""
    step_cost = args.ramp_seconds + args.step_seconds + args.cooldown + 3
    state = {s.name: {"steps": [], "failed_at": None} for s in servers}
    out_of_time = False

    def attempt(server: Server, viewers: int) -> bool:
        nonlocal out_of_time
        for attempt_number in (1, 2):
            if time.monotonic() + step_cost > deadline:
                out_of_time = True
                return False
            step = _one_step(server, viewers, args, log)
            step["attempt"] = attempt_number
            state[server.name]["steps"].append(step)
            if step["passed"]:
                return True
        return False

    for index, viewers in enumerate(step_plan(args.max_viewers, args.first_step)):
        active = [s for s in servers if state[s.name]["failed_at"] is None]
        for server in (active if index % 2 == 0 else active[::-1]):
            if not attempt(server, viewers) and not out_of_time:
                state[server.name]["failed_at"] = viewers
        if out_of_time or not active:
            break
    for server in servers:
        steps = state[server.name]["steps"]
        failed_at = state[server.name]["failed_at"]
        passed = [s["viewers"] for s in steps if s["passed"]]
        if failed_at and passed and not out_of_time:
            low = max(passed)
            middle = round((low + failed_at) / 2 / FIRST_STEP) * FIRST_STEP
            if low < middle < failed_at and failed_at / low > 1.3:
                attempt(server, middle)
    results = []
    for server in servers:
        steps = sorted(state[server.name]["steps"], key=lambda s: (s["viewers"], s["attempt"]))
        tried = sorted({s["viewers"] for s in steps})
        passing = {s["viewers"] for s in steps if s["passed"]}
        first_fail = next((n for n in tried if n not in passing), None)
        sustained = max((n for n in passing if first_fail is None or n < first_fail), default=0)
        results.append({"server": server.name, "steps": steps, "sustained": sustained, "first_failure": first_fail,
                        "saturated": first_fail is not None, "out_of_time": out_of_time,
                        "idle": server.idle})
    return results


def measure_idle(servers: list[Server], seconds: float) -> None:
    """CPU of each server with no viewer (the origin keeps encoding; the mirror keeps polling)."""
    before = {s.name: snapshot(s) for s in servers}
    time.sleep(seconds)
    for server in servers:
        after = snapshot(server)
        wall = after["at"] - before[server.name]["at"]
        server.idle = {"server_cores": round((after["serving"] - before[server.name]["serving"]) / wall, 3),
                       "background_cores": round(sum(after["background"][k] - before[server.name]["background"][k]
                                                     for k in after["background"]) / wall, 3)}
        if server.event_loop:
            server.idle["event_loop_cores"] = round(
                (after["main_thread"] - before[server.name]["main_thread"]) / wall, 3)


def _one_step(server: Server, viewers: int, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    log(f"{server.name}: {viewers} viewers …")
    step = asyncio.run(run_step(server, viewers, args))
    log(f"  {'pass' if step['passed'] else 'FAIL ' + '; '.join(step['reasons'])}: steady p99 TTFB "
        f"{_ms(step['steady']['ttfb']['p99'])} ms, server {step['usage']['server_cores']:.2f} cores, generator "
        f"{step['usage']['generator_cores']:.2f} cores, core busy "
        + ", ".join(f"{c}: {u['busy']:.0%}" for c, u in sorted(step['usage']['core_busy'].items())))
    time.sleep(args.cooldown)
    return step


# --------------------------------------------------------------------------------------------
# Profile (py-spy)
# --------------------------------------------------------------------------------------------

def profile_step(server: Server, viewers: int, args: argparse.Namespace, workdir: Path,
                 log: Callable[[str], None]) -> dict[str, Any] | None:
    if not PY_SPY.exists():
        return None
    output = workdir / "profile.txt"
    duration = max(1, int(args.step_seconds - args.ramp_seconds))
    log(f"profiling {server.name} at {viewers} viewers with py-spy for {duration} s …")

    async def profiled() -> dict[str, Any]:
        await asyncio.sleep(args.ramp_seconds)
        spy = await asyncio.create_subprocess_exec(
            str(PY_SPY), "record", "--pid", str(server.serving_pid), "--duration", str(duration), "--rate", "100",
            "--format", "raw", "--threads", "--output", str(output),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(spy.communicate(), timeout=duration + 30)
        return {"returncode": spy.returncode, "stderr": stderr.decode(errors="replace")[-500:]}

    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        spy = asyncio.create_task(profiled())
        step = await run_step(server, viewers, args)
        try:
            outcome = await asyncio.wait_for(spy, timeout=30)
        except asyncio.TimeoutError:
            outcome = {"returncode": None, "stderr": "py-spy did not finish"}
        return step, outcome

    step, outcome = asyncio.run(both())
    if not output.exists():
        return {"viewers": viewers, "error": outcome}
    return {"viewers": viewers, "step_passed": step["passed"], "p99_ms": _ms(step["steady"]["ttfb"]["p99"]),
            **summarize_profile(output.read_text(), server.serving_pid), "raw": str(output)}


def summarize_profile(raw: str, main_tid: int) -> dict[str, Any]:
    """py-spy raw (collapsed) stacks → share per thread, and for the event-loop thread the functions
    with the most self and total time. py-spy cannot tell an idle epoll_wait from work here, so
    samples whose innermost frame is the selector's `select` count as the loop waiting for I/O and
    are left out of the function shares (reported as `waiting`)."""
    threads: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total: collections.Counter = collections.Counter()
    main_samples = 0
    all_samples = 0
    waiting = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0]
        all_samples += count
        is_main = f"{main_tid:#x}" in thread or f" {main_tid}" in thread or "MainThread" in thread
        threads["event loop (main thread)" if is_main else "other threads"] += count
        if not is_main:
            continue
        functions = [_function(frame) for frame in frames[1:]]
        if functions and functions[-1].startswith(("EpollSelector.select ", "select ")):
            waiting += count
            continue
        main_samples += count
        if functions:
            own[functions[-1]] += count
        for function in set(functions):
            total[function] += count
    return {
        "samples": all_samples,
        "event_loop_waiting": round(waiting / max(waiting + main_samples, 1), 3),
        "threads": {name: round(count / max(all_samples, 1), 3) for name, count in threads.most_common()},
        "self": [(name, round(count / max(main_samples, 1), 3)) for name, count in own.most_common(15)],
        "total": [(name, round(count / max(main_samples, 1), 3)) for name, count in total.most_common(25)],
    }


def _function(frame: str) -> str:
    """`handle (aiohttp/web_protocol.py:512)` → `handle (aiohttp/web_protocol.py)`."""
    match = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame.strip())
    if not match:
        return frame.strip()
    name, path = match.groups()
    for marker in ("site-packages/", "lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f}"


def _mb(value: float) -> str:
    return f"{value / 1e6:.1f}"


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    denominator = sum((x - mean_x) ** 2 for x, _ in points)
    if denominator == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / denominator


def per_viewer_cost(step: dict[str, Any], idle: dict[str, float]) -> float:
    """Server CPU above idle per viewer, in µs of CPU per second of viewing."""
    return max(0.0, step["usage"]["server_cores"] - idle.get("server_cores", 0.0)) / step["viewers"] * 1e6


def cost_summary(ramp_result: dict[str, Any]) -> str:
    """Median server CPU per viewer over the steps with ≥ 100 viewers (smaller ones are too noisy),
    and the viewers the rest of the server core would serve at that cost (user+system time of the
    server process only: loopback TCP work the kernel does in softirq context is not in it)."""
    median = median_cost(ramp_result)
    if median is None:
        return "not enough load to tell"
    idle = ramp_result["idle"]
    budget = 1.0 - idle.get("server_cores", 0.0) - idle.get("background_cores", 0.0)
    projection = (f"≈ {budget * 1e6 / median:,.0f} viewers in the {budget:.2f} core left beside the encoder, if CPU "
                  "were the only limit" if median > 0 else "too small to see")
    return f"median {median:.0f} µs of server CPU per viewer-second over the steps ≥ 100 viewers ({projection})"


def client_saturated(step: dict[str, Any]) -> bool:
    """The load generator could not keep up: its event loop lagged or its core was full, so the
    TTFBs it measured include its own queueing."""
    usage = step["usage"]
    lag = step["steady"]["client_loop_lag"]["p99"] or 0
    return (lag >= 0.1 or usage["generator_cores"] >= 0.85
            or usage["core_busy"].get(CLIENT_CORE, {}).get("busy", 0) >= 0.95)


def server_late(step: dict[str, Any]) -> bool:
    """The server's own event loop was late by ≥ 100 ms (Launchkit's `launchkit_event_loop_lag_seconds`):
    the server itself could not keep up, whatever the load generator did."""
    lag = step.get("server_metrics", {}).get("event_loop_lag_max")
    return lag is not None and lag >= 0.1


def at_budget(step: dict[str, Any], budget: float | None) -> bool:
    """With --cpu-budget: the server used (nearly) all the CPU its cgroup allows, so it was at its limit."""
    return budget is not None and step["usage"]["server_cores"] >= 0.9 * budget


def limited_by_client(ramp_result: dict[str, Any], budget: float | None = None) -> bool:
    """Every failing attempt at the first failing step had a saturated load generator and no sign
    that the server itself was late or out of its CPU budget."""
    failing = [s for s in ramp_result["steps"] if s["viewers"] == ramp_result["first_failure"]]
    return bool(failing) and all(client_saturated(s) and not server_late(s) and not at_budget(s, budget)
                                 for s in failing)


def median_cost(ramp_result: dict[str, Any]) -> float | None:
    costs = sorted(per_viewer_cost(s, ramp_result["idle"]) for s in ramp_result["steps"] if s["viewers"] >= 100)
    return costs[len(costs) // 2] if costs else None


def verdict(nginx_ramp: dict[str, Any] | None, launchkit_ramp: dict[str, Any] | None,
            budget: float | None = None) -> dict[str, Any]:
    """Ratio of sustained viewers. It proves ≥ 1.0× only if nginx's own limit was reached: when
    nginx never failed, or failed because the load generator was saturated (and not at its CPU
    budget), nginx's figure is a lower bound and the ratio only an upper bound."""
    if not (nginx_ramp and launchkit_ramp and nginx_ramp["sustained"]):
        return {"ratio": None, "passed": False, "note": "not measured on both sides"}
    ratio = launchkit_ramp["sustained"] / nginx_ramp["sustained"]
    nginx_bound = not nginx_ramp["saturated"] or limited_by_client(nginx_ramp, budget)
    launchkit_bound = not launchkit_ramp["saturated"] or limited_by_client(launchkit_ramp, budget)
    def why(ramp_result: dict[str, Any]) -> str:
        return ("never failed a step" if not ramp_result["saturated"]
                else "failed only with the load generator saturated and no sign of its own lateness")

    notes = []
    if nginx_bound and launchkit_bound:
        notes.append(f"Neither side reached its own limit (nginx {why(nginx_ramp)}, Launchkit {why(launchkit_ramp)}): "
                     "the ratio is inconclusive; it says only that both serve at least this many viewers here.")
    elif nginx_bound:
        notes.append(f"nginx {why(nginx_ramp)}: its real figure is higher, so the ratio is an upper bound "
                     f"(Launchkit / nginx ≤ {ratio:.2f}×).")
    elif launchkit_bound:
        notes.append(f"Launchkit {why(launchkit_ramp)}: its real figure is higher, so the ratio is a lower bound "
                     f"(Launchkit / nginx ≥ {ratio:.2f}×).")
    nginx_cost, launchkit_cost = median_cost(nginx_ramp), median_cost(launchkit_ramp)
    cost_ratio = launchkit_cost / nginx_cost if nginx_cost and launchkit_cost else None
    if cost_ratio:
        notes.append(f"Server CPU per viewer (median over steps ≥ 100 viewers): Launchkit {launchkit_cost:.0f} µs, "
                     f"nginx {nginx_cost:.0f} µs per viewer-second, i.e. Launchkit costs {cost_ratio:.1f}× nginx's "
                     "CPU per viewer (user+system time of the server processes, kernel softirq excluded).")
    return {"ratio": ratio, "passed": ratio >= 1.0 and not nginx_bound, "note": " ".join(notes),
            "nginx_bound_by_client": nginx_bound, "launchkit_bound_by_client": launchkit_bound,
            "cpu_per_viewer_us": {"nginx": nginx_cost, "launchkit": launchkit_cost}, "cpu_cost_ratio": cost_ratio}


def memory_model(steps: list[dict[str, Any]], stream_bytes_per_minute: float) -> dict[str, Any]:
    """RSS per viewer from the steps' steady-state RSS. A caching edge's RSS also grows with its
    cache, which grows as the ramp goes on: then RSS = a + b·viewers + c·cache_bytes is fitted
    (least squares), and the memory per cached minute of stream = c × the stream's bytes per
    minute."""
    caches = [s["server_metrics"]["cache_bytes"] if "server_metrics" in s else None for s in steps]
    if len(steps) >= 4 and all(c is not None for c in caches):
        matrix = numpy.array([[1.0, s["viewers"], c] for s, c in zip(steps, caches)])
        rss = numpy.array([float(s["rss_bytes"]) for s in steps])
        (_, per_viewer, per_cache_byte), *_ = numpy.linalg.lstsq(matrix, rss, rcond=None)
        start = min(s["ended_at"] for s in steps)
        growth = slope([((s["ended_at"] - start) / 60, c) for s, c in zip(steps, caches)])
        return {"per_viewer": float(per_viewer), "rss_per_cache_byte": float(per_cache_byte),
                "cache_growth_per_minute": growth, "cache_bytes_last": max(caches),
                "cache_per_minute": float(per_cache_byte) * stream_bytes_per_minute}
    return {"per_viewer": slope([(s["viewers"], s["rss_bytes"]) for s in steps])}


def limit_analysis(ramp_result: dict[str, Any]) -> str:
    steps = ramp_result["steps"]
    if not steps:
        return "not measured"
    failing = next((s for s in steps if not s["passed"]), None)
    step = failing or steps[-1]
    usage = step["usage"]
    server_core = usage["core_busy"].get(SERVER_CORE, {}).get("busy", 0)
    client_core = usage["core_busy"].get(CLIENT_CORE, {}).get("busy", 0)
    lag = step["steady"]["client_loop_lag"]["p99"] or 0
    parts = []
    prefix = f"at {step['viewers']} viewers ({'first failing step' if failing else 'largest step, still passing'}): "
    if server_core >= 0.9:
        parts.append(f"the server core is saturated ({server_core:.0%} busy; server process {usage['server_cores']:.2f}"
                     f" cores" + "".join(f", {name} {cores:.2f}" for name, cores in usage["background_cores"].items())
                     + ")")
    if server_late(step):
        parts.append(f"the server's own event loop was late by up to "
                     f"{step['server_metrics']['event_loop_lag_max'] * 1000:.0f} ms (its metric): the server could "
                     "not keep up")
    if usage["generator_cores"] >= 0.85 or client_core >= 0.95 or lag >= 0.1:
        parts.append(f"the load generator is saturated ({usage['generator_cores']:.2f} cores, core {CLIENT_CORE} "
                     f"{client_core:.0%} busy, event-loop lag p99 {lag * 1000:.0f} ms): TTFB includes client "
                     "queueing, so this side's figure is a lower bound")
    if not parts:
        parts.append(f"neither core is saturated (server core {server_core:.0%}, client core {client_core:.0%} busy)")
    if usage["other_processes_cores"] >= 0.2:
        parts.append(f"other processes on this shared machine used {usage['other_processes_cores']:.2f} cores "
                     "during the step (" + ", ".join(f"{n} {c:.2f}" for n, c in usage["other_processes_top"]) + ")")
    return prefix + "; ".join(parts)


def markdown(result: dict[str, Any]) -> str:
    out: list[str] = []
    machine = result["machine"]
    out.append("## Edge: real-pace 3 Mbit/s HLS viewers on one core — Launchkit vs nginx\n")
    out.append(f"{result['date']}, `{result['command']}` (`loadtests/bench/edge.py`).\n")
    out.append(f"- Machine: nproc {machine['nproc']}, `lscpu` model \"{machine['cpu_model']}\", "
               f"{machine['memory_gib']} GiB RAM, Linux {machine['kernel']}, Python {machine['python']}, "
               f"{machine['nginx']}.")
    start, end = result["load_average"]["start"], result["load_average"]["end"]
    out.append(f"- Load average (1/5/15 min): {' / '.join(f'{v:.2f}' for v in start)} at start, "
               f"{' / '.join(f'{v:.2f}' for v in end)} at end."
               + (" **The machine was busy at start (load ≥ 1): other work shares these cores.**"
                  if start[0] >= 1.0 else ""))
    source = result["source"]
    out.append(f"- Source: one `launchkit demo --ladder {LADDER} --segment-duration {SEGMENT_DURATION:g}` "
               f"({source['segment_bytes_mean'] / 1e3:.0f} kB per {SEGMENT_DURATION:g} s segment on average = "
               f"{source['bitrate_bps'] / 1e6:.2f} Mbit/s per viewer), pinned to core {SERVER_CORE}.")
    out.append(f"- Launchkit side: **{result['launchkit_mode']}**. nginx side: 1 worker serving a live copy on disk "
               f"(mirror polling every {MIRROR_POLL:g} s on core {CLIENT_CORE}).")
    out.append(f"- Server core {SERVER_CORE}: every server process and the origin's encoder; core {CLIENT_CORE}: the "
               "load generator (this process) and the mirror.")
    if result["args"].get("cpu_budget"):
        out.append(f"- **CPU budget: each server gets {result['args']['cpu_budget']:g} of core {SERVER_CORE}** (cgroup CFS "
                   f"quota, {CGROUP_PERIOD_US // 1000} ms period), so the server, not the load generator, reaches its "
                   "limit; the origin's encoder is outside the budget.")
    out.append(f"- Steps: N viewers arrive evenly over {result['args']['ramp_seconds']:g} s, each plays "
               f"{result['args']['step_seconds']:g} s; verdict on requests sent while all N were present "
               f"(p99 TTFB < {TTFB_P99_LIMIT * 1000:g} ms) and on the whole step (zero errors, no waiting room).")
    out.append(f"- Request mix: {'Launchkit viewers LL-HLS (parts, blocking reloads); nginx viewers classic' if result['args']['ll'] else 'classic live HLS on both sides (playlist polled once per target duration, one request per segment)'}.\n")  # noqa: E501
    for ramp_result in result["ramps"]:
        out.append(f"### {ramp_result['server']}\n")
        out.append("| viewers | verdict | TTFB p50 / p95 / **p99** ms (steady) | p99 TTFB ms (whole step) | segment "
                   "download p99 ms | errors | stalls | startup p95 s | served Mbit/s | server CPU cores "
                   "(event loop) | server CPU µs per viewer-second above idle | origin on server core | "
                   "core 1 busy = user + sys + softirq (steal) | "
                   "generator cores | core 0 busy = user + sys + softirq | other processes cores | "
                   "client loop lag p99 ms | server loop lag max ms | "
                   "server RSS MB |")
        out.append("| ---: | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | "
                   "---: | ---: | ---: | ---: | ---: |")
        for step in ramp_result["steps"]:
            steady, whole, usage = step["steady"], step["whole"], step["usage"]
            ttfb = steady["ttfb"]
            empty = {"busy": 0, "user": 0, "system": 0, "softirq": 0, "steal": 0}
            core1 = usage["core_busy"].get(SERVER_CORE, empty)
            core0 = usage["core_busy"].get(CLIENT_CORE, empty)
            loop_share = f" ({usage['event_loop_cores']:.2f})" if "event_loop_cores" in usage else ""
            errors = ", ".join(f"{k}×{v}" for k, v in sorted(whole["errors"].items())) or "0"
            if whole["waiting_room"]["answers"]:
                errors += f"; waiting room ×{whole['waiting_room']['answers']}"
            verdict = ("pass" if step["passed"] else "**fail**") + (" (retry)" if step.get("attempt") == 2 else "")
            out.append(
                f"| {step['viewers']} | {verdict} | {_ms(ttfb['p50'])} / {_ms(ttfb['p95'])} / **{_ms(ttfb['p99'])}** | "
                f"{_ms(whole['ttfb']['p99'])} | {_ms(whole['download']['p99'])} | {errors} | {whole['stalls']} | "
                f"{whole['startup_seconds']['p95'] if whole['startup_seconds']['p95'] is not None else '–'} | "
                f"{(steady['throughput_bps'] or 0) / 1e6:.0f} | {usage['server_cores']:.2f}{loop_share} | "
                f"{per_viewer_cost(step, ramp_result['idle']):.0f} | "
                f"{', '.join(f'{v:.2f}' for v in usage['background_cores'].values()) or 'in-process'} | "
                f"{core1['busy']:.0%} = {core1['user']:.0%} + {core1['system']:.0%} + {core1['softirq']:.0%} "
                f"({core1['steal']:.0%}) | {usage['generator_cores']:.2f} | {core0['busy']:.0%} = "
                f"{core0['user']:.0%} + {core0['system']:.0%} + {core0['softirq']:.0%} | "
                f"{usage['other_processes_cores']:.2f} | "
                f"{_ms(steady['client_loop_lag']['p99'])} | "
                f"{_ms(step.get('server_metrics', {}).get('event_loop_lag_max'))} | {_mb(step['rss_bytes'])} |")
        idle = ramp_result["idle"]
        out.append(f"\nIdle (no viewers): server process {idle.get('server_cores', 0):.2f} cores"
                   + (f" (event loop {idle['event_loop_cores']:.2f})" if "event_loop_cores" in idle else "")
                   + ". Serving cost: " + cost_summary(ramp_result) + ".")
        sustained = ramp_result["sustained"]
        note = "" if ramp_result["saturated"] else " (no step failed: the real limit is higher)"
        if ramp_result["out_of_time"]:
            note += " (ramp stopped by the time budget)"
        out.append(f"\nSustained: **{sustained} viewers**{note}. Limit: {limit_analysis(ramp_result)}.\n")
    outcome = result["verdict"]
    out.append("### Verdict\n")
    out.append("| server | viewers sustained (p99 TTFB < 500 ms, zero errors) | first failing step |")
    out.append("| --- | ---: | ---: |")
    for ramp_result in result["ramps"]:
        out.append(f"| {ramp_result['server']} | {ramp_result['sustained']}"
                   f"{'' if ramp_result['saturated'] else '+'} | {ramp_result['first_failure'] or '–'} |")
    ratio = outcome["ratio"]
    out.append(f"\n**Ratio Launchkit / nginx = {'–' if ratio is None else f'{ratio:.2f}'}× "
               f"(goal ≥ 1.0×): {'PASS' if outcome['passed'] else 'not demonstrated (exit 1)'}.**"
               + (f" {outcome['note']}" if outcome.get("note") else "") + "\n")
    memory = result["memory"]
    out.append("### Memory\n")
    for name, per_viewer in memory["per_viewer"].items():
        with_cache = memory.get("edge_cache") and name.startswith("Launchkit edge")
        out.append(f"- {name}: {'–' if per_viewer is None else f'{per_viewer / 1024:.0f} KiB'} of RSS per admitted "
                   "viewer (least squares over the steps' steady-state RSS"
                   + (", with the cache size as a second variable)." if with_cache else ")."))
    cache = memory["cache"]
    per_minute = cache["rss_per_minute"]
    out.append(f"- Cache per minute of stream: the stream is {cache['bytes_per_minute'] / 1e6:.1f} MB of segments per "
               f"minute (measured sizes). While the origin's in-memory window filled from 1 to "
               f"{cache['segments_filled']} segments its RSS grew by {cache['rss_growth_bytes'] / 1e6:.1f} MB; the "
               f"least-squares slope is {'–' if per_minute is None else f'{per_minute / 1e6:.1f}'} MB of RSS per "
               "cached minute (one process, allocator noise included: read it as ±30 %).")
    edge_cache = memory.get("edge_cache")
    if edge_cache:
        out.append(f"- Edge cache: `{CACHE_BYTES}` reached {edge_cache['cache_bytes_last'] / 1e6:.0f} MB during the "
                   f"ramp (growing {edge_cache['cache_growth_per_minute'] / 1e6:.1f} MB per wall-clock minute while "
                   f"viewers pulled the stream); RSS rose {edge_cache['rss_per_cache_byte']:.2f} byte per cached byte "
                   f"(fit RSS = a + b·viewers + c·cache) ⇒ ~{edge_cache['cache_per_minute'] / 1e6:.0f} MB of RSS per "
                   "cached minute of stream. Few noisy points: read these as ±50 %.")
    for name, value in memory.get("cache_metrics", {}).items():
        out.append(f"- `{name}` = {value:.0f} (end of run)")
    profile = result.get("profile")
    if profile:
        out.append("\n### Profile of Launchkit under load (py-spy, on-CPU samples)\n")
        if "error" in profile:
            out.append(f"py-spy failed: {profile['error']}")
        else:
            out.append(f"{profile['viewers']} viewers (step {'passed' if profile['step_passed'] else 'failed'}, "
                       f"p99 TTFB {profile['p99_ms']} ms under the profiler), {profile['samples']} samples; "
                       "threads: " + ", ".join(f"{k} {v:.0%}" for k, v in profile["threads"].items())
                       + f". The event-loop thread waited in `select` for {profile['event_loop_waiting']:.0%} of its "
                       "samples; shares below are of its busy samples.\n")
            out.append("| event-loop thread: function | self | total |")
            out.append("| --- | ---: | ---: |")
            totals = dict(profile["total"])
            for name, share in profile["self"][:12]:
                out.append(f"| `{name}` | {share:.0%} | {totals.get(name, share):.0%} |")
            out.append("\nLargest inclusive (total) shares on the event-loop thread: "
                       + "; ".join(f"`{name}` {share:.0%}" for name, share in profile["total"][:14]) + ".")
    out.append("\n### Commands\n")
    for line in result["commands"]:
        out.append(f"- `{line}`")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-viewers", type=int, default=DEFAULT_MAX_VIEWERS,
                        help=f"largest step (default {DEFAULT_MAX_VIEWERS}); steps double from --first-step")
    parser.add_argument("--first-step", type=int, default=FIRST_STEP, help=f"first step (default {FIRST_STEP})")
    parser.add_argument("--step-seconds", type=float, default=15.0, help="seconds each viewer plays (default 15)")
    parser.add_argument("--ramp-seconds", type=float, default=5.0, help="arrivals spread over (default 5)")
    parser.add_argument("--cooldown", type=float, default=2.0, help="pause between steps (default 2)")
    parser.add_argument("--request-timeout", type=float, default=5.0)
    parser.add_argument("--budget", type=float, default=540.0, help="stop ramping after this many seconds (540)")
    parser.add_argument("--servers", default="nginx,launchkit", help="which sides to measure, in this order")
    parser.add_argument("--launchkit", choices=("auto", "origin", "edge"), default="auto",
                        help="what serves Launchkit viewers: the edge if it exists (auto), or forced")
    parser.add_argument("--cpu-budget", type=float, metavar="CORES",
                        help="give each server this share of core 1 (cgroup CPU quota, e.g. 0.1) so that it, "
                             "not the load generator, reaches its limit (default: the whole core)")
    parser.add_argument("--ll", action="store_true", help="Launchkit viewers play LL-HLS (nginx viewers cannot)")
    parser.add_argument("--profile", choices=("auto", "yes", "no"), default="auto",
                        help="profile Launchkit with py-spy after the ramps (auto: if installed)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="render the report of a saved --json run again (no measurement)")
    parser.add_argument("--mirror", nargs=2, metavar=("ORIGIN", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--mirror-seconds", type=float, default=900.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.helper_pids = set()  # our own helper processes (the mirror, py-spy): not "other" load
    return args


def load_result(path: Path) -> dict[str, Any]:
    """A saved run, with the verdict and memory model recomputed by this version of the analysis."""
    result = json.loads(path.read_text())
    for ramp_result in result["ramps"]:
        for step in ramp_result["steps"]:
            step["usage"]["core_busy"] = {int(k): v for k, v in step["usage"]["core_busy"].items()}
    by_side = {("nginx" if r["server"].startswith("nginx") else "launchkit"): r for r in result["ramps"]}
    result["verdict"] = verdict(by_side.get("nginx"), by_side.get("launchkit"), result["args"].get("cpu_budget"))
    for ramp_result in result["ramps"]:
        model = memory_model(ramp_result["steps"], result["source"]["bytes_per_second"] * 60)
        result["memory"]["per_viewer"][ramp_result["server"]] = model["per_viewer"]
        if model.get("cache_per_minute") is not None:
            result["memory"]["edge_cache"] = model
    return result


def log(message: str) -> None:
    print(f"[edge bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def source_stats(origin_url: str) -> dict[str, Any]:
    base = f"{origin_url}/hls/{LADDER.split(':')[0]}/"
    playlist = parse_media_playlist(_fetch(base + "index.m3u8").decode(), base)
    complete = [s for s in playlist.segments if s.complete][-4:]
    sizes = [len(_fetch(s.uri)) for s in complete]
    seconds = sum(s.duration for s in complete)
    return {"segment_bytes_mean": sum(sizes) / len(sizes), "bitrate_bps": 8 * sum(sizes) / seconds,
            "bytes_per_second": sum(sizes) / seconds, "media_sequence": playlist.last_msn}


def wait_for_window(origin_url: str, pid: int, segments: int, timeout: float) -> list[tuple[int, int]]:
    """Wait until `segments` more segments than now exist, sampling (segments published since the
    start, RSS of `pid`) every 0.5 s: while the origin's window fills, RSS grows by what it caches."""
    base = f"{origin_url}/hls/{LADDER.split(':')[0]}/index.m3u8"
    first = parse_media_playlist(_fetch(base).decode(), base).last_msn
    points = [(0, rss_bytes(pid))]
    for _ in range(int(timeout / 0.5)):
        time.sleep(0.5)
        last = parse_media_playlist(_fetch(base).decode(), base).last_msn
        points.append((last - first, rss_bytes(pid)))
        if last - first >= segments:
            break
    return points


LOOP_LAG = "launchkit_event_loop_lag_seconds"
CACHE_BYTES = "launchkit_edge_cache_bytes"
CACHE_OBJECTS = "launchkit_edge_cache_objects"
ADMITTED = 'launchkit_admission_viewers{scope="local"}'


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus exposition → {name with labels: value} (samples only)."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                found[name] = float(value)
            except ValueError:
                continue
    return found


def metrics_with_cache(url: str) -> dict[str, float]:
    try:
        text = _fetch(f"{url}/metrics").decode()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "cache" in line and "bytes" in line.split(" ")[0]:
            name, _, value = line.rpartition(" ")
            try:
                found[name] = float(value)
            except ValueError:
                continue
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mirror:
        return run_mirror(args.mirror[0].rstrip("/"), Path(args.mirror[1]), args.mirror_seconds)
    if args.from_json:
        result = load_result(args.from_json)
        print(markdown(result))
        return 0 if result["verdict"]["passed"] else 1
    command = " ".join([".venv/bin/python -m loadtests.bench.edge", *(argv if argv is not None else sys.argv[1:])])
    servers_wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    if len(os.sched_getaffinity(0)) < 2 or not {CLIENT_CORE, SERVER_CORE} <= os.sched_getaffinity(0):
        print(f"needs cores {CLIENT_CORE} and {SERVER_CORE}", file=sys.stderr)
        return 2
    if "nginx" in servers_wanted and not Path(NGINX).exists():
        print(f"{NGINX} is missing (apt-get install nginx)", file=sys.stderr)
        return 2
    started_at = time.monotonic()
    deadline = started_at + args.budget
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
        "machine": machine_info(), "load_average": {"start": load_average()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if k not in ("mirror", "helper_pids")},
        "commands": [command],
    }
    workdir = Path(tempfile.mkdtemp(prefix="launchkit-edge-bench-"))
    os.chmod(workdir, 0o755)  # nginx's worker runs as an unprivileged user
    origin: LocalDemo | None = None
    edge: LocalDemo | None = None
    mirror: subprocess.Popen | None = None
    nginx: subprocess.Popen | None = None
    servers: dict[str, Server] = {}
    os.sched_setaffinity(0, {CLIENT_CORE})
    try:
        roles = launchkit_roles()
        mode = args.launchkit if args.launchkit != "auto" else ("edge" if "edge" in roles else "origin")
        if mode == "edge" and "edge" not in roles:
            print("`launchkit edge` does not exist yet", file=sys.stderr)
            return 2
        log(f"starting the origin (`launchkit demo --ladder {LADDER}`) on core {SERVER_CORE} …")
        origin_args = ("--ladder", LADDER, "--segment-duration", str(SEGMENT_DURATION))
        with affinity({SERVER_CORE}):
            origin = start_launchkit("demo", *origin_args, log_dir=workdir, ready_timeout=60)
        result["commands"].append(f"taskset -c {SERVER_CORE} " + " ".join(
            ["launchkit", "demo", "--host", "127.0.0.1", "--port", "0", *origin_args]))
        log("waiting for the origin's window (and retained segments) to fill …")
        # The origin keeps 6 segments in its playlist + 3 retained: 8 more after the first fill it.
        fill = wait_for_window(origin.url, origin.process.pid, 8, timeout=40)
        source = source_stats(origin.url)
        result["source"] = source

        if "nginx" in servers_wanted:
            root = workdir / "www"
            root.mkdir()
            os.chmod(root, 0o755)
            mirror = subprocess.Popen([sys.executable, "-m", "loadtests.bench.edge", "--mirror", origin.url, str(root)],
                                      cwd=REPO_ROOT)
            args.helper_pids.add(mirror.pid)
            result["commands"].append(f"taskset -c {CLIENT_CORE} python -m loadtests.bench.edge --mirror {origin.url} "
                                      f"{root}")
            port = free_port()
            with affinity({SERVER_CORE}):
                nginx = start_nginx(root, workdir / "nginx", port)
            result["commands"].append(f"taskset -c {SERVER_CORE} {NGINX} -p {workdir / 'nginx'} -c "
                                      f"{workdir / 'nginx' / 'nginx.conf'}  # config: 1 worker, sendfile, see NGINX_CONF")
            url = f"http://127.0.0.1:{port}/hls/index.m3u8"
            for _ in range(100):  # until the copy has a playlist
                try:
                    _fetch(f"http://127.0.0.1:{port}/hls/{LADDER.split(':')[0]}/index.m3u8")
                    break
                except OSError:
                    time.sleep(0.2)
            servers["nginx"] = Server("nginx (Debian, 1 worker, files on disk)", url, nginx.pid,
                                      background={"origin": origin.process.pid}, with_children=True)
        if "launchkit" in servers_wanted:
            if mode == "edge":
                options = launchkit_options("edge")
                edge_args = ["--origin", origin.url]
                if "--workers" in options:
                    edge_args += ["--workers", "1"]
                if "--max-viewers" in options:
                    edge_args += ["--max-viewers", "0"]  # unlimited: capacity, not admission, is measured
                with affinity({SERVER_CORE}):
                    edge = start_launchkit("edge", *edge_args, log_dir=workdir, ready_timeout=60)
                result["commands"].append(f"taskset -c {SERVER_CORE} launchkit edge --host 127.0.0.1 --port 0 "
                                          + " ".join(edge_args))
                servers["launchkit"] = Server("Launchkit edge", edge.url + "/hls/index.m3u8", edge.process.pid,
                                              background={"origin": origin.process.pid}, event_loop=True,
                                              with_children=True, metrics_url=edge.url + "/metrics")
            else:
                servers["launchkit"] = Server("Launchkit origin (serving /hls from memory, encoder in-process)",
                                              origin.url + "/hls/index.m3u8", origin.process.pid, event_loop=True,
                                              metrics_url=origin.url + "/metrics")
        result["launchkit_mode"] = ("`launchkit edge` in front of the origin" if mode == "edge" else
                                    "the origin itself (`launchkit edge` does not exist yet): `/hls/…` from memory, "
                                    "the encoder in the same process")
        measured = [servers[name] for name in servers_wanted if name in servers]
        if args.cpu_budget:
            for name, server in servers.items():
                server.budget_group = cpu_budget_group(name, args.cpu_budget)
                join_group(server.budget_group, server.serving_pids())
        log("measuring idle CPU (no viewers) …")
        measure_idle(measured, 5.0)
        result["ramps"] = ramps(measured, args, deadline, log)
        by_name = {name: r for name, r in zip([n for n in servers_wanted if n in servers], result["ramps"])}
        nginx_ramp, launchkit_ramp = by_name.get("nginx"), by_name.get("launchkit")
        result["verdict"] = verdict(nginx_ramp, launchkit_ramp, args.cpu_budget)

        per_viewer, edge_cache = {}, None
        for ramp_result in result["ramps"]:
            model = memory_model(ramp_result["steps"], source["bytes_per_second"] * 60)
            per_viewer[ramp_result["server"]] = model["per_viewer"]
            if model.get("cache_per_minute") is not None:
                edge_cache = model
        per_segment = slope([(float(n), float(rss)) for n, rss in fill])
        result["memory"] = {
            "per_viewer": per_viewer,
            "cache": {"bytes_per_minute": source["bytes_per_second"] * 60, "fill": fill,
                      "segments_filled": fill[-1][0] + 1, "rss_growth_bytes": fill[-1][1] - fill[0][1],
                      "rss_per_segment": per_segment,
                      "rss_per_minute": per_segment * 60 / SEGMENT_DURATION if per_segment else None},
            "cache_metrics": metrics_with_cache(edge.url) if edge else {},
            "edge_cache": edge_cache,
        }

        want_profile = args.profile == "yes" or (args.profile == "auto" and PY_SPY.exists())
        if want_profile and launchkit_ramp and launchkit_ramp["steps"]:
            target = launchkit_ramp["first_failure"] or launchkit_ramp["steps"][-1]["viewers"]
            time.sleep(args.cooldown)
            result["profile"] = profile_step(servers["launchkit"], target, args, workdir, log)
            if result["profile"] is None:
                result["profile"] = {"viewers": target, "error": f"{PY_SPY} is not installed"}
    except RuntimeError as error:
        print(f"edge benchmark could not run: {error}", file=sys.stderr)
        return 2
    finally:
        stop(nginx)
        stop(mirror)
        if edge is not None:
            stop(edge.process)
        if origin is not None:
            stop(origin.process)
        for server in servers.values():
            if server.budget_group is not None:
                remove_group(server.budget_group)
        result["load_average"]["end"] = load_average()
        shutil.rmtree(workdir / "www", ignore_errors=True)
    result["wall_seconds"] = round(time.monotonic() - started_at, 1)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0 if result["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
